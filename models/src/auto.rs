//! One entry point for every Llama checkpoint format a user may hold: a Hugging Face
//! directory (`config.json` + safetensors) or a llama.cpp `.gguf` file.

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::gguf::{GgufFile, is_gguf, llama_config, load_tokenizer_gguf};
use crate::llama::{AdapterConfig, Llama, LlamaConfig, Tokenizer};

/// Why a model path could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A HF directory failed.
    #[error(transparent)]
    Llama(#[from] crate::llama::LlamaError),
    /// A GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
}

/// Loads a Llama from a HF directory or a `.gguf` file, with `adapter`.
pub fn load_llama_any<B: Backend>(
    path: &Path,
    adapter: &AdapterConfig,
    device: &B::Device,
) -> Result<Llama<B>, LoadError> {
    load_llama_any_in(path, adapter, flexi_burn::Precision::F32, device)
}

/// [`load_llama_any`] with the frozen matrices stored in `precision`'s type, converted tensor
/// by tensor while loading (mixed precision without an f32 copy of the whole model).
pub fn load_llama_any_in<B: Backend>(
    path: &Path,
    adapter: &AdapterConfig,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<Llama<B>, LoadError> {
    if is_gguf(path) {
        Ok(crate::gguf::load_llama_gguf_in(
            path, adapter, precision, device,
        )?)
    } else {
        Ok(crate::llama::load_llama_in(
            path, adapter, precision, device,
        )?)
    }
}

/// The configuration of a Llama in a HF directory (`config.json`) or a `.gguf` file (its
/// metadata), without loading any weight.
pub fn llama_config_any(path: &Path) -> Result<LlamaConfig, LoadError> {
    if is_gguf(path) {
        Ok(llama_config(&GgufFile::open(path)?)?)
    } else {
        Ok(LlamaConfig::from_dir(path)?)
    }
}

/// The tokenizer of a HF directory (`tokenizer.json`) or a `.gguf` file (its metadata).
pub fn load_tokenizer_any(path: &Path) -> Result<Tokenizer, LoadError> {
    if is_gguf(path) {
        Ok(load_tokenizer_gguf(path)?)
    } else {
        Ok(Tokenizer::from_dir(path)?)
    }
}

/// Whether `path` holds a Whisper model: a CTranslate2 directory (`model.bin`), or a directory
/// whose `config.json` has `"model_type": "whisper"`.
pub fn is_whisper(path: &Path) -> bool {
    if crate::ct2::is_ct2_dir(path) {
        return true;
    }
    std::fs::read_to_string(path.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("model_type")
                .and_then(|m| m.as_str())
                .map(|m| m == "whisper")
        })
        .unwrap_or(false)
}
