//! Typed errors of the Llama implementation. Every variant that comes from a file names it,
//! and every variant about a tensor or a configuration field names that too.

use std::path::PathBuf;

use thiserror::Error;

/// Everything loading, running or generating with a Llama model can refuse.
#[derive(Debug, Error)]
pub enum LlamaError {
    /// A file could not be read (missing `config.json`, missing shard, ...).
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
        /// The configuration file (or `<preset>` for a built-in one).
        path: PathBuf,
        /// The field, e.g. `num_key_value_heads` or `rope_scaling.factor`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `rope_scaling` names a scaling this implementation does not know.
    #[error(
        "{}: field `rope_scaling.rope_type`: unknown RoPE scaling type {kind:?} (supported: \"llama3\", \"default\" or null)",
        path.display()
    )]
    UnknownRopeScaling {
        /// The configuration file.
        path: PathBuf,
        /// The type that was given.
        kind: String,
    },
    /// The checkpoint layer refused the weights (missing, unexpected or misshapen tensors, a
    /// corrupt file, ...).
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// An adapter does not fit the model.
    #[error("{}: {reason}", path.display())]
    Adapter {
        /// The adapter file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// The tokenizer library's message.
        reason: String,
    },
    /// A sequence does not fit the model's context (`max_position_embeddings`).
    #[error(
        "sample {sample}: {len} tokens exceed the model's context of {max} positions (max_position_embeddings)"
    )]
    ContextOverflow {
        /// The sample in the batch.
        sample: usize,
        /// Its length in tokens (prompt, plus the KV cache when generating).
        len: usize,
        /// `max_position_embeddings`.
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
    /// A chat template that cannot be read or rendered.
    #[error("{}: chat template: {message}", origin.display())]
    ChatTemplate {
        /// The file it came from.
        origin: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A KV cache filled at some per-sample ranks reused at other ranks.
    #[error(
        "the KV cache was filled at ranks {cached:?} and is reused at ranks {given:?}: \
         a cache is only valid at the ranks it was filled with (start a new cache)"
    )]
    CacheRanks {
        /// The ranks the cache holds.
        cached: Vec<usize>,
        /// The ranks of this forward pass.
        given: Vec<usize>,
    },
    /// Inconsistent inputs to a forward pass or a generation (shapes, empty prompts, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A LoRA rank error from the core library.
    #[error(transparent)]
    Flexi(#[from] flexi_burn::FlexiError),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, LlamaError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LlamaError {
    let path = path.into();
    move |source| LlamaError::Io { path, source }
}
