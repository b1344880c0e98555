//! # infer
//!
//! Inference for flexi-burn models: from task examples to prompts and back ([`text`]), and
//! evaluation with each method's inference ranks ([`eval`]). Generation itself (batched, KV
//! cache, per-sample ranks) is `models::llama::generate`.

pub mod error;
pub mod eval;
pub mod text;

pub use error::{InferError, Result};
pub use eval::{EvalReport, EvalSettings, Prediction, RankPolicy, evaluate};
pub use text::LmText;
