//! Typed errors of the Whisper implementation. Variants that come from a file name it; those
//! about a tensor, a configuration field or an input name that too.

use std::path::PathBuf;

use thiserror::Error;

/// Everything loading audio, loading a checkpoint, running or decoding Whisper can refuse.
#[derive(Debug, Error)]
pub enum WhisperError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A configuration field is missing, of the wrong type or out of range.
    #[error("{}: field `{field}`: {reason}", path.display())]
    ConfigField {
        /// The configuration file.
        path: PathBuf,
        /// The field, e.g. `d_model`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `config.json` describes another architecture.
    #[error(
        "{}: field `model_type` is {found:?}, expected \"whisper\" (this is not a Whisper checkpoint)",
        path.display()
    )]
    WrongModelType {
        /// The configuration file.
        path: PathBuf,
        /// The `model_type` that was found.
        found: String,
    },
    /// An audio file is neither WAV nor FLAC, or uses an encoding the decoders do not support.
    #[error("{}: unsupported audio: {reason}", path.display())]
    UnsupportedAudio {
        /// The audio file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// An audio file is corrupt or truncated.
    #[error("{}: corrupt audio: {reason}", path.display())]
    CorruptAudio {
        /// The audio file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// Audio without samples.
    #[error("{input}: the audio has no samples")]
    EmptyAudio {
        /// The file, or a description of the in-memory input.
        input: String,
    },
    /// Audio longer than one 30 s window where only one window is accepted.
    #[error(
        "{input}: the audio is {seconds:.2} s long, longer than Whisper's {max_seconds} s window; \
         transcribe it with `transcribe` (long-form seeking), split it (`split_windows`) or trim it"
    )]
    AudioTooLong {
        /// The file, or a description of the in-memory input.
        input: String,
        /// Its length in seconds.
        seconds: f64,
        /// The window length in seconds (30).
        max_seconds: u32,
    },
    /// Audio too short for an unpadded spectrogram (reflect padding needs more than `n_fft / 2`
    /// samples).
    #[error("{input}: {samples} samples are too few for an unpadded log-mel (need at least {min})")]
    AudioTooShort {
        /// The input.
        input: String,
        /// Its sample count.
        samples: usize,
        /// The minimum.
        min: usize,
    },
    /// The checkpoint layer refused the weights (missing, unexpected or misshapen tensors, a
    /// corrupt file, ...).
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// The tokenizer could not be loaded, lacks a special token, or failed.
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A decoder sequence is longer than `max_target_positions`.
    #[error("{len} decoder positions exceed the model's max_target_positions = {max}")]
    ContextOverflow {
        /// Positions needed (cache + new tokens).
        len: usize,
        /// `max_target_positions`.
        max: usize,
    },
    /// A token id is not below `vocab_size`.
    #[error("sample {sample}: token id {id} is out of range for vocab_size {vocab}")]
    TokenOutOfRange {
        /// The sample in the batch.
        sample: usize,
        /// The token id.
        id: i64,
        /// `vocab_size`.
        vocab: usize,
    },
    /// Inconsistent inputs (shapes, batch sizes, empty prompts, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Long-form transcription needs timestamp tokens, and the model's vocabulary ends before
    /// the first one.
    #[error(
        "the model has no timestamp tokens (<|0.00|> would be id {timestamp_begin}, vocab_size \
         is {vocab_size}): audio longer than 30 s needs them for seeking; transcribe it with \
         `LongForm::Split` instead"
    )]
    NoTimestampTokens {
        /// The id `<|0.00|>` would have.
        timestamp_begin: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A LoRA rank or configuration error from the core library.
    #[error(transparent)]
    Flexi(#[from] flexi_burn::FlexiError),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, WhisperError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WhisperError {
    let path = path.into();
    move |source| WhisperError::Io { path, source }
}
