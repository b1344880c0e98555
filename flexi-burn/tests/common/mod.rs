//! Helpers shared by the integration tests.
#![allow(dead_code)]

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flexi_burn::{FlexiLinear, FlexiLinearConfig, ScalePolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub type Cpu = Flex;
pub type CpuAd = Autodiff<Flex>;

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn tensor<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), device)
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A layer with every parameter non-zero and deterministic (B is normally zero at init).
pub fn layer<B: Backend>(
    d_in: usize,
    d_out: usize,
    r_max: usize,
    scale: ScalePolicy,
    device: &B::Device,
) -> FlexiLinear<B> {
    let mut layer = FlexiLinearConfig::new(d_in, d_out, r_max)
        .with_alpha(4.0)
        .with_scale(scale)
        .with_bias(true)
        .init::<B>(device);
    layer.lora_a = Param::from_tensor(tensor([r_max, d_in], 11, device));
    layer.lora_b = Param::from_tensor(tensor([d_out, r_max], 12, device));
    layer.base.weight =
        Param::from_tensor(tensor([d_in, d_out], 13, device)).set_require_grad(false);
    layer.base.bias = Some(Param::from_tensor(tensor([d_out], 14, device)).set_require_grad(false));
    if let Some(s) = &layer.rank_scale {
        // learned scale: something other than alpha/r so the test sees it is used
        let v: Vec<f32> = (1..=r_max).map(|r| 0.5 + r as f32 * 0.25).collect();
        let _ = s;
        layer.rank_scale = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(v, [r_max]),
            device,
        )));
    }
    layer
}
