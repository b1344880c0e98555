//! SwiGLU's product `silu(gate) * up` and the token embedding as autodiff operations for
//! training on burn-flex.
//!
//! Under autodiff, Burn builds `silu(g) * u` from a sigmoid, two products and their backward
//! steps: burn-flex runs each as a pass with a fresh buffer on one thread, with libm's scalar
//! `expf` in the sigmoid (about 7 % of a SmolLM2 LoRA training step, 4 x 128 tokens), and the
//! graph keeps four `[tokens, intermediate]` tensors per layer (`g`, `sigmoid(g)`, `silu(g)`,
//! `u`) for the backward pass. Here the forward is one vectorised pass
//! ([`crate::host_act::silu_mul_to`]), the backward another
//! ([`crate::host_act::silu_mul_backward`]: `dg = dh u s (1 + g (1 - s))`, `du = dh g s` with
//! `s = sigmoid(g)` recomputed), and the graph keeps `g` and `u` only.
//!
//! The embedding's backward in Burn builds a dense `[vocab, hidden]` zero gradient (burn-flex
//! allocates it twice and copies it, then copies it again in `select_add`) before adding the
//! gathered rows, and then sums it with the LM head's gradient of the same (tied) weight: for
//! SmolLM2 four 113 MB buffers per shard and step, freshly paged in (14 % of a full
//! fine-tuning step's samples). Here the rows are added in place into the gradient the weight
//! already has (the tied head's, computed earlier in the backward pass), or into one zeroed
//! buffer: two fewer such buffers at the peak (the step's time moved within noise).
//!
//! Taken for f32 tensors on `Autodiff<Flex>` with either checkpointing strategy Burn ships
//! (none, balanced); anything else gets its tensors back for Burn's own ops. SwiGLU is a
//! memory-bound operation with a retro-forward, as Burn's own elementwise operations are:
//! under the balanced strategy its output and inputs are recomputed rather than kept for it
//! (by the same kernels, so the numbers are the same with and without checkpointing).

use std::any::{Any, TypeId};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

use flexi_burn::host::contiguous;

use crate::host_act::{silu_mul_backward, silu_mul_to};

/// `silu(gate) * up` as one autodiff operation when `B` is burn-flex under autodiff and both
/// are f32 of one shape; `Err((gate, up))` otherwise (the caller runs Burn's ops).
#[allow(clippy::type_complexity)]
pub fn silu_mul_autodiff<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    if gate.dtype() != DType::F32 || up.dtype() != DType::F32 || gate.dims() != up.dims() {
        return Err((gate, up));
    }
    let strategy = TypeId::of::<B>();
    if strategy == TypeId::of::<Autodiff<Flex, NoCheckpointing>>() {
        Ok(on::<B, NoCheckpointing, D>(gate, up))
    } else if strategy == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>() {
        Ok(on::<B, BalancedCheckpointing, D>(gate, up))
    } else {
        Err((gate, up))
    }
}

/// `embedding(weight, ids)` (`weight [vocab, hidden]`, `ids [batch, seq]`, output `[batch,
/// seq, hidden]`) as one autodiff operation when `B` is burn-flex under autodiff and the
/// weight is f32 and the ids i64 or i32; `Err((weight, ids))` otherwise (the caller runs
/// Burn's `embedding`).
#[allow(clippy::type_complexity)]
pub fn embedding_autodiff<B: Backend>(
    weight: Tensor<B, 2>,
    ids: Tensor<B, 2, Int>,
) -> Result<Tensor<B, 3>, (Tensor<B, 2>, Tensor<B, 2, Int>)> {
    if weight.dtype() != DType::F32 || !matches!(ids.dtype(), DType::I64 | DType::I32) {
        return Err((weight, ids));
    }
    let strategy = TypeId::of::<B>();
    if strategy == TypeId::of::<Autodiff<Flex, NoCheckpointing>>() {
        Ok(embedding_on::<B, NoCheckpointing>(weight, ids))
    } else if strategy == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>() {
        Ok(embedding_on::<B, BalancedCheckpointing>(weight, ids))
    } else {
        Err((weight, ids))
    }
}

