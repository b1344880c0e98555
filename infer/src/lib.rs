//! # infer
//!
//! Inference for flexi-burn models, on any plain (non-autodiff) Burn backend:
//!
//! - [`text`]: from task examples to prompts and back ([`LmText`]).
//! - [`router`]: the router's input, defined once ([`RouterInput`]), and trained routers
//!   loaded from disk and applied ([`TrainedRouter`]).
//! - [`eval`]: generation with each method's inference ranks ([`RankPolicy`]) and task
//!   scoring ([`evaluate`]); [`speech`]: the same for Whisper transcription.
//! - [`weights`]: module tensors by path to and from safetensors (adapter checkpoints,
//!   routers).
//!
//! Generation itself (batched, KV cache, per-sample ranks) is `models::llama::generate`;
//! loading a whole trained run (model + adapter + rank policy) is `train::run::FlexiRun`.

pub mod error;
pub mod eval;
pub mod progress;
pub mod router;
pub mod speech;
pub mod stats;
pub mod text;
pub mod weights;

pub use error::{InferError, Result};
pub use eval::{
    EvalReport, EvalSettings, Prediction, RankPolicy, check_unique_ids, default_max_new_tokens,
    evaluate,
};
pub use router::{
    AudioFeature, AudioInput, RouterInput, RouterMeta, RouterTraining, TextInput, TrainedRouter,
};
pub use speech::evaluate_speech;
pub use text::LmText;
