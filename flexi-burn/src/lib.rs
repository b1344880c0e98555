//! # flexi-burn
//!
//! Flexi-LoRA for [Burn](https://burn.dev): LoRA whose rank is chosen per input by a small
//! router, identically in training and inference.
//!
//! - [`lora`]: [`FlexiLinear`], a frozen base linear plus nested LoRA factors; its forward takes
//!   the batch's per-sample ranks ([`SampleRanks`]), rank 0 meaning "base only".
//! - [`schedule`]: rank schedules of the paper's methods (LoRA-r, DyLoRA, DyLoRA+, routed),
//!   seeded.
//! - [`router`]: the difficulty router and the class -> rank map.
//! - [`params`]: trainable and average activated LoRA parameter counts.
//! - [`precision`]: mixed precision (frozen weights in bf16/f16, training in f32) and f16
//!   loss scaling.
//! - [`host`]: when our own host kernels may run (burn-flex without autodiff), and (feature
//!   `flex`) linear layers of a few rows (a decoding step) in registers, without gemm's
//!   packing.
//! - [`adapters`]: typed access to a model's adapted layers ([`Adapters`]).
//! - `backend` (feature `runtime`, on by default, off for the workspace's libraries): the
//!   `--backend` name -> Burn backend type map and device probing, for command-line programs.
//!
//! Every module is generic over `B: Backend` and runs unchanged on a plain backend and on
//! `Autodiff<B>`.

pub mod adapters;
#[cfg(feature = "runtime")]
pub mod backend;
pub mod error;
pub mod host;
pub mod lora;
pub mod params;
pub mod precision;
pub mod router;
pub mod schedule;

pub use adapters::Adapters;
#[cfg(feature = "runtime")]
pub use backend::{BackendJob, BackendKind};
pub use error::{FlexiError, Result};
pub use lora::{
    FlexiLinear, FlexiLinearConfig, LoraSettings, SampleRanks, ScalePolicy, linear_nd, linear_rows,
};
pub use params::{
    AdaptedLinear, LlamaShape, ParamCount, average_activated_params, params_per_rank,
};
pub use precision::{LossScale, Precision, linear_mixed, store_frozen, store_frozen_linear};
pub use router::{ClassRankMap, Router, RouterConfig, masked_mean_pool};
pub use schedule::{Phase, RankSampler, RankSchedule, inference_ranks};
