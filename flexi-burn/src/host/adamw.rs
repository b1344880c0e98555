//! AdamW's update in one pass over the host's buffers, in place.
//!
//! Burn's `AdamW` (burn-optim 0.21) updates a parameter with about a dozen tensor operations
//! (`m1 * b1`, `g * (1 - b1)`, their sum, `g * g`, ..., `p * (1 - lr wd)`, `p - lr delta`),
//! each a pass over the whole parameter that allocates its output; burn-flex runs them on one
//! thread. For full fine-tuning (every weight trainable) that is a few GB of memory traffic and
//! fresh pages per step (SmolLM2-135M: 0.35-0.55 s of a 3.5-4.6 s step). Here the same
//! arithmetic runs element by element in one pass: the gradient and the three buffers
//! (parameter, first and second moment) are read once and written back in place when the
//! optimizer holds the only reference to them, over the cores in chunks.
//!
//! The operations, their order and their f32 constants are Burn's, so the result is the same
//! bit for bit (Rust does not contract `a * b + c` into a fused multiply-add; tests compare
//! against Burn's `AdamW`). Taken on burn-flex without autodiff (the optimizer's inner
//! backend) for f32 tensors of one shape; anything else gets the tensors back
//! ([`try_adamw_host`] returns `Err`) for Burn's own update.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// AdamW's hyper-parameters and this update's learning rate and time step (Burn's
/// `AdamWConfig` fields; AMSGrad and cautious weight decay are not covered).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the second moment's square root.
    pub epsilon: f32,
    /// Decoupled weight decay (multiplied by the learning rate).
    pub weight_decay: f32,
    /// Learning rate of this step.
    pub lr: f64,
    /// The step's time (1 on the first update of a parameter), for the bias corrections.
    pub time: usize,
}

/// The tensors of one parameter's update: the parameter, its gradient, and the moments
/// (`None` on the first update, which starts them from the gradient).
pub struct AdamWTensors<B: Backend, const D: usize> {
    /// The parameter.
    pub param: Tensor<B, D>,
    /// Its gradient.
    pub grad: Tensor<B, D>,
    /// First and second moment, from the previous update.
    pub moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
}

/// The updated parameter and moments.
pub type AdamWUpdated<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>);

/// The f32 constants of Burn's update, computed as Burn computes them.
#[cfg(feature = "flex")]
#[derive(Debug, Clone, Copy)]
struct Constants {
    beta_1: f32,
    beta_2: f32,
    factor_1: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    /// `1 - lr * weight_decay`, or `None` when the decay rate is 0 (Burn leaves `p` as is).
    keep: Option<f32>,
    lr: f32,
    first: bool,
}

#[cfg(feature = "flex")]
impl Constants {
    fn new(s: &AdamWStep, first: bool) -> Self {
        // As in burn-optim 0.21's `AdaptiveMomentumW::transform` and `AdamW::step`: factors
        // and corrections in f32, the decay rate in f64, every scalar handed to burn-flex's
        // f32 kernels as `f64 as f32`.
        let time = s.time as i32;
        let decay_rate = s.lr * s.weight_decay as f64;
        Self {
            beta_1: s.beta_1,
            beta_2: s.beta_2,
            factor_1: 1.0 - s.beta_1,
            factor_2: 1.0 - s.beta_2,
            correction_1: 1f32 - s.beta_1.powi(time),
            correction_2: 1f32 - s.beta_2.powi(time),
            epsilon: s.epsilon,
            keep: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            lr: s.lr as f32,
            first,
        }
    }
}

/// One AdamW update of `t` on the host, or `t` back unchanged when it does not apply (another
/// backend, autodiff, a type other than f32, shapes that differ, or the crate built without
/// the `flex` feature).
pub fn try_adamw_host<B: Backend, const D: usize>(
    t: AdamWTensors<B, D>,
    step: &AdamWStep,
) -> Result<AdamWUpdated<B, D>, AdamWTensors<B, D>> {
    #[cfg(feature = "flex")]
    {
        if flex_path::applies(&t) {
            return Ok(flex_path::update(t, step));
        }
    }
    #[cfg(not(feature = "flex"))]
    let _ = step;
    Err(t)
}

/// Elements per task when the update is spread over the cores.
#[cfg(feature = "flex")]
const CHUNK: usize = 1 << 15;

