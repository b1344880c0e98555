//! GGUF (llama.cpp) checkpoints: the container, dequantisation, the Llama layout and the
//! tokenizer.
//!
//! | file | concern |
//! | --- | --- |
//! | [`reader`] | header, metadata (all value types, arrays), tensor index, alignment |
//! | [`quant`] | ggml types; F32/F16/BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q2_K..Q6_K to f32 |
//! | [`llama`] | llama.cpp -> HF tensor names, the Q/K row permutation, a `config.json` |
//! | [`tokenizer`] | a `tokenizers::Tokenizer` from `tokenizer.ggml.*` |
//! | [`error`] | [`GgufError`] |
//!
//! ```no_run
//! use models::gguf::GgufFile;
//! let file = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! for t in file.tensors() {
//!     println!("{} {} {:?}", t.name, t.ggml_type, t.shape());
//! }
//! let (values, shape) = file.dequantize("token_embd.weight")?;
//! # Ok::<(), models::gguf::GgufError>(())
//! ```

pub mod error;
pub mod llama;
pub mod quant;
pub mod reader;
pub mod tokenizer;

pub use error::{GgufError, Result};
pub use llama::{
    HfTensor, hf_name, hf_tensors, is_gguf, llama_checkpoint, llama_config, llama_config_json,
    load_llama_gguf, load_llama_gguf_in, load_tokenizer_gguf, permute_qk_rows, unpermute_qk_rows,
};
pub use quant::{GgmlType, dequantize};
pub use reader::{GgufFile, MetaValue, TensorInfo};
pub use tokenizer::{tokenizer, tokenizer_json};
