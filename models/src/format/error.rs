//! Typed errors of the checkpoint layer. Every variant names the file, and every variant about
//! a tensor names the tensor.

use std::path::PathBuf;

use thiserror::Error;

/// What reading a checkpoint can refuse.
#[derive(Debug, Error)]
pub enum FormatError {
    /// A file could not be read (a missing shard, ...).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file (a sharded checkpoint's index) is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A field of an index file is missing or of the wrong type.
    #[error("{}: field `{field}`: {reason}", path.display())]
    ConfigField {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `weight_map`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A model directory has neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error(
        "{}: no weights found (expected model.safetensors or model.safetensors.index.json)",
        dir.display()
    )]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// A safetensors file is truncated or corrupt.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor {
        /// The checkpoint (file or index).
        path: PathBuf,
        /// The tensor's name in the checkpoint.
        tensor: String,
    },
    /// The checkpoint holds tensors the model does not use.
    #[error("{}: unexpected tensor(s) {tensors:?}", path.display())]
    UnexpectedTensors {
        /// The checkpoint (file or index).
        path: PathBuf,
        /// Their names (sorted).
        tensors: Vec<String>,
    },
    /// A tensor has a shape other than the configuration implies.
    #[error("{}: tensor `{tensor}` has shape {got:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A tensor has a dtype other than f32, f16 or bf16.
    #[error("{}: tensor `{tensor}` has unsupported dtype {dtype} (expected F32, F16 or BF16)", path.display())]
    UnsupportedDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its dtype.
        dtype: String,
    },
}

/// Result alias of the checkpoint layer.
pub type Result<T> = std::result::Result<T, FormatError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FormatError {
    let path = path.into();
    move |source| FormatError::Io { path, source }
}