fn embedding_on<B: Backend, C: CheckpointStrategy>(
    weight: Tensor<B, 2>,
    ids: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    let weight = cast::<Tensor<B, 2>, Tensor<Autodiff<Flex, C>, 2>>(weight);
    let ids = cast::<Tensor<B, 2, Int>, Tensor<Autodiff<Flex, C>, 2, Int>>(ids);
    cast(embedding::<C>(weight, ids))
}

/// The autodiff tensor type of `Autodiff<Flex, C>` (the same for every strategy).
pub(crate) type AdTensor = burn::tensor::ops::FloatTensor<Autodiff<Flex>>;

fn embedding<C: CheckpointStrategy>(
    weight: Tensor<Autodiff<Flex, C>, 2>,
    ids: Tensor<Autodiff<Flex, C>, 2, Int>,
) -> Tensor<Autodiff<Flex, C>, 3> {
    let weight: AdTensor = weight.into_primitive().tensor();
    let ids: FlexTensor = ids.into_primitive();
    let inner = burn::tensor::module::embedding(
        Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(weight.primitive.clone())),
        Tensor::<Flex, 2, Int>::from_primitive(ids.clone()),
    );
    let out = inner.into_primitive().tensor();
    let output = match EmbeddingStep
        .prepare::<C>([weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((weight, ids), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// The backward step of the embedding; its state is the weight (to find the gradient it
/// already has) and the ids.
#[derive(Debug)]
struct EmbeddingStep;

impl Backward<Flex, 1> for EmbeddingStep {
    type State = (AdTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [weight_node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = weight_node else {
            return;
        };
        let dy = contiguous(dy);
        let (weight, ids) = ops.state;
        let [vocab, hidden] = weight.primitive.layout().shape().dims::<2>();
        // The gradient the weight already has (a tied LM head's), ours to write, else zeros.
        let mut grad = match grads.remove::<Flex>(&weight) {
            Some(g) => {
                // A tied head's gradient arrives as the transpose of `[hidden, vocab]`.
                let mut g = transposed_to_rows(g).unwrap_or_else(contiguous);
                // Copied first when something else still holds the buffer.
                let _ = g.storage_mut::<f32>();
                g
            }
            None => flex(vec![0f32; vocab * hidden], Shape::new([vocab, hidden])),
        };
        let ids = contiguous(ids);
        let count = ids.layout().shape().num_elements();
        let rows: Vec<usize> = match ids.dtype() {
            DType::I64 => ids.storage::<i64>()[..count]
                .iter()
                .map(|&i| i as usize)
                .collect(),
            DType::I32 => ids.storage::<i32>()[..count]
                .iter()
                .map(|&i| i as usize)
                .collect(),
            other => unreachable!("embedding ids of type {other:?} (embedding_autodiff checks)"),
        };
        let dy = values(&dy);
        let g = &mut grad.storage_mut::<f32>()[..vocab * hidden];
        // In order, as Burn's `select_add`: deterministic sums for repeated ids.
        for (src, &id) in dy.chunks_exact(hidden).zip(&rows) {
            for (a, &b) in g[id * hidden..(id + 1) * hidden].iter_mut().zip(src) {
                *a += b;
            }
        }
        grads.register::<Flex>(node.id, grad);
    }
}

/// The operation with `B` known to be `Autodiff<Flex, C>`.
fn on<B: Backend, C: CheckpointStrategy, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    let (gate, up) = (
        cast::<Tensor<B, D>, Tensor<Autodiff<Flex, C>, D>>(gate),
        cast::<Tensor<B, D>, Tensor<Autodiff<Flex, C>, D>>(up),
    );
    cast(silu_mul::<C, D>(gate, up))
}

/// `x` as the type it is (`A` and `T` are the same type; checked by the caller's `TypeId`).
pub(crate) fn cast<A: 'static, T: 'static>(x: A) -> T {
    let any: Box<dyn Any> = Box::new(x);
    *any.downcast::<T>()
        .expect("silu_mul_autodiff checked the backend type")
}

fn silu_mul<C: CheckpointStrategy, const D: usize>(
    gate: Tensor<Autodiff<Flex, C>, D>,
    up: Tensor<Autodiff<Flex, C>, D>,
) -> Tensor<Autodiff<Flex, C>, D> {
    let (gate, up) = (gate.into_primitive().tensor(), up.into_primitive().tensor());
    let out = silu_mul_forward(gate.primitive.clone(), up.primitive.clone());
    let output = match SiluMul
        .prepare::<C>([gate.node.clone(), up.node.clone()])
        .memory_bound()
        .retro_forward(RetroSiluMul {
            gate: gate.node.id,
            up: up.node.id,
        })
        .parents([&gate, &up])
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&gate), prep.checkpoint(&up));
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// `silu(g) u` into a new buffer.
fn silu_mul_forward(g: FlexTensor, u: FlexTensor) -> FlexTensor {
    let (g, u) = (contiguous(g), contiguous(u));
    let shape = g.layout().shape().clone();
    let mut out = vec![0f32; shape.num_elements()];
    silu_mul_to(values(&g), values(&u), &mut out);
    flex(out, shape)
}

/// The output of `h = silu(g) u` recomputed from its inputs (checkpointing).
#[derive(Debug)]
struct RetroSiluMul {
    gate: NodeId,
    up: NodeId,
}

impl RetroForward for RetroSiluMul {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let g: FlexTensor = states.get_state(&self.gate);
        let u: FlexTensor = states.get_state(&self.up);
        states.save(out_node, silu_mul_forward(g, u))
    }
}

/// The backward step of `h = silu(g) u`; its state is the nodes of `g` and `u` (kept or
/// recomputed by the checkpointing strategy).
#[derive(Debug)]
struct SiluMul;

impl Backward<Flex, 2> for SiluMul {
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [gate_node, up_node] = ops.parents;
        let (g, u) = ops.state;
        let g = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(g));
        let u = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(u));
        // dh's buffer becomes dg's (copied first when something else holds it).
        let mut dg = contiguous(grads.consume::<Flex>(&ops.node));
        let shape = g.layout().shape().clone();
        let n = shape.num_elements();
        let mut du = vec![0f32; n];
        silu_mul_backward(
            values(&g),
            values(&u),
            &mut dg.storage_mut::<f32>()[..n],
            &mut du,
        );
        if let Some(node) = gate_node {
            grads.register::<Flex>(node.id, dg);
        }
        if let Some(node) = up_node {
            grads.register::<Flex>(node.id, flex(du, shape));
        }
    }
}

