//! SwiGLU's product `silu(gate) * up` as one autodiff operation for training on burn-flex.
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
//! Taken for f32 tensors of one shape on `Autodiff<Flex>` with either checkpointing strategy
//! Burn ships (none, balanced); anything else gets its tensors back for Burn's own ops. The
//! values are Burn's up to a few ulp (the `exp` of [`crate::host_softmax`], and the order of
//! a few products; tests against Burn's autodiff).

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

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
fn cast<A: 'static, T: 'static>(x: A) -> T {
    let any: Box<dyn Any> = Box::new(x);
    *any.downcast::<T>()
        .expect("silu_mul_autodiff checked the backend type")
}

fn silu_mul<C: CheckpointStrategy, const D: usize>(
    gate: Tensor<Autodiff<Flex, C>, D>,
    up: Tensor<Autodiff<Flex, C>, D>,
) -> Tensor<Autodiff<Flex, C>, D> {
    let (gate, up) = (gate.into_primitive().tensor(), up.into_primitive().tensor());
    let (g, u) = (
        contiguous(gate.primitive.clone()),
        contiguous(up.primitive.clone()),
    );
    let shape = g.layout().shape().clone();
    let mut out = vec![0f32; shape.num_elements()];
    silu_mul_to(values(&g), values(&u), &mut out);
    let out = flex(out, shape);
    let output = match SiluMul
        .prepare::<C>([gate.node.clone(), up.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((g, u), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// The backward step of `h = silu(g) u`; its state is `g` and `u` (contiguous).
#[derive(Debug)]
struct SiluMul;

impl Backward<Flex, 2> for SiluMul {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [gate_node, up_node] = ops.parents;
        // dh's buffer becomes dg's (copied first when something else holds it).
        let mut dg = contiguous(grads.consume::<Flex>(&ops.node));
        let (g, u) = ops.state;
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

/// `t` contiguous from its first element (copied when it is a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    match t.layout().contiguous_offsets() {
        Some((0, _)) => t,
        _ => t.to_contiguous(),
    }
}

/// The values of a contiguous f32 tensor (`contiguous` made it start at its buffer's start).
fn values(t: &FlexTensor) -> &[f32] {
    let n = t.layout().shape().num_elements();
    &t.storage::<f32>()[..n]
}

fn flex(values: Vec<f32>, shape: Shape) -> FlexTensor {
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
