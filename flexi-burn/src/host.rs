//! Our own kernels on the host's buffers, for the CPU backend without autodiff.
//!
//! [`host_kernels`] is the one test of when that is allowed, shared with the models' host
//! kernels (`models::sdpa`, `host_softmax`, `host_act`). With the feature `flex`:
//! [`linear_few_rows`], the few-row products of a decoding step, and [`try_adamw_host`],
//! AdamW's update in one pass in place (without the feature it always declines).

use burn::tensor::backend::Backend;

mod adamw;
#[cfg(feature = "flex")]
mod few_rows;
#[cfg(feature = "flex")]
mod flex_tensor;
pub use adamw::{AdamWStep, AdamWTensors, AdamWUpdated, try_adamw_host};
#[cfg(feature = "flex")]
pub use few_rows::{MAX_ROWS, MIN_ROWS, linear_few_rows};
#[cfg(feature = "flex")]
pub use flex_tensor::{contiguous, from_flex, to_flex};

/// Whether tensors live on the host and no autodiff graph records them (burn-flex without
/// autodiff), so our own host code may work on their buffers.
pub fn host_kernels<B: Backend>(device: &B::Device) -> bool {
    !B::ad_enabled(device) && B::name(device) == "flex"
}
