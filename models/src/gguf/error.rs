//! Errors of the GGUF reader: every message names the file and the header field, metadata key
//! or tensor concerned.

use std::path::PathBuf;

/// Result alias of the GGUF reader.
pub type Result<T> = std::result::Result<T, GgufError>;

/// What can go wrong reading a GGUF file or building a model or tokenizer from one.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not start with the `GGUF` magic.
    #[error("{path}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first bytes of the file.
        found: Vec<u8>,
    },
    /// A GGUF version other than 2 or 3.
    #[error("{path}: unsupported GGUF version {version} (this reader supports versions 2 and 3)")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        version: u32,
    },
    /// The file ends before a header field, metadata value or tensor's data.
    #[error(
        "{path}: truncated file: {what} needs bytes {start}..{end} but the file has {len} bytes"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// First byte needed.
        start: u64,
        /// One past the last byte needed.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// A malformed header: unknown metadata value type, bad UTF-8, absurd counts, ...
    #[error("{path}: malformed GGUF header at {what}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The key, tensor or header field.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of a ggml type this reader cannot dequantise.
    #[error(
        "{path}: tensor {tensor}: unsupported tensor type {ggml_type} (supported: {supported})"
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The ggml type's name and id, e.g. `IQ2_XXS (16)`.
        ggml_type: String,
        /// The types this reader supports.
        supported: String,
    },
    /// A metadata key the caller needs is absent.
    #[error("{path}: missing metadata key {key}")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata key has a value of an unexpected type.
    #[error("{path}: metadata key {key}: expected {expected}, found {found}")]
    KeyType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The expected type.
        expected: String,
        /// The type found.
        found: String,
    },
    /// A model architecture this crate does not implement.
    #[error("{path}: unsupported architecture {architecture:?} (supported: {supported})")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// `general.architecture`.
        architecture: String,
        /// The supported architectures.
        supported: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: missing tensor {tensor}")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
    },
    /// A tensor has a different shape than the metadata implies.
    #[error("{path}: tensor {tensor}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The expected (row-major) shape.
        expected: Vec<usize>,
        /// The shape in the file (row-major).
        found: Vec<usize>,
    },
    /// Tensors the mapping does not know.
    #[error("{path}: unexpected tensors {tensors:?}")]
    UnexpectedTensors {
        /// The file.
        path: PathBuf,
        /// Their GGUF names.
        tensors: Vec<String>,
    },
    /// The tokenizer metadata is incomplete or inconsistent.
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint layer refused the converted tensors.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// Building the Llama model failed.
    #[error(transparent)]
    Llama(#[from] crate::llama::LlamaError),
}
