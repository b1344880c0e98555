//! The same FlexiLinear on the CPU backend (flex) and on wgpu: mixed-rank forward and the
//! gradients of A and B agree. Runs with `--features wgpu` (CI: Vulkan on lavapipe).
//!
//! Tolerance: 1e-4 absolute on values of order 1. Both backends compute in f32 but sum the
//! 64-term dot products in different orders (GPU tiling vs CPU gemm blocking), so they agree
//! to rounding (measured on lavapipe: output 8.6e-6, dA 6.7e-6, dB 1.9e-6), well below 1e-4.
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Wgpu};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use common::*;
use flexi_burn::{FlexiLinear, FlexiLinearConfig, SampleRanks, ScalePolicy};

type Gpu = Autodiff<Wgpu<f32, i32>>;

fn same_layer<B: burn::tensor::backend::AutodiffBackend>(device: &B::Device) -> FlexiLinear<B> {
    let (d_in, d_out, r) = (64, 48, 8);
    let mut l = FlexiLinearConfig::new(d_in, d_out, r)
        .with_scale(ScalePolicy::AlphaOverRank)
        .with_bias(true)
        .init::<B>(device);
    l.lora_a = Param::from_tensor(tensor([r, d_in], 1, device));
    l.lora_b = Param::from_tensor(tensor([d_out, r], 2, device));
    l.base.weight = Param::from_tensor(tensor([d_in, d_out], 3, device)).set_require_grad(false);
    l.base.bias = Some(Param::from_tensor(tensor([d_out], 4, device)).set_require_grad(false));
    l
}

fn run<B: burn::tensor::backend::AutodiffBackend>(
    device: &B::Device,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let layer = same_layer::<B>(device);
    let x = Tensor::<B, 3>::from_data(TensorData::new(values(4 * 5 * 64, 9), [4, 5, 64]), device);
    let y = layer.forward(x, &SampleRanks::new(vec![0, 1, 3, 8]));
    let grads = y.clone().powf_scalar(2.0).mean().backward();
    let ga = layer
        .lora_a
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let gb = layer
        .lora_b
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    (to_vec(y), ga, gb)
}

#[test]
fn flexi_linear_agrees_on_flex_and_wgpu() {
    let cpu = run::<CpuAd>(&Default::default());
    let device = WgpuDevice::default();
    Gpu::seed(&device, 0);
    let gpu = run::<Gpu>(&device);
    for (name, a, b) in [
        ("output", &cpu.0, &gpu.0),
        ("dA", &cpu.1, &gpu.1),
        ("dB", &cpu.2, &gpu.2),
    ] {
        let diff = max_abs_diff(a, b);
        eprintln!("{name}: max abs diff flex vs wgpu {diff:e}");
        assert!(diff <= 1e-4, "{name}: {diff}");
    }
}
