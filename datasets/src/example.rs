//! The one example type every reader returns.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// The three task families of the project (SPEC 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Extractive question answering (MRQA), scored with F1 / EM.
    Qa,
    /// Math word problems, scored by the final number.
    Math,
    /// Speech recognition, scored with WER / CER.
    Speech,
}

impl Task {
    /// Lower-case name (`qa`, `math`, `speech`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Qa => "qa",
            Task::Math => "math",
            Task::Speech => "speech",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "qa" => Ok(Task::Qa),
            "math" => Ok(Task::Math),
            "speech" | "asr" => Ok(Task::Speech),
            _ => Err(DataError::InvalidArgument(format!(
                "unknown task `{s}` (known: qa, math, speech)"
            ))),
        }
    }
}

/// One sample, whatever file it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Identifier, unique within its source (MRQA `qid`, SVAMP `ID`, LibriSpeech utterance id,
    /// or `<source>-<index>` when the file has none).
    pub id: String,
    /// Task family.
    pub task: Task,
    /// Name of the data set the example belongs to (used to aggregate metrics per set).
    pub source: String,
    /// The question / problem text (empty for speech).
    pub question: String,
    /// Supporting passage (MRQA context); `None` elsewhere.
    pub context: Option<String>,
    /// The text the model is trained to produce (worked solution, answer or transcript).
    pub target: String,
    /// Gold answers used for scoring (all MRQA answers are kept; one for math and speech).
    pub answers: Vec<String>,
    /// Audio file for speech examples.
    pub audio: Option<PathBuf>,
}
