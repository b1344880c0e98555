//! # train
//!
//! Training for flexi-burn with Burn's autodiff: every method of the paper (SPEC 2.3).
//!
//! - [`lr`]: warm-up + constant / linear / cosine learning-rate schedules.
//! - [`adalora`]: AdaLoRA's importance scores, cubic budget schedule, pruning and
//!   orthogonality penalty, over any model whose adapted layers are `FlexiLinear`s.

pub mod adalora;
pub mod lr;
