//! LibriSpeech directory trees: `split/speaker/chapter/{spk}-{ch}.trans.txt` with lines
//! `UTTID TEXT`, next to `{UTTID}.flac` (or `.wav`).

use std::collections::{HashSet, VecDeque};
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
    /// Utterance ids of the current transcript file.
    seen: HashSet<String>,
}

/// An audio file next to `trans` that belongs to its chapter (`SPK-CH-*.{flac,wav}`) but has
/// no line in it: the transcript does not match the audio files.
fn untranscribed_audio(trans: &Path, seen: &HashSet<String>) -> Result<Option<PathBuf>> {
    let Some(dir) = trans.parent() else {
        return Ok(None);
    };
    let chapter = trans
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".trans.txt"))
        .unwrap_or_default();
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut stray: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let of_chapter = stem
            .strip_prefix(chapter)
            .is_some_and(|rest| rest.starts_with('-'));
        if of_chapter && AUDIO_EXTENSIONS.contains(&ext) && !seen.contains(stem) {
            stray.push(path);
        }
    }
    stray.sort();
    Ok(stray.into_iter().next())
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
            seen: HashSet::new(),
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
                Ok(0) => {
                    let trans = trans.clone();
                    self.current = None;
                    let seen = std::mem::take(&mut self.seen);
                    match untranscribed_audio(&trans, &seen) {
                        Ok(None) => {}
                        Ok(Some(audio)) => {
                            return Some(Err(DataError::UntranscribedAudio { path: trans, audio }));
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                Ok(_) => {
                    *line_no += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let ex = Self::parse_line(trans, source, *line_no, &line);
                    if let Ok(ex) = &ex {
                        self.seen.insert(ex.id.clone());
                    }
                    return Some(ex);
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
