//! The [`Format`] enum: which reader parses a file.

use std::fmt;
use std::str::FromStr;

use crate::{DataError, Task};

/// A supported file format. Picked from the file (see [`crate::readers::detect_format`]) or
/// named by the user (`"gsm8k".parse::<Format>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// MRQA shared task `.jsonl(.gz)`: optional `{"header": ...}` line, then
    /// `{context, qas: [{qid, question, answers, detected_answers}]}` per line.
    Mrqa,
    /// GSM8K `{question, answer}` with the answer ending `#### N`.
    Gsm8k,
    /// MetaMathQA `{query, response, type}` with the response ending `The answer is: X`.
    MetaMathQa,
    /// SVAMP `{ID, Body, Question, Equation, Answer}`.
    Svamp,
    /// MultiArith `{iIndex, sQuestion, lSolutions}`.
    MultiArith,
    /// Instruction style `{instruction, input, output, answer}` (GSM8K / SVAMP / MultiArith /
    /// MAWPS test files, math training data).
    Instruction,
    /// MAWPS original-text JSON `{id, original_text, equation, ans}`.
    MawpsJson,
    /// MAWPS cross-validation CSV `Question,Numbers,Equation,Answer,...` with `numberK`
    /// placeholders in the question.
    MawpsCsv,
    /// LibriSpeech directory tree `split/speaker/chapter/{spk}-{ch}-{utt}.flac|.wav` with
    /// `{spk}-{ch}.trans.txt`.
    LibriSpeech,
    /// flexi-burn's own JSONL: one [`crate::Example`] per line (`{id, task, source, question,
    /// context, target, answers, audio}`), lossless; written by [`crate::subset::write_examples`]
    /// (e.g. a study's fixed subsets).
    Examples,
}

impl Format {
    /// Every format, in the order of [`Format::NAMES`].
    pub const ALL: [Format; 10] = [
        Format::Mrqa,
        Format::Gsm8k,
        Format::MetaMathQa,
        Format::Svamp,
        Format::MultiArith,
        Format::Instruction,
        Format::MawpsJson,
        Format::MawpsCsv,
        Format::LibriSpeech,
        Format::Examples,
    ];

    /// The names accepted by [`FromStr`] (and printed by [`fmt::Display`]).
    pub const NAMES: [&'static str; 10] = [
        "mrqa",
        "gsm8k",
        "metamathqa",
        "svamp",
        "multiarith",
        "instruction",
        "mawps-json",
        "mawps-csv",
        "librispeech",
        "examples",
    ];

    /// The canonical name of the format.
    pub fn name(self) -> &'static str {
        let i = Format::ALL.iter().position(|f| *f == self).unwrap_or(0);
        Format::NAMES[i]
    }

    /// The task the format's examples belong to (an `examples` file's carry their own; this
    /// says math for it).
    pub fn task(self) -> Task {
        match self {
            Format::Mrqa => Task::Qa,
            Format::LibriSpeech => Task::Speech,
            _ => Task::Math,
        }
    }

    /// Default data set name for examples of this format, when the file does not say.
    /// `None` for formats shared by several data sets (MRQA, instruction style, LibriSpeech),
    /// whose name comes from the file's header, its directory or its name.
    pub fn default_source(self) -> Option<&'static str> {
        match self {
            Format::Gsm8k => Some("gsm8k"),
            Format::MetaMathQa => Some("metamathqa"),
            Format::Svamp => Some("svamp"),
            Format::MultiArith => Some("multiarith"),
            Format::MawpsJson | Format::MawpsCsv => Some("mawps"),
            Format::Mrqa | Format::Instruction | Format::LibriSpeech | Format::Examples => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = DataError;

    /// Parses a format name, case-insensitively; `_` and `-` are interchangeable, and a few
    /// aliases are accepted (`metamath`, `mawps-cv`, `libri`, `instruct`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let alias = match norm.as_str() {
            "metamath" | "meta-math-qa" => "metamathqa",
            "mawps-cv" => "mawps-csv",
            "libri" | "libri-speech" => "librispeech",
            "instruct" => "instruction",
            other => other,
        };
        Format::NAMES
            .iter()
            .position(|n| *n == alias)
            .map(|i| Format::ALL[i])
            .ok_or_else(|| DataError::UnknownFormatName(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().ok(), Some(f));
        }
        assert_eq!("MAWPS_CV".parse::<Format>().ok(), Some(Format::MawpsCsv));
        assert!("nope".parse::<Format>().is_err());
    }
}
