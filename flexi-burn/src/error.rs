//! Typed errors of the core library.

use thiserror::Error;

/// Everything the core library can refuse.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum FlexiError {
    /// A sample asked for more components than the adapter has.
    #[error("sample {sample} asks for LoRA rank {rank}, but the adapter has r_max = {r_max}")]
    RankTooLarge {
        /// Index of the offending sample in the batch.
        sample: usize,
        /// The requested rank.
        rank: usize,
        /// The adapter's largest rank.
        r_max: usize,
    },
    /// The rank vector does not have one entry per sample.
    #[error("got {ranks} per-sample ranks for a batch of {batch} samples")]
    BatchMismatch {
        /// Length of the rank vector.
        ranks: usize,
        /// Batch size of the input (its first dimension).
        batch: usize,
    },
    /// A batch with no sample in it.
    #[error("empty batch: the input's first dimension is 0")]
    EmptyBatch,
    /// The input's last dimension is not the layer's input width.
    #[error("input has last dimension {got}, but the layer expects d_in = {expected}")]
    InputDim {
        /// The layer's `d_in`.
        expected: usize,
        /// The input's last dimension.
        got: usize,
    },
    /// DyLoRA's frozen mode trains one component per step, so all samples share the rank.
    #[error(
        "the frozen-prefix mode (DyLoRA frozen) needs one rank for the whole batch, got {ranks:?}"
    )]
    FrozenPrefixNeedsUniformRank {
        /// The per-sample ranks that were given.
        ranks: Vec<usize>,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {field} = {value}: {expected}")]
    InvalidConfig {
        /// The configuration field.
        field: &'static str,
        /// The value it had.
        value: String,
        /// What is expected instead.
        expected: &'static str,
    },
    /// A class -> rank map could not be parsed.
    #[error(
        "cannot parse class->rank map {input:?}: {reason} (expected e.g. \"(2,8)\" or \"2,8\")"
    )]
    RankMap {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A router class index that the class -> rank map does not cover.
    #[error(
        "the router's output for sample {sample} is not a number ({value}): its input features are NaN or infinite, or its weights are"
    )]
    NonFiniteRouterOutput {
        /// The sample.
        sample: usize,
        /// The first non-finite logit.
        value: f32,
    },
    #[error("router predicted class {class}, but the class->rank map has only {classes} classes")]
    UnknownClass {
        /// The predicted class.
        class: usize,
        /// Number of classes in the map.
        classes: usize,
    },
    /// A backend name that is unknown or not compiled into this binary.
    #[error("{0}")]
    Backend(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, FlexiError>;
