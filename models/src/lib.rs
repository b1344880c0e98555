//! # models
//!
//! Native Burn implementations of the models flexi-burn fine-tunes, with Flexi-LoRA
//! ([`flexi_burn::FlexiLinear`]) on their projections and a per-sample rank argument on every
//! forward pass.
//!
//! - [`llama`]: Llama 3.x / SmolLM2 from Hugging Face directories (config, safetensors in
//!   f32/f16/bf16, sharded or not, PEFT adapters), tokenizer and chat templates, batched
//!   KV-cache generation.
//! - [`whisper`]: Whisper from Hugging Face directories, WAV/FLAC input, log-mel, greedy
//!   KV-cache transcription.
//! - [`gguf`]: GGUF (llama.cpp) files: metadata, tensor index, dequantisation, the Llama
//!   name mapping and Q/K permutation, tokenizer from metadata.
//! - [`ct2`]: CTranslate2 Whisper directories (`model.bin` reader, fused QKV split).
//! - [`format`]: the checkpoint layer all of them share ([`format::Checkpoint`]: named tensors
//!   from safetensors or memory, checked by name and shape; [`format::FormatError`]).
//! - [`proj`]: a plain or adapted projection, the building block of both models.
//! - [`head`]: the LM head of a one-row decoding step on two threads on the CPU (Whisper).
//! - [`host_act`]: GELU and SwiGLU's `silu(gate) * up` in place, vectorised (CPU inference).
//! - `host_train` (feature `flex`): SwiGLU's product as one autodiff operation with its own
//!   backward on burn-flex (CPU training).
//! - `host_loss` (feature `flex`): the LM head and its cross-entropy as one autodiff operation
//!   over chunks of rows, no `[rows, vocab]` tensor kept (CPU training).
//! - [`host_softmax`]: the attention's softmax in place with a vectorised `exp` (CPU inference).
//! - [`sdpa`]: attention over blocks of query rows (causal blocks skip hidden keys; on the
//!   CPU the blocks of one sequence run on two threads).
//! - [`auto`]: one entry point per model kind for every file format (`load_llama_any`,
//!   `is_whisper`).

pub mod auto;
pub mod ct2;
pub mod format;
pub mod gguf;
pub mod head;
pub mod host_act;
#[cfg(feature = "flex")]
pub mod host_loss;
pub mod host_softmax;
#[cfg(feature = "flex")]
pub mod host_train;
pub mod llama;
pub mod proj;
pub mod sdpa;
pub mod whisper;
