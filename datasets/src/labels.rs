//! Difficulty labels for the router (SPEC 2.2): per-sample scores of a reference model are
//! thresholded into easy / hard, and a class-balanced, shuffled training split is drawn.
//! Labels are stored as JSONL lines `{"id": ..., "score": ..., "label": "easy"|"hard"}`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::batch::shuffle;
use crate::{DataError, Result, Task};

/// Difficulty class; `class()` is the router's class index (easy 0, hard 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    /// Solved well by the reference model.
    Easy,
    /// Not solved well.
    Hard,
}

impl Difficulty {
    /// Class index (easy 0, hard 1).
    pub fn class(self) -> usize {
        match self {
            Difficulty::Easy => 0,
            Difficulty::Hard => 1,
        }
    }
}

/// How a score becomes a label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelRule {
    /// Easy when `score >= t` (QA F1, math accuracy).
    AtLeast(f64),
    /// Easy when `score <= t` (speech WER).
    AtMost(f64),
}

impl LabelRule {
    /// Default QA threshold: F1 >= 0.5 is easy (SPEC 2.2's example).
    pub const QA_F1: f64 = 0.5;
    /// The rule of a task for the reference model's `scores`: QA F1 >= t (default 0.5); math
    /// correct (accuracy 1) is easy; speech WER <= t, by default **the median WER of
    /// `scores`** (ours): an utterance is easy when the base model transcribes it at least as
    /// well as half of the set. A fixed WER threshold leaves one class nearly empty on one
    /// kind of data or another (Whisper tiny.en gets most LibriSpeech utterances exactly right
    /// and most espeak-ng utterances partly wrong: on 64 synthetic utterances WER <= 0.1 was
    /// easy for 9, so the balanced router set had 18 inputs), while the median always gives
    /// both classes about half of the inputs; where more than half are perfect the median is
    /// 0 and the rule is "WER == 0 is easy".
    pub fn for_task(task: Task, threshold: Option<f64>, scores: &[f64]) -> Self {
        match task {
            Task::Qa => LabelRule::AtLeast(threshold.unwrap_or(Self::QA_F1)),
            Task::Math => LabelRule::AtLeast(threshold.unwrap_or(1.0)),
            Task::Speech => LabelRule::AtMost(threshold.unwrap_or_else(|| median(scores))),
        }
    }

    /// The threshold.
    pub fn threshold(&self) -> f64 {
        match *self {
            LabelRule::AtLeast(t) | LabelRule::AtMost(t) => t,
        }
    }

    /// The label of a score.
    pub fn label(&self, score: f64) -> Difficulty {
        let easy = match *self {
            LabelRule::AtLeast(t) => score >= t,
            LabelRule::AtMost(t) => score <= t,
        };
        if easy {
            Difficulty::Easy
        } else {
            Difficulty::Hard
        }
    }
}

/// The median of the finite `scores` (the lower middle value of an even count; 0 when none).
pub fn median(scores: &[f64]) -> f64 {
    let mut v: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// One labelled sample (a JSONL line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabeledSample {
    /// Example id.
    pub id: String,
    /// The reference model's score.
    pub score: f64,
    /// Its class.
    pub label: Difficulty,
}

/// Labels `(id, score)` pairs. Errors on a non-finite score or a repeated id.
pub fn label_scores<I, S>(scores: I, rule: LabelRule) -> Result<Vec<LabeledSample>>
where
    I: IntoIterator<Item = (S, f64)>,
    S: Into<String>,
{
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (id, score) in scores {
        let id = id.into();
        if !score.is_finite() {
            return Err(DataError::InvalidArgument(format!(
                "sample {id}: score {score} is not finite"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(DataError::InvalidArgument(format!(
                "sample {id} is scored twice"
            )));
        }
        out.push(LabeledSample {
            id,
            score,
            label: rule.label(score),
        });
    }
    Ok(out)
}

/// Counts per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LabelCounts {
    /// Easy samples.
    pub easy: usize,
    /// Hard samples.
    pub hard: usize,
}

/// Counts easy and hard samples.
pub fn count(samples: &[LabeledSample]) -> LabelCounts {
    samples.iter().fold(LabelCounts::default(), |mut c, s| {
        match s.label {
            Difficulty::Easy => c.easy += 1,
            Difficulty::Hard => c.hard += 1,
        }
        c
    })
}

/// A class-balanced split: the larger class is down-sampled (seeded) to the size of the
/// smaller, and the result is shuffled (seeded). Errors when a class is empty.
pub fn balanced_split(samples: &[LabeledSample], seed: u64) -> Result<Vec<LabeledSample>> {
    let mut easy: Vec<LabeledSample> = samples
        .iter()
        .filter(|s| s.label == Difficulty::Easy)
        .cloned()
        .collect();
    let mut hard: Vec<LabeledSample> = samples
        .iter()
        .filter(|s| s.label == Difficulty::Hard)
        .cloned()
        .collect();
    let k = easy.len().min(hard.len());
    if k == 0 {
        return Err(DataError::InvalidArgument(format!(
            "cannot balance: {} easy and {} hard samples (adjust the threshold)",
            easy.len(),
            hard.len()
        )));
    }
    shuffle(&mut easy, seed);
    shuffle(&mut hard, seed.wrapping_add(1));
    easy.truncate(k);
    hard.truncate(k);
    let mut out = easy;
    out.extend(hard);
    shuffle(&mut out, seed.wrapping_add(2));
    Ok(out)
}

/// Writes labelled samples as JSONL, one object per line. The file is replaced whole or not
/// at all: the lines go to `path` + `.tmp`, which is synced and renamed over `path`, so a
/// full disk (or a killed process) leaves the previous file as it was; the error names `path`.
pub fn write_jsonl(path: impl AsRef<Path>, samples: &[LabeledSample]) -> Result<()> {
    let path = path.as_ref();
    let werr = |source| DataError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    fn write_all(tmp: &Path, path: &Path, samples: &[LabeledSample]) -> std::io::Result<()> {
        let mut w = BufWriter::new(File::create(tmp)?);
        for s in samples {
            let line = serde_json::to_string(s).map_err(std::io::Error::other)?;
            writeln!(w, "{line}")?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    }
    let written = write_all(&tmp, path, samples);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(werr)
}

/// Reads labelled samples from JSONL (errors name the line).
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<LabeledSample>> {
    read_lines(path.as_ref(), |line| {
        serde_json::from_str::<LabeledSample>(line)
    })
}

/// Reads per-sample scores `{id, score}` from JSONL (other fields are ignored), e.g. the
/// output of an evaluation run, as `(id, score)` pairs.
pub fn read_scores_jsonl(path: impl AsRef<Path>) -> Result<Vec<(String, f64)>> {
    #[derive(Deserialize)]
    struct Row {
        id: serde_json::Value,
        score: f64,
    }
    read_lines(path.as_ref(), |line| {
        serde_json::from_str::<Row>(line).map(|r| {
            let id = match r.id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (id, r.score)
        })
    })
}

fn read_lines<T>(path: &Path, parse: impl Fn(&str) -> serde_json::Result<T>) -> Result<Vec<T>> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse(&line).map_err(|e| DataError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?);
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}
