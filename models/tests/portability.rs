//! The tiny Llama fixture on the CPU backend (flex) and on wgpu: logits of a left-padded
//! batch with per-sample ranks, and the LoRA gradients of a training loss, agree.
//! Runs with `--features wgpu` (CI: Vulkan on lavapipe).
//!
//! Tolerance: 1e-4 absolute on logits and gradients of order 1-10: both backends compute in
//! f32 with different summation orders (and softmax/RMSNorm reductions), so differences stay at
//! rounding level (measured in the test output), well below 1e-4.
#![cfg(feature = "wgpu")]

use std::path::PathBuf;

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use flexi_burn::SampleRanks;
use models::llama::{AdapterConfig, PaddedBatch, Target, causal_lm_loss, load_llama};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_tied")
}

fn data<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Logits and the gradients of every q/v adapter's B, with a deterministic non-zero B.
fn run<B: AutodiffBackend>(device: &B::Device) -> (Vec<f32>, Vec<Vec<f32>>) {
    let adapter = AdapterConfig::new(vec![Target::Q, Target::V], 4, 8.0);
    let mut model = load_llama::<B>(fixture(), &adapter, device).unwrap();
    for layer in model.layers.iter_mut() {
        for proj in [&mut layer.self_attn.q_proj, &mut layer.self_attn.v_proj] {
            let f = proj.adapter_mut().unwrap();
            let [o, r] = f.lora_b.dims();
            let [_, i] = f.lora_a.dims();
            let b: Vec<f32> = (0..o * r).map(|k| 0.01 * ((k % 11) as f32 - 5.0)).collect();
            let a: Vec<f32> = (0..r * i).map(|k| 0.02 * ((k % 7) as f32 - 3.0)).collect();
            f.lora_b = Param::from_tensor(Tensor::from_data(TensorData::new(b, [o, r]), device));
            f.lora_a = Param::from_tensor(Tensor::from_data(TensorData::new(a, [r, i]), device));
        }
    }
    let batch = PaddedBatch::left_pad(&[vec![0, 17, 42, 99, 5, 63], vec![0, 8, 250]], 0);
    let ranks = SampleRanks::new(vec![4, 2]);
    let logits = model.forward(&batch, &ranks).unwrap();
    let labels = batch.labels::<B>(-100, device);
    let grads = causal_lm_loss(logits.clone(), labels, -100).backward();
    let gb = model
        .layers
        .iter()
        .flat_map(|l| [&l.self_attn.q_proj, &l.self_attn.v_proj])
        .map(|p| data(p.adapter().unwrap().lora_b.grad(&grads).unwrap()))
        .collect();
    (data(logits), gb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_llama_agrees_on_flex_and_wgpu() {
    let (cpu_logits, cpu_grads) = run::<Autodiff<Flex>>(&Default::default());
    let device = WgpuDevice::default();
    let (gpu_logits, gpu_grads) = run::<Autodiff<Wgpu<f32, i32>>>(&device);
    let d = max_abs_diff(&cpu_logits, &gpu_logits);
    eprintln!("logits: max abs diff flex vs wgpu {d:e}");
    assert!(d <= 1e-4, "logits differ by {d}");
    for (i, (a, b)) in cpu_grads.iter().zip(&gpu_grads).enumerate() {
        let d = max_abs_diff(a, b);
        eprintln!("lora_b grad {i}: max abs diff {d:e}");
        assert!(d <= 1e-4, "gradient {i} differs by {d}");
    }
}
