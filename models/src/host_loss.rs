//! The LM head and its cross-entropy as one autodiff operation for training on burn-flex.
//!
//! `loss = mean_i (logsumexp(h_i W) - (h_i W)[t_i])` over the rows `h [n, hidden]` that carry
//! a label (`train::lm` selects them), `W [hidden, vocab]` the LM head (the tied embedding's
//! transposed view or an untied head's weight). Burn's ops build the logits `[n, vocab]`, their
//! log-softmax (the maximum, the shifted values, their exponentials, the sum) and in the
//! backward pass the softmax and the logits' gradient, each a fresh `[n, vocab]` buffer; with
//! SmolLM2's 49,152-token vocabulary that is 0.2 MB per row, and under per-layer recomputation
//! (where the loss's backward pass runs alone) about 3.5 such copies are the step's peak.
//!
//! Here the rows go through in chunks of [`CHUNK`]: the forward keeps only each row's
//! `logsumexp` (one float), the backward recomputes the chunk's logits, turns them into
//! `softmax - onehot` in place, and multiplies out `dh = P W^T`. One more `[n, hidden] x
//! [hidden, vocab]` product than Burn's path, no `[n, vocab]` softmax or gradient passes, and
//! at most one `[CHUNK, vocab]` buffer alive instead of several `[n, vocab]` ones. A head
//! that trains (full fine-tuning) keeps Burn's path: its gradient `h^T P` summed over chunks
//! would add `[hidden, vocab]` buffers and time (measured: +1-2 % peak, -3 % tok/s).
//!
//! Taken for f32 tensors on `Autodiff<Flex>` with either checkpointing strategy Burn ships;
//! anything else (another backend, a half-stored head) gets its tensors back for Burn's ops.
//! `exp` is the vectorisable Cephes `expf` of [`crate::host_softmax`] (arguments `x - max <= 0`
//! and `x - logsumexp <= 0`); the loss and gradients agree with Burn's path to f32 roundoff.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

use flexi_burn::host::contiguous;

use crate::host_softmax::{exp, row_max};
use crate::host_train::{AdTensor, cast, flex, values};

/// Rows of one chunk of logits (`CHUNK x vocab` f32 at a time: 25 MB for a 49k vocabulary).
pub const CHUNK: usize = 128;

/// `mean_i -log softmax(h W)[i, targets[i]]` (`h [n, hidden]`, `w [hidden, vocab]`, output
/// `[1]`) as one autodiff operation when `B` is burn-flex under autodiff, both are f32 and the
/// head does not train (the LoRA-family methods); `Err((h, w))` otherwise (the caller runs
/// Burn's ops). `targets` must be `n` indices below
/// `vocab` (the caller checks).
#[allow(clippy::type_complexity)]
pub fn linear_cross_entropy_autodiff<B: Backend>(
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    targets: &[usize],
) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 2>)> {
    let ([n, d], [d2, vocab]) = (h.dims(), w.dims());
    if h.dtype() != DType::F32
        || w.dtype() != DType::F32
        || d != d2
        || n == 0
        || targets.len() != n
        || targets.iter().any(|&t| t >= vocab)
    {
        return Err((h, w));
    }
    let strategy = TypeId::of::<B>();
    if strategy == TypeId::of::<Autodiff<Flex, NoCheckpointing>>() {
        on::<B, NoCheckpointing>(h, w, targets)
    } else if strategy == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>() {
        on::<B, BalancedCheckpointing>(h, w, targets)
    } else {
        Err((h, w))
    }
}

/// The operation with `B` known to be `Autodiff<Flex, C>`, for a head that does not train.
#[allow(clippy::type_complexity)]
fn on<B: Backend, C: CheckpointStrategy>(
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    targets: &[usize],
) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 2>)> {
    let w = cast::<Tensor<B, 2>, Tensor<Autodiff<Flex, C>, 2>>(w);
    let tracked = w.clone().into_primitive().tensor().is_tracked();
    if tracked {
        return Err((h, cast(w)));
    }
    let h = cast::<Tensor<B, 2>, Tensor<Autodiff<Flex, C>, 2>>(h);
    Ok(cast(linear_ce::<C>(h, w, targets)))
}

