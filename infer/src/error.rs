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
    /// Anything else that is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, InferError>;
