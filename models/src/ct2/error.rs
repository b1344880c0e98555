//! Errors of the CTranslate2 reader: every message names the file and the variable or field.

use std::path::PathBuf;

/// Result alias of the CTranslate2 reader.
pub type Result<T> = std::result::Result<T, Ct2Error>;

/// What can go wrong reading a CTranslate2 model directory.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A binary format version this reader does not know.
    #[error("{path}: unsupported CTranslate2 binary version {version} (supported: {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        version: u32,
        /// The supported versions.
        supported: String,
    },
    /// A model specification (name or revision) this crate does not map.
    #[error(
        "{path}: unsupported model specification {spec} revision {revision} (supported: {supported})"
    )]
    UnsupportedSpec {
        /// The file.
        path: PathBuf,
        /// The spec name, e.g. `WhisperSpec`.
        spec: String,
        /// The spec revision.
        revision: u32,
        /// What is supported.
        supported: String,
    },
    /// The file ends before a field or a variable's data.
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
    /// A malformed field: bad dtype id, size that does not match the shape, bad UTF-8, ...
    #[error("{path}: {what}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The variable or field.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A variable the mapping needs is absent.
    #[error("{path}: missing variable {name}")]
    MissingVariable {
        /// The file.
        path: PathBuf,
        /// The variable.
        name: String,
    },
    /// Variables the mapping does not know.
    #[error("{path}: unexpected variables {names:?}")]
    UnexpectedVariables {
        /// The file.
        path: PathBuf,
        /// Their names.
        names: Vec<String>,
    },
    /// A model setting the Burn model does not implement (activation, pre-norm, ...).
    #[error("{path}: unsupported setting {name} = {value} ({reason})")]
    UnsupportedSetting {
        /// The file.
        path: PathBuf,
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What is supported.
        reason: String,
    },
    /// Building the Whisper model failed.
    #[error(transparent)]
    Whisper(#[from] crate::whisper::WhisperError),
}
