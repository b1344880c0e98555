//! Typed errors of inference.

use thiserror::Error;

/// What can go wrong while generating or evaluating.
#[derive(Debug, Error)]
pub enum InferError {
    /// The model failed (bad input, context overflow, ...).
    #[error(transparent)]
    Model(#[from] models::llama::LlamaError),
    /// A model path could not be loaded.
    #[error(transparent)]
    Load(#[from] models::auto::LoadError),
    /// Data preparation failed.
    #[error(transparent)]
    Data(#[from] datasets::DataError),
    /// Ranks that do not fit.
    #[error(transparent)]
    Flexi(#[from] flexi_burn::FlexiError),
    /// A Whisper model failed.
    #[error(transparent)]
    Whisper(#[from] models::whisper::WhisperError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A weights file (checkpoint, router) that does not fit.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A router given inputs other than those it was trained on.
    #[error(
        "the router in {} was trained on {field} = {trained}, but is used with {field} = {used}; \
         train a router for this setting (`cargo xtask router`)",
        dir.display()
    )]
    RouterMismatch {
        /// The router's directory.
        dir: std::path::PathBuf,
        /// The field of the router's input definition.
        field: &'static str,
        /// Its value when the router was trained.
        trained: String,
        /// Its value now.
        used: String,
    },
    /// Two examples with one id (predictions, labels and router ranks are keyed by id).
    #[error("{origin}: example id {id:?} occurs more than once (ids must be unique)")]
    DuplicateId {
        /// Where the examples come from.
        origin: String,
        /// The id.
        id: String,
    },
    /// Anything else that is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, InferError>;
