//! Llama 3.x (and SmolLM2, same architecture) with Flexi-LoRA on a configurable set of
//! projections.
//!
//! | file | concern |
//! | --- | --- |
//! | [`config`] | `config.json` -> [`LlamaConfig`], presets |
//! | [`rope`] | rotate-half RoPE with Llama 3 frequency scaling |
//! | [`linear`] | the adapter's target set ([`AdapterConfig`]); projections are [`crate::proj::Proj`] |
//! | [`attention`] | GQA attention, causal + padding mask, KV cache |
//! | [`mlp`] | SwiGLU |
//! | [`model`] | RMSNorm, decoder blocks, LM head, loss |
//! | [`load`] | building a Llama from a [`crate::format::Checkpoint`]; PEFT adapters |
//! | [`generate`] | batched KV-cache generation |
//! | [`tokenizer`] | `tokenizer.json`, the model's Jinja chat template (built-in fallbacks) |
//!
//! ```no_run
//! # use burn::backend::Flex;
//! use flexi_burn::SampleRanks;
//! use models::llama::{AdapterConfig, PaddedBatch, Target, load_llama};
//! let adapter = AdapterConfig::new(vec![Target::Q, Target::K, Target::V, Target::O], 8, 16.0);
//! let model = load_llama::<Flex>("Llama-3.2-1B-Instruct", &adapter, &Default::default())?;
//! let batch = PaddedBatch::left_pad(&[vec![128000, 9906], vec![128000]], 0);
//! let logits = model.forward(&batch, &SampleRanks::new(vec![2, 8]))?; // [2, 2, vocab]
//! # Ok::<(), models::llama::LlamaError>(())
//! ```

pub mod attention;
pub mod config;
pub mod error;
pub mod generate;
pub mod linear;
pub mod load;
pub mod mlp;
pub mod model;
pub mod rope;
pub mod tokenizer;

/// The checkpoint layer lives in [`crate::format`]; re-exported here for existing users.
pub use crate::format::Checkpoint;
pub use attention::{Attention, KvCache};
pub use config::{Llama3RopeScaling, LlamaConfig};
pub use error::{LlamaError, Result};
pub use generate::{Generation, GenerationConfig, Sampling, generate};
pub use linear::{AdapterConfig, Proj, Target};
pub use load::{
    PeftAdapter, build_llama, build_llama_in, load_llama, load_llama_in, load_llama_with_peft,
    load_peft_adapter,
};
pub use model::{
    DecoderLayer, LayerContext, Llama, PaddedBatch, RmsNorm, causal_lm_loss,
    causal_lm_loss_from_hidden,
};
pub use rope::RotaryEmbedding;
pub use tokenizer::{ChatTemplate, JinjaChat, Message, Tokenizer};
