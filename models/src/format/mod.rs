//! The model-format layer: named tensors from checkpoint files into Burn modules, shared by
//! Llama, Whisper and the GGUF / CTranslate2 readers.

pub mod checkpoint;
pub mod error;

pub(crate) use checkpoint::Builder;
pub use checkpoint::Checkpoint;
pub use error::FormatError;
