//! LibriSpeech directory trees: `split/speaker/chapter/{spk}-{ch}.trans.txt` with lines
//! `UTTID TEXT`, next to `{UTTID}.flac` (or `.wav`).

use std::collections::VecDeque;
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::source::open_text;
use crate::{DataError, Example, Result, Task};

/// Audio extensions tried, in order.
pub const AUDIO_EXTENSIONS: [&str; 2] = ["flac", "wav"];

/// Every `*.trans.txt` below `root`, sorted by path.
pub(crate) fn transcript_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let io = |source| DataError::Io {
            path: dir.clone(),
            source,
        };
        for entry in fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".trans.txt"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The split name of a transcript file: the directory above speaker/chapter.
fn split_name(trans: &Path) -> String {
    trans
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "librispeech".to_string())
}

/// Streams the utterances of a LibriSpeech tree, one transcript file at a time.
pub(crate) struct LibriSpeechReader {
    files: VecDeque<PathBuf>,
    current: Option<(PathBuf, String, Box<dyn BufRead>, usize)>,
    source: Option<String>,
}

impl LibriSpeechReader {
    /// Lists the transcripts below `root`; errors if there are none.
    pub(crate) fn new(root: &Path, source: Option<String>) -> Result<Self> {
        let files = transcript_files(root)?;
        if files.is_empty() {
            return Err(DataError::Empty {
                path: root.to_path_buf(),
            });
        }
        Ok(Self {
            files: files.into(),
            current: None,
            source,
        })
    }

    fn parse_line(trans: &Path, source: &str, line_no: usize, line: &str) -> Result<Example> {
        let line = line.trim();
        let Some((utt, text)) = line.split_once(char::is_whitespace) else {
            return Err(DataError::Malformed {
                path: trans.to_path_buf(),
                line: line_no,
                message: "expected `UTTERANCE-ID TEXT`".into(),
            });
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(DataError::BadField {
                path: trans.to_path_buf(),
                line: line_no,
                field: "transcript".into(),
                message: format!("utterance {utt} has an empty transcript"),
            });
        }
        let dir = trans.parent().unwrap_or(Path::new("."));
        let candidates: Vec<PathBuf> = AUDIO_EXTENSIONS
            .iter()
            .map(|ext| dir.join(format!("{utt}.{ext}")))
            .collect();
        let Some(audio) = candidates.iter().find(|p| p.is_file()).cloned() else {
            return Err(DataError::MissingAudio {
                path: trans.to_path_buf(),
                line: line_no,
                utterance: utt.to_string(),
                expected: candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        };
        Ok(Example {
            id: utt.to_string(),
            task: Task::Speech,
            source: source.to_string(),
            question: String::new(),
            context: None,
            target: text.to_string(),
            answers: vec![text.to_string()],
            audio: Some(audio),
        })
    }
}

impl Iterator for LibriSpeechReader {
    type Item = Result<Example>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let trans = self.files.pop_front()?;
                let source = self.source.clone().unwrap_or_else(|| split_name(&trans));
                match open_text(&trans) {
                    Ok(reader) => self.current = Some((trans, source, reader, 0)),
                    Err(e) => return Some(Err(e)),
                }
            }
            let (trans, source, reader, line_no) = self.current.as_mut()?;
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => self.current = None,
                Ok(_) => {
                    *line_no += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    return Some(Self::parse_line(trans, source, *line_no, &line));
                }
                Err(source) => {
                    let path = trans.clone();
                    self.current = None;
                    return Some(Err(DataError::Io { path, source }));
                }
            }
        }
    }
}
