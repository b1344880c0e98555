//! Typed errors of training.

use std::path::PathBuf;

use thiserror::Error;

/// What can stop a training run.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A configuration key is unknown or its value is out of range.
    #[error("config {key}: {message}")]
    Config {
        /// The key (or file) concerned.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is missing, corrupt or from another run.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`) that cannot be
    /// imported: names the file and the key (config field or tensor name).
    #[error("adapter {}: {key}: {message}", path.display())]
    Adapter {
        /// The file.
        path: PathBuf,
        /// The config field or tensor name.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "non-finite loss {loss} at step {step}, micro-batch {micro_batch} (examples {examples:?}); \
         the last good checkpoint is kept"
    )]
    NonFiniteLoss {
        /// Optimizer step (0-based).
        step: usize,
        /// Micro-batch within the step.
        micro_batch: usize,
        /// The loss value.
        loss: f64,
        /// Example ids of the batch.
        examples: Vec<String>,
    },
    /// Another run holds the directory ([`crate::lock::RunLock`]).
    #[error(
        "{} is in use by another run ({holder}); wait for it to finish or choose another output \
         directory",
        dir.display()
    )]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it (`pid 1234, started 2026-12-03T18:40:00Z`).
        holder: String,
    },
    /// Data-parallel training: a collective operation failed or the other peers did not
    /// arrive in time (a peer died or cannot be reached).
    #[error("data-parallel peer {peer}: {message}")]
    Peer {
        /// This peer's rank.
        peer: usize,
        /// What failed.
        message: String,
    },
    /// No training data.
    #[error("empty training set: {0}")]
    EmptyData(String),
    /// An error from the core library.
    #[error(transparent)]
    Flexi(#[from] flexi_burn::FlexiError),
    /// Inference-side failures (weights files, routers, evaluation).
    #[error(transparent)]
    Infer(#[from] infer::InferError),
    /// An error from the model.
    #[error("model: {0}")]
    Model(String),
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, TrainError>;
