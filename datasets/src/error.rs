//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading, encoding or scoring data.
///
/// Errors about one record ([`DataError::is_record_error`]) carry the file and the
/// 1-based line number where the record starts; with `skip_bad` they are counted and
/// skipped instead of stopping the read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or directory could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file holds no records at all.
    #[error("{path}: the file holds no records (it is empty or holds only a header)")]
    Empty {
        /// The empty file.
        path: PathBuf,
    },
    /// Every record of the file was malformed and skipped.
    #[error("{path}: all {skipped} records were malformed and skipped; first error: {first}")]
    AllSkipped {
        /// The file.
        path: PathBuf,
        /// Number of skipped records.
        skipped: usize,
        /// The first record error, rendered.
        first: String,
    },
    /// A record is not valid JSON / CSV, or has the wrong shape.
    #[error("{path}:{line}: malformed record: {message}")]
    Malformed {
        /// File holding the record.
        path: PathBuf,
        /// 1-based line where the record starts.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The whole file's structure is broken (e.g. an unterminated JSON array); cannot be skipped.
    #[error("{path}:{line}: malformed file: {message}")]
    MalformedFile {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A record lacks a required field (for example the answer).
    #[error("{path}:{line}: missing field `{field}`")]
    MissingField {
        /// File holding the record.
        path: PathBuf,
        /// 1-based line where the record starts.
        line: usize,
        /// The field's name.
        field: String,
    },
    /// A field has an unusable value (wrong type, empty answer, no `#### N` marker, ...).
    #[error("{path}:{line}: field `{field}`: {message}")]
    BadField {
        /// File holding the record.
        path: PathBuf,
        /// 1-based line where the record starts.
        line: usize,
        /// The field's name.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A transcript names an utterance whose audio file does not exist.
    #[error(
        "{path}:{line}: audio file for utterance {utterance} does not exist (looked for {expected})"
    )]
    MissingAudio {
        /// The `.trans.txt` file.
        path: PathBuf,
        /// 1-based line of the transcript.
        line: usize,
        /// Utterance id.
        utterance: String,
        /// The paths that were tried.
        expected: String,
    },
    /// An audio file of a chapter that its transcript does not list.
    #[error(
        "{}: audio file of this chapter has no line in {} (the transcript does not match the audio files)",
        audio.display(),
        path.display()
    )]
    UntranscribedAudio {
        /// The `.trans.txt` file.
        path: PathBuf,
        /// The audio file without a line.
        audio: PathBuf,
    },
    /// The format of a file could not be recognised.
    #[error("{path}: cannot detect the data format: {reason} (name it with --format; known: {known})", known = crate::Format::NAMES.join(", "))]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Why detection failed.
        reason: String,
    },
    /// A format name given by the user is not known.
    #[error("unknown data format `{0}` (known: {known})", known = crate::Format::NAMES.join(", "))]
    UnknownFormatName(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The answer alone does not fit into the maximum sequence length.
    #[error(
        "example {id}: the answer needs {answer_tokens} tokens (+{special} special) but max_len is {max_len}"
    )]
    AnswerTooLong {
        /// Example id.
        id: String,
        /// Tokens of the answer.
        answer_tokens: usize,
        /// BOS/EOS tokens that must be kept as well.
        special: usize,
        /// The limit.
        max_len: usize,
    },
    /// Encoding stopped because some answers did not fit.
    #[error(
        "{count} of {total} examples have answers longer than max_len {max_len} (first: {first_id}); raise max_len or drop them explicitly"
    )]
    AnswersTooLong {
        /// How many examples.
        count: usize,
        /// How many examples in total.
        total: usize,
        /// The limit.
        max_len: usize,
        /// First offending example id.
        first_id: String,
    },
    /// A bad argument or configuration value.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An external tool (espeak-ng, sox) is missing or failed.
    #[error("{tool}: {message}")]
    Tool {
        /// Tool name.
        tool: String,
        /// What happened.
        message: String,
    },
    /// Reading or writing a WAV file failed.
    #[error("{path}: WAV: {message}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

impl DataError {
    /// Whether the error concerns one record only (and may therefore be skipped with
    /// `skip_bad`), as opposed to the whole file.
    pub fn is_record_error(&self) -> bool {
        matches!(
            self,
            DataError::Malformed { .. }
                | DataError::MissingField { .. }
                | DataError::BadField { .. }
                | DataError::MissingAudio { .. }
        )
    }

    /// The 1-based line number the error points at, when it has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            DataError::Malformed { line, .. }
            | DataError::MalformedFile { line, .. }
            | DataError::MissingField { line, .. }
            | DataError::BadField { line, .. }
            | DataError::MissingAudio { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Short alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
