//! FlexiLinear's op sequence written with plain Burn tensor ops (no flexi-burn types), run on
//! wgpu and on flex (CPU) and compared: the candidate reproduction for the fused-wgpu failure
//! of issue 12 (see docs/upstream/fusion-bug.md). Build with `--features wgpu,fusion` to run
//! it with Burn's kernel fusion and autotuning; without `fusion` it checks the plain wgpu
//! backend. Shapes and values are those of the portability check `flexi_linear`:
//! x [4,5,64] f32, base weight [64,48] + bias [48], A [8,64], B [48,8], ranks {0,1,3,8}.
#![cfg(feature = "wgpu")]

use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorData};

/// The portability checks' deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut z = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn tensor<B: AutodiffBackend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), device)
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// `y = x W + b + ((x A^T) ⊙ m) B^T` on the 2-D view, then `mean(y^2)` backward; returns
/// y (read after the backward pass, as the portability check does), dA and dB.
fn flexi_linear_ops<B: AutodiffBackend>(device: &B::Device) -> Vec<Vec<f32>> {
    let (d_in, d_out, r, batch, seq) = (64, 48, 8, 4, 5);
    let lora_a = tensor::<B, 2>([r, d_in], 1, device).require_grad();
    let lora_b = tensor::<B, 2>([d_out, r], 2, device).require_grad();
    let w = tensor::<B, 2>([d_in, d_out], 3, device);
    let bias = tensor::<B, 1>([d_out], 4, device);
    let x = tensor::<B, 3>([batch, seq, d_in], 9, device);
    // Per-sample prefix mask carrying s(r) = 16 / r (0 for rank 0), [batch, 1, r].
    let mut m = Vec::new();
    for rank in [0usize, 1, 3, 8] {
        let s = if rank == 0 { 0.0 } else { 16.0 / rank as f32 };
        m.extend((0..r).map(|j| if j < rank { s } else { 0.0 }));
    }
    let mask = Tensor::<B, 3>::from_data(TensorData::new(m, [batch, 1, r]), device);

    let rows = batch * seq;
    let x2 = x.reshape([rows, d_in]);
    let base = linear(x2.clone(), w, Some(bias));
    let a = lora_a.clone().slice([0..r, 0..d_in]);
    let b = lora_b.clone().slice([0..d_out, 0..r]);
    let h = linear(x2, a.transpose(), None);
    let h = h.reshape([batch, seq, r]).mul(mask).reshape([rows, r]);
    let delta = linear(h, b.transpose(), None);
    let y = base.add(delta).reshape([batch, seq, d_out]);
    let grads = y.clone().powf_scalar(2.0).mean().backward();
    let da = lora_a.grad(&grads).expect("dA");
    let db = lora_b.grad(&grads).expect("dB");
    vec![host(y), host(da), host(db)]
}

#[test]
fn flexi_linear_ops_agree_on_wgpu_and_flex() {
    let want = flexi_linear_ops::<Autodiff<Flex>>(&Default::default());
    let have = flexi_linear_ops::<Autodiff<Wgpu>>(&Default::default());
    for ((name, w), h) in ["y", "dA", "dB"].iter().zip(&want).zip(&have) {
        assert_eq!(w.len(), h.len(), "{name}");
        let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = w
            .iter()
            .zip(h)
            .map(|(a, b)| (a - b).abs())
            .fold(
                0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        eprintln!("{name}: max abs diff {diff:e} (scale {scale})");
        // f32 on both sides: only summation order differs (measured 2e-5 on lavapipe).
        assert!(
            diff <= 1e-4 * scale,
            "{name}: max abs diff {diff} > {}",
            1e-4 * scale
        );
    }
}