fn linear_ce<C: CheckpointStrategy>(
    h: Tensor<Autodiff<Flex, C>, 2>,
    w: Tensor<Autodiff<Flex, C>, 2>,
    targets: &[usize],
) -> Tensor<Autodiff<Flex, C>, 1> {
    let (h, w): (AdTensor, AdTensor) = (h.into_primitive().tensor(), w.into_primitive().tensor());
    let (h_in, w_in) = (inner(h.primitive.clone()), inner(w.primitive.clone()));
    let mut lse = Vec::with_capacity(targets.len());
    let mut sum = 0f64;
    for_chunks(&h_in, &w_in, |rows, logits| {
        let vocab = logits.len() / rows.len();
        for (i, row) in rows.clone().zip(logits.chunks_exact(vocab)) {
            let l = logsumexp(row);
            sum += f64::from(l - row[targets[i]]);
            lse.push(l);
        }
    });
    let loss = (sum / targets.len() as f64) as f32;
    let out = flex(vec![loss], Shape::new([1]));
    let output = match LinearCe
        .prepare::<C>([h.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = LinearCeState {
                h: h.primitive,
                w: w.primitive,
                lse,
                targets: targets.to_vec(),
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

fn inner(t: FlexTensor) -> Tensor<Flex, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `f(rows, logits of those rows, row-major)` for consecutive chunks of [`CHUNK`] rows of `h`.
fn for_chunks(
    h: &Tensor<Flex, 2>,
    w: &Tensor<Flex, 2>,
    mut f: impl FnMut(std::ops::Range<usize>, &[f32]),
) {
    let [n, d] = h.dims();
    for r0 in (0..n).step_by(CHUNK) {
        let rows = r0..(r0 + CHUNK).min(n);
        let logits = h.clone().slice([rows.clone(), 0..d]).matmul(w.clone());
        let logits = contiguous(logits.into_primitive().tensor());
        f(rows, values(&logits));
    }
}

/// `log(sum(exp(row)))`, shifted by the row's maximum.
fn logsumexp(row: &[f32]) -> f32 {
    const LANES: usize = 16;
    let max = row_max(row);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            sums[i] += exp(c[i] - max);
        }
    }
    let mut sum: f32 = chunks.remainder().iter().map(|&x| exp(x - max)).sum();
    for s in sums {
        sum += s;
    }
    max + sum.ln()
}

/// What the backward pass needs: the operands (the head a handle on the model's frozen
/// weight, not a copy), each row's `logsumexp` and target.
#[derive(Clone, Debug)]
struct LinearCeState {
    h: FlexTensor,
    w: FlexTensor,
    lse: Vec<f32>,
    targets: Vec<usize>,
}

/// The backward step of the fused LM head and cross-entropy: the gradient of `h` (the head
/// does not train: a trained head takes Burn's ops, whose one `[n, vocab]` product for its
/// gradient beats a sum of per-chunk ones).
#[derive(Debug)]
struct LinearCe;

impl Backward<Flex, 1> for LinearCe {
    type State = LinearCeState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [h_node] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let Some(node) = h_node else {
            return;
        };
        let LinearCeState { h, w, lse, targets } = ops.state;
        let scale = values(&dy)[0] / targets.len() as f32;
        let (h, w) = (inner(h), inner(w));
        let [n, d] = h.dims();
        let vocab = w.dims()[1];
        let mut dh = Vec::new();
        for r0 in (0..n).step_by(CHUNK) {
            let rows = r0..(r0 + CHUNK).min(n);
            let logits = h.clone().slice([rows.clone(), 0..d]).matmul(w.clone());
            // softmax - onehot, times dy / n, in the logits' own buffer.
            let mut p = contiguous(logits.into_primitive().tensor());
            let values = &mut p.storage_mut::<f32>()[..rows.len() * vocab];
            for (i, row) in rows.clone().zip(values.chunks_exact_mut(vocab)) {
                let l = lse[i];
                for x in row.iter_mut() {
                    *x = exp(*x - l) * scale;
                }
                row[targets[i]] -= scale;
            }
            dh.push(inner(p).matmul(w.clone().transpose()));
        }
        let dh = if dh.len() == 1 {
            dh.remove(0)
        } else {
            Tensor::cat(dh, 0)
        };
        grads.register::<Flex>(node.id, dh.into_primitive().tensor());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Distribution, Int, TensorData};

    type Ad = Autodiff<Flex>;

    /// Burn's path: the logits, their log-softmax, the targets' entries, the mean.
    fn reference(h: Tensor<Ad, 2>, w: Tensor<Ad, 2>, targets: &[usize]) -> Tensor<Ad, 1> {
        let n = targets.len();
        let t = Tensor::<Ad, 2, Int>::from_data(
            TensorData::new(
                targets.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [n, 1],
            ),
            &Default::default(),
        );
        log_softmax(h.matmul(w), 1).gather(1, t).mean().neg()
    }

    fn max_rel(a: Tensor<Flex, 2>, b: Tensor<Flex, 2>) -> f32 {
        let (a, b) = (
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap(),
        );
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    #[test]
    fn loss_and_gradients_match_burns_log_softmax() {
        let device = Default::default();
        // Three chunks (the last one short), a tied head's transposed view and a plain one.
        let (n, d, vocab) = (2 * CHUNK + 37, 24, 301);
        let targets: Vec<usize> = (0..n).map(|i| (i * 37 + 11) % vocab).collect();
        let h0 = Tensor::<Flex, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
        let e0 = Tensor::<Flex, 2>::random([vocab, d], Distribution::Normal(0.0, 0.5), &device);
        for tied in [true, false] {
            let run = |fused: bool| {
                let h = Tensor::<Ad, 2>::from_inner(h0.clone()).require_grad();
                let w = if tied {
                    Tensor::<Ad, 2>::from_inner(e0.clone()).transpose()
                } else {
                    let w0 =
                        Tensor::<Flex, 2>::from_data(e0.clone().transpose().into_data(), &device);
                    Tensor::<Ad, 2>::from_inner(w0)
                };
                let loss = if fused {
                    linear_cross_entropy_autodiff(h.clone(), w, &targets).unwrap()
                } else {
                    reference(h.clone(), w, &targets)
                };
                let value: f32 = loss.clone().into_scalar();
                // A loss scale, as the trainer's backward_scale applies.
                let grads = loss.mul_scalar(0.75).backward();
                (value, h.grad(&grads).unwrap())
            };
            let (l0, dh0) = run(false);
            let (l1, dh1) = run(true);
            let e = max_rel(dh0, dh1);
            eprintln!("tied {tied}: loss {l0} vs {l1}, dh max rel diff {e:e}");
            assert!(
                (l0 - l1).abs() <= 2e-6 * l0.abs(),
                "tied {tied}: loss {l0} vs {l1}"
            );
            assert!(e <= 1e-5, "tied {tied}: dh {e:e}");
        }
    }

    #[test]
    fn other_inputs_are_handed_back() {
        let device = Default::default();
        let h = Tensor::<Ad, 2>::zeros([4, 8], &device).require_grad();
        let w = Tensor::<Ad, 2>::zeros([8, 10], &device);
        assert!(linear_cross_entropy_autodiff(h.clone(), w.clone(), &[0, 1, 2, 10]).is_err());
        assert!(linear_cross_entropy_autodiff(h.clone(), w.clone(), &[0, 1]).is_err());
        // A head that trains: Burn's ops.
        let trained = Tensor::<Ad, 2>::zeros([10, 8], &device).require_grad();
        assert!(linear_cross_entropy_autodiff(h.clone(), trained.transpose(), &[0; 4]).is_err());
        assert!(linear_cross_entropy_autodiff(h, w, &[0; 4]).is_ok());
        // Not autodiff: Burn's ops.
        let h = Tensor::<Flex, 2>::zeros([4, 8], &device);
        let w = Tensor::<Flex, 2>::zeros([8, 10], &device);
        assert!(linear_cross_entropy_autodiff(h, w, &[0, 1, 2, 3]).is_err());
    }
}