/// A 2-D f32 tensor that is the transposed view of a row-major buffer (`[rows, cols]` with
/// strides `[1, s]`, `s >= rows`), copied to row-major in tiles (burn-flex's `to_contiguous`
/// walks such a view element by element); `Err(t)` for any other layout.
fn transposed_to_rows(t: FlexTensor) -> Result<FlexTensor, FlexTensor> {
    const TILE: usize = 32;
    let layout = t.layout();
    let (shape, strides, offset) = (layout.shape(), layout.strides(), layout.start_offset());
    if t.dtype() != DType::F32 || shape.num_dims() != 2 {
        return Err(t);
    }
    let [rows, cols] = shape.dims::<2>();
    let [1, s] = *strides else {
        return Err(t);
    };
    let Ok(s) = usize::try_from(s) else {
        return Err(t);
    };
    let src = t.storage::<f32>();
    if s < rows || rows == 0 || cols == 0 || offset + (cols - 1) * s + rows > src.len() {
        return Err(t);
    }
    // `t[r, c]` is `src[offset + c s + r]`.
    let mut out = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for c in c0..(c0 + TILE).min(cols) {
                let column = &src[offset + c * s + r0..offset + c * s + (r0 + TILE).min(rows)];
                for (i, &v) in column.iter().enumerate() {
                    out[(r0 + i) * cols + c] = v;
                }
            }
        }
    }
    Ok(flex(out, Shape::new([rows, cols])))
}

/// The values of a contiguous f32 tensor (`contiguous` made it start at its buffer's start).
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    let n = t.layout().shape().num_elements();
    &t.storage::<f32>()[..n]
}

