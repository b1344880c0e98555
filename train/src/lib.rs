//! # train
//!
//! Training for flexi-burn with Burn's autodiff: every method of the paper (SPEC 2.3) on any
//! backend.
//!
//! - [`config`]: [`TrainConfig`] and [`Method`], from TOML/JSON plus `key=value` overrides.
//! - [`trainer`]: the loop ([`Trainer::fit`]) over any [`Objective`]: AdamW, warm-up + decay,
//!   global-norm clipping, gradient accumulation, seeded order/ranks/dropout, NaN stop,
//!   checkpoints and exact resume; per-layer recomputation ([`Trainer::recompute_layers`],
//!   [`ActivationCheckpointing`]) for activation memory.
//! - [`lm`]: the causal-LM objective for `models::llama` (loss on answer tokens).
//! - [`asr`]: the seq2seq objective for `models::whisper` (loss on transcript tokens).
//! - [`lr`]: learning-rate schedules.
//! - [`optim`]: the trainer's AdamW ([`optim::FusedAdamW`]: Burn's update, fused into one
//!   in-place pass on the CPU backend).
//! - [`memory`]: the peak memory of a training step predicted from its configuration.
//! - [`parallel`]: data-parallel training over burn-collective ([`DataParallel`]: peers on one
//!   machine or several, gradients all-reduced, peer 0 writes).
//! - [`adalora`]: AdaLoRA's importance scores, cubic budget, pruning and orthogonality penalty.
//! - [`checkpoint`]: atomic checkpoint directories.
//! - [`lock`]: one writer per run directory ([`RunLock`], an OS advisory lock on `DIR/.lock`).
//! - [`params`]: stable parameter ids, trainable tensors to/from safetensors.
//! - [`router`]: training the Flexi-LoRA router.
//! - [`workflow`]: label -> router -> fit as library calls ([`workflow::label`],
//!   [`workflow::fit_router`], [`workflow::fit`]).
//! - [`run`]: a trained run on disk ([`RunInfo`]) loaded for inference on any plain backend
//!   ([`FlexiRun::load`], then `evaluate` / `generate`).

pub mod adalora;
pub mod asr;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod export;
pub mod lm;
pub mod lock;
pub mod lr;
pub mod memory;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod peft;
pub mod router;
pub mod run;
pub mod trainer;
pub mod workflow;

pub use config::{ActivationCheckpointing, Method, TrainConfig};
pub use error::{Result, TrainError};
pub use lock::RunLock;
pub use parallel::{DataParallel, NodeSetup};
pub use run::{FlexiRun, RunInfo};
pub use trainer::{Objective, TrainSummary, Trainer};