#[cfg(feature = "flex")]
mod flex_path {
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorData};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use super::{AdamWStep, AdamWTensors, AdamWUpdated, CHUNK, Constants};
    use crate::host::{contiguous, from_flex, to_flex};

    pub(super) fn applies<B: Backend, const D: usize>(t: &AdamWTensors<B, D>) -> bool {
        let dims = t.param.dims();
        let same = |x: &Tensor<B, D>| x.dtype() == DType::F32 && x.dims() == dims;
        crate::host::host_kernels::<B>(&t.param.device())
            && same(&t.param)
            && same(&t.grad)
            && t.moments
                .as_ref()
                .is_none_or(|(m1, m2)| same(m1) && same(m2))
    }

    pub(super) fn update<B: Backend, const D: usize>(
        t: AdamWTensors<B, D>,
        step: &AdamWStep,
    ) -> AdamWUpdated<B, D> {
        let dims = t.param.dims();
        let n: usize = dims.iter().product();
        let c = Constants::new(step, t.moments.is_none());
        let mut param = owned(flex(t.param));
        let grad = contiguous(flex(t.grad));
        let (mut m1, mut m2) = match t.moments {
            Some((m1, m2)) => (owned(flex(m1)), owned(flex(m2))),
            None => {
                let zeros = || FlexTensor::from_data(TensorData::new(vec![0f32; n], dims));
                (zeros(), zeros())
            }
        };
        {
            // Each buffer holds the tensor from its first element (`owned`, `contiguous`);
            // it may run on past the tensor's end.
            let g = &grad.storage::<f32>()[..n];
            let p = &mut param.storage_mut::<f32>()[..n];
            let m1 = &mut m1.storage_mut::<f32>()[..n];
            let m2 = &mut m2.storage_mut::<f32>()[..n];
            p.par_chunks_mut(CHUNK)
                .zip(m1.par_chunks_mut(CHUNK))
                .zip(m2.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((p, m1), m2), g)| super::kernel(p, m1, m2, g, &c));
        }
        (tensor(param), tensor(m1), tensor(m2))
    }

    /// `t` contiguous from its first element and holding the only reference to its buffer,
    /// so that it can be written in place (copied once when it is a view or shared).
    fn owned(t: FlexTensor) -> FlexTensor {
        let mut t = contiguous(t);
        if !t.is_unique() {
            // `storage_mut` copies a shared buffer (copy on write); a view of a larger
            // buffer was made contiguous above, so the whole buffer is the tensor.
            let _ = t.storage_mut::<f32>();
        }
        t
    }

    /// The flex tensor behind `t` (checked by [`applies`]: flex, f32).
    fn flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
        to_flex(t).expect("applies() checked that the backend is burn-flex and the dtype f32")
    }

    fn tensor<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
        from_flex(t).expect("applies() checked that the backend is burn-flex")
    }
}

/// Burn's AdamW arithmetic on one chunk (all four slices of one length), element by element
/// (see the module doc).
#[cfg(feature = "flex")]
fn kernel(p: &mut [f32], m1: &mut [f32], m2: &mut [f32], g: &[f32], c: &Constants) {
    // The two conditions as constants of four loops, so that each loop vectorises.
    match (c.first, c.keep.is_some()) {
        (true, true) => kernel_for::<true, true>(p, m1, m2, g, c),
        (true, false) => kernel_for::<true, false>(p, m1, m2, g, c),
        (false, true) => kernel_for::<false, true>(p, m1, m2, g, c),
        (false, false) => kernel_for::<false, false>(p, m1, m2, g, c),
    }
}

#[cfg(feature = "flex")]
#[inline(always)]
fn kernel_for<const FIRST: bool, const DECAY: bool>(
    p: &mut [f32],
    m1: &mut [f32],
    m2: &mut [f32],
    g: &[f32],
    c: &Constants,
) {
    let n = p.len();
    let (m1, m2, g) = (&mut m1[..n], &mut m2[..n], &g[..n]);
    let keep = c.keep.unwrap_or(1.0);
    for i in 0..n {
        let gi = g[i];
        let (m, v) = if FIRST {
            (gi * c.factor_1, (gi * gi) * c.factor_2)
        } else {
            (
                m1[i] * c.beta_1 + gi * c.factor_1,
                m2[i] * c.beta_2 + (gi * gi) * c.factor_2,
            )
        };
        m1[i] = m;
        m2[i] = v;
        let delta = (m / c.correction_1) / ((v / c.correction_2).sqrt() + c.epsilon);
        let decayed = if DECAY { p[i] * keep } else { p[i] };
        p[i] = decayed - delta * c.lr;
    }
}