pub(crate) fn flex(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::silu;

    /// Values and gradients of `sum(w * silu(g) u)` against Burn's own ops under autodiff,
    /// over [-40, 40] and random values, with both checkpointing strategies: within a few ulp
    /// of each term (the `exp` within 2 ulp, products in another order).
    fn equals_burns<C: CheckpointStrategy>() {
        type I = Flex;
        let device = Default::default();
        let n = 7 * 2287;
        let grid: Vec<f32> = (0..n)
            .map(|i| -40.0 + 80.0 * i as f32 / (n - 1) as f32)
            .collect();
        // A strided view (rows of 2280 out of 2287): the operation copies it contiguous.
        let g0 = Tensor::<I, 1>::from_floats(grid.as_slice(), &device).reshape([7, 2287]);
        let g0 = g0.slice([0..7, 0..2280]);
        let dims = g0.dims();
        let u0 = Tensor::<I, 2>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<I, 2>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let g = Tensor::<Autodiff<Flex, C>, 2>::from_inner(g0.clone()).require_grad();
            let u = Tensor::<Autodiff<Flex, C>, 2>::from_inner(u0.clone()).require_grad();
            let h = if ours {
                silu_mul_autodiff(g.clone(), u.clone()).unwrap_or_else(|_| panic!("taken"))
            } else {
                silu(g.clone()).mul(u.clone())
            };
            let loss = (h.clone() * Tensor::from_inner(w.clone())).sum();
            let grads = loss.backward();
            let data = |t: Tensor<I, 2>| t.into_data().to_vec::<f32>().unwrap();
            (
                data(h.inner()),
                data(g.grad(&grads).unwrap()),
                data(u.grad(&grads).unwrap()),
            )
        };
        let (h, dg, du) = run(true);
        let (h_b, dg_b, du_b) = run(false);
        let (gs, us, ws) = (
            g0.into_data().to_vec::<f32>().unwrap(),
            u0.into_data().to_vec::<f32>().unwrap(),
            w.into_data().to_vec::<f32>().unwrap(),
        );
        for i in 0..h.len() {
            let (g, u, w) = (gs[i], us[i], ws[i]);
            let close = |a: f32, b: f32, scale: f32| (a - b).abs() <= 4e-7 * scale + 1e-30;
            let silu_abs = g.abs() / (1.0 + (-g).exp());
            assert!(close(h[i], h_b[i], silu_abs * u.abs()), "h at g = {g}");
            assert!(close(du[i], du_b[i], silu_abs * w.abs()), "du at g = {g}");
            // dg = w u s (1 + g (1 - s)): the size of its terms bounds the rounding.
            let s = 1.0 / (1.0 + (-g).exp());
            let terms = (w * u).abs() * s * (1.0 + g.abs() * (1.0 - s));
            assert!(
                close(dg[i], dg_b[i], terms),
                "dg at g = {g}: {} vs {}",
                dg[i],
                dg_b[i]
            );
        }
    }

    #[test]
    fn silu_mul_gradients_equal_burns() {
        equals_burns::<NoCheckpointing>();
    }

    #[test]
    fn silu_mul_gradients_equal_burns_under_balanced_checkpointing() {
        equals_burns::<BalancedCheckpointing>();
    }

    /// The embedding's output and its weight's gradient against Burn's `embedding` under
    /// autodiff, with repeated ids, alone and tied to a head (`h W^T`, whose gradient reaches
    /// the weight first): the same values, the sums of repeated rows and of the head's part
    /// in another order (a few ulp).
    fn embedding_equals_burns<C: CheckpointStrategy>(tied: bool) {
        type I = Flex;
        let device = Default::default();
        let (vocab, hidden) = (37, 24);
        let w0 = Tensor::<I, 2>::random([vocab, hidden], Distribution::Normal(0.0, 1.0), &device);
        let ids: Vec<i64> = (0..2 * 9).map(|i| (i * 7 % 11) as i64).collect();
        let ids0 =
            Tensor::<I, 1, Int>::from_data(TensorData::new(ids, [18]), &device).reshape([2, 9]);
        let dy = Tensor::<I, 3>::random([2, 9, hidden], Distribution::Normal(0.0, 1.0), &device);
        let h0 = Tensor::<I, 2>::random([5, hidden], Distribution::Normal(0.0, 1.0), &device);
        let dl = Tensor::<I, 2>::random([5, vocab], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let w = Tensor::<Autodiff<Flex, C>, 2>::from_inner(w0.clone()).require_grad();
            let ids = Tensor::<Autodiff<Flex, C>, 2, Int>::from_inner(ids0.clone());
            let x = if ours {
                embedding_autodiff(w.clone(), ids).unwrap_or_else(|_| panic!("taken"))
            } else {
                burn::tensor::module::embedding(w.clone(), ids)
            };
            let mut loss = (x.clone() * Tensor::from_inner(dy.clone())).sum();
            if tied {
                let h = Tensor::<Autodiff<Flex, C>, 2>::from_inner(h0.clone());
                let logits = h.matmul(w.clone().transpose());
                loss = loss + (logits * Tensor::from_inner(dl.clone())).sum();
            }
            let grads = loss.backward();
            let data = |t: Tensor<I, 2>| t.into_data().to_vec::<f32>().unwrap();
            (
                x.inner().into_data().to_vec::<f32>().unwrap(),
                data(w.grad(&grads).unwrap()),
            )
        };
        let (x, dw) = run(true);
        let (x_b, dw_b) = run(false);
        assert_eq!(x, x_b);
        for (i, (a, b)) in dw.iter().zip(&dw_b).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "dw {i}: {a} vs {b}"
            );
        }
        // Rows no id reaches: only the head's part (or zero).
        let used: std::collections::HashSet<usize> = (0..18).map(|i| i * 7 % 11).collect();
        for row in (0..vocab).filter(|r| !used.contains(r)) {
            let (a, b) = (
                &dw[row * hidden..(row + 1) * hidden],
                &dw_b[row * hidden..(row + 1) * hidden],
            );
            assert_eq!(a, b, "row {row}");
        }
    }

    /// The tiled copy of a transposed view equals burn-flex's `to_contiguous`, for sizes
    /// that are and are not multiples of the tile, and declines other layouts.
    #[test]
    fn transposed_views_copy_to_rows() {
        let device = Default::default();
        for (a, b) in [(5, 37), (64, 96), (33, 70)] {
            let t = Tensor::<Flex, 2>::random([a, b], Distribution::Normal(0.0, 1.0), &device);
            let view = t.transpose().into_primitive().tensor(); // [b, a], strides [1, b]
            let want = view.to_contiguous();
            let got = transposed_to_rows(view).unwrap_or_else(|_| panic!("a transposed view"));
            assert_eq!(got.layout().shape().dims::<2>(), [b, a]);
            assert_eq!(values(&got), values(&want));
        }
        let rows = Tensor::<Flex, 2>::random([4, 6], Distribution::Default, &device);
        assert!(transposed_to_rows(rows.into_primitive().tensor()).is_err());
    }

    #[test]
    fn embedding_gradients_equal_burns() {
        embedding_equals_burns::<NoCheckpointing>(false);
        embedding_equals_burns::<NoCheckpointing>(true);
        embedding_equals_burns::<BalancedCheckpointing>(false);
        embedding_equals_burns::<BalancedCheckpointing>(true);
    }

    #[test]
    fn other_backends_and_types_get_their_tensors_back() {
        let device = Default::default();
        // Without autodiff (inference has its own in-place path).
        let g = Tensor::<Flex, 1>::from_floats([1.0, -2.0], &device);
        assert!(silu_mul_autodiff(g.clone(), g.clone()).is_err());
        // f16 under autodiff.
        let g = Tensor::<Autodiff<Flex>, 1>::from_floats([1.0, -2.0], &device)
            .cast(burn::tensor::FloatDType::F16);
        assert!(silu_mul_autodiff(g.clone(), g).is_err());
        // Shapes that differ.
        let a = Tensor::<Autodiff<Flex>, 1>::from_floats([1.0, -2.0], &device);
        let b = Tensor::<Autodiff<Flex>, 1>::from_floats([1.0, -2.0, 3.0], &device);
        assert!(silu_mul_autodiff(a, b).is_err());
    }
}
