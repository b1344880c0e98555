//! The nested-rank LoRA layer against hand-computed references.

mod common;

use burn::module::{AutodiffModule, Param};
use burn::tensor::{Tensor, TensorData};
use common::*;
use flexi_burn::{FlexiError, FlexiLinearConfig, SampleRanks, ScalePolicy};

const D_IN: usize = 6;
const D_OUT: usize = 5;
const R_MAX: usize = 8;
const SEQ: usize = 3;

/// Plain-Rust reference of one layer: weights read back from the module.
struct Reference {
    w0: Vec<f32>, // [d_in, d_out]
    bias: Vec<f32>,
    a: Vec<f32>, // [r_max, d_in]
    b: Vec<f32>, // [d_out, r_max]
}

impl Reference {
    fn of<B: burn::tensor::backend::Backend>(l: &flexi_burn::FlexiLinear<B>) -> Self {
        Self {
            w0: to_vec(l.base.weight.val()),
            bias: to_vec(l.base.bias.as_ref().unwrap().val()),
            a: to_vec(l.lora_a.val()),
            b: to_vec(l.lora_b.val()),
        }
    }

    /// `ax[t, j] = sum_k A[j, k] x[t, k]` for one sample `x [seq, d_in]`.
    fn ax(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; SEQ * R_MAX];
        for t in 0..SEQ {
            for j in 0..R_MAX {
                out[t * R_MAX + j] = (0..D_IN)
                    .map(|k| self.a[j * D_IN + k] * x[t * D_IN + k])
                    .sum();
            }
        }
        out
    }

    /// `y [seq, d_out]` of one sample at rank `r` with scale `s`, slicing A and B to `r`.
    fn forward(&self, x: &[f32], r: usize, s: f32) -> Vec<f32> {
        let ax = self.ax(x);
        let mut y = vec![0.0; SEQ * D_OUT];
        for t in 0..SEQ {
            for o in 0..D_OUT {
                let base: f32 = (0..D_IN)
                    .map(|k| x[t * D_IN + k] * self.w0[k * D_OUT + o])
                    .sum();
                let lora: f32 = (0..r)
                    .map(|j| self.b[o * R_MAX + j] * ax[t * R_MAX + j])
                    .sum();
                y[t * D_OUT + o] = base + self.bias[o] + s * lora;
            }
        }
        y
    }

    /// Gradients of `L = sum G ⊙ y` with respect to A and B, summed over samples of ranks `rs`.
    fn grads(
        &self,
        xs: &[f32],
        g: &[f32],
        rs: &[usize],
        scale: &dyn Fn(usize) -> f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut ga = vec![0.0; R_MAX * D_IN];
        let mut gb = vec![0.0; D_OUT * R_MAX];
        for (i, &r) in rs.iter().enumerate() {
            let x = &xs[i * SEQ * D_IN..(i + 1) * SEQ * D_IN];
            let gi = &g[i * SEQ * D_OUT..(i + 1) * SEQ * D_OUT];
            let ax = self.ax(x);
            let s = scale(r);
            for j in 0..r {
                for o in 0..D_OUT {
                    gb[o * R_MAX + j] += s
                        * (0..SEQ)
                            .map(|t| gi[t * D_OUT + o] * ax[t * R_MAX + j])
                            .sum::<f32>();
                }
                for k in 0..D_IN {
                    ga[j * D_IN + k] += s
                        * (0..SEQ)
                            .map(|t| {
                                let gbo: f32 = (0..D_OUT)
                                    .map(|o| gi[t * D_OUT + o] * self.b[o * R_MAX + j])
                                    .sum();
                                gbo * x[t * D_IN + k]
                            })
                            .sum::<f32>();
                }
            }
        }
        (ga, gb)
    }
}

#[test]
fn mixed_rank_batch_equals_per_sample_slicing_forward_and_gradients() {
    let ranks = vec![0, 1, 3, 8];
    let device = Default::default();
    for policy in [ScalePolicy::AlphaOverRank, ScalePolicy::AlphaOverSqrtRank] {
        let layer = layer::<CpuAd>(D_IN, D_OUT, R_MAX, policy, &device);
        let reference = Reference::of(&layer);
        let batch = ranks.len();
        let xs = values(batch * SEQ * D_IN, 21);
        let g = values(batch * SEQ * D_OUT, 22);
        let x =
            Tensor::<CpuAd, 3>::from_data(TensorData::new(xs.clone(), [batch, SEQ, D_IN]), &device);
        let gt =
            Tensor::<CpuAd, 3>::from_data(TensorData::new(g.clone(), [batch, SEQ, D_OUT]), &device);

        let y = layer.forward(x, &SampleRanks::new(ranks.clone()));
        let got = to_vec(y.clone());
        for (i, &r) in ranks.iter().enumerate() {
            let want = reference.forward(
                &xs[i * SEQ * D_IN..(i + 1) * SEQ * D_IN],
                r,
                policy.scale(4.0, r) as f32,
            );
            let diff = max_abs_diff(&got[i * SEQ * D_OUT..(i + 1) * SEQ * D_OUT], &want);
            assert!(
                diff <= 1e-5,
                "{policy:?} sample {i} rank {r}: max abs diff {diff}"
            );
        }

        let grads = y.mul(gt).sum().backward();
        let ga = to_vec(layer.lora_a.grad(&grads).expect("A has a gradient"));
        let gb = to_vec(layer.lora_b.grad(&grads).expect("B has a gradient"));
        let (wa, wb) = reference.grads(&xs, &g, &ranks, &|r| policy.scale(4.0, r) as f32);
        assert!(
            max_abs_diff(&ga, &wa) <= 1e-5,
            "{policy:?} dA diff {}",
            max_abs_diff(&ga, &wa)
        );
        assert!(
            max_abs_diff(&gb, &wb) <= 1e-5,
            "{policy:?} dB diff {}",
            max_abs_diff(&gb, &wb)
        );
        // The frozen base gets no gradient.
        assert!(layer.base.weight.grad(&grads).is_none());
    }
}

#[test]
fn components_beyond_a_samples_rank_get_zero_gradient_from_it() {
    let device = Default::default();
    let layer = layer::<CpuAd>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device);
    let ranks = SampleRanks::new(vec![3, 8]);
    let x = tensor::<CpuAd, 3>([2, SEQ, D_IN], 31, &device);
    // Only sample 0 (rank 3) contributes to the loss.
    let y = layer.forward(x, &ranks);
    let loss = y.slice([0..1, 0..SEQ, 0..D_OUT]).sum();
    let grads = loss.backward();
    let ga = to_vec(layer.lora_a.grad(&grads).unwrap());
    let gb = to_vec(layer.lora_b.grad(&grads).unwrap());
    for j in 0..R_MAX {
        let row = &ga[j * D_IN..(j + 1) * D_IN];
        let col: Vec<f32> = (0..D_OUT).map(|o| gb[o * R_MAX + j]).collect();
        if j < 3 {
            assert!(
                row.iter().any(|v| *v != 0.0),
                "component {j} within rank must learn"
            );
        } else {
            assert!(
                row.iter().all(|v| *v == 0.0),
                "A row {j} beyond rank 3 got {row:?}"
            );
            assert!(
                col.iter().all(|v| *v == 0.0),
                "B column {j} beyond rank 3 got {col:?}"
            );
        }
    }
}

#[test]
fn learned_scale_is_used_per_rank_and_trained() {
    let device = Default::default();
    let layer = layer::<CpuAd>(D_IN, D_OUT, R_MAX, ScalePolicy::Learned, &device);
    let reference = Reference::of(&layer);
    let ranks = vec![2, 0, 5];
    let xs = values(3 * SEQ * D_IN, 41);
    let x = Tensor::<CpuAd, 3>::from_data(TensorData::new(xs.clone(), [3, SEQ, D_IN]), &device);
    let y = layer.forward(x, &SampleRanks::new(ranks.clone()));
    let got = to_vec(y.clone());
    for (i, &r) in ranks.iter().enumerate() {
        let s = if r == 0 { 0.0 } else { 0.5 + r as f32 * 0.25 };
        let want = reference.forward(&xs[i * SEQ * D_IN..(i + 1) * SEQ * D_IN], r, s);
        let diff = max_abs_diff(&got[i * SEQ * D_OUT..(i + 1) * SEQ * D_OUT], &want);
        assert!(diff <= 1e-5, "sample {i}: {diff}");
    }
    let grads = y.sum().backward();
    let gs = to_vec(layer.rank_scale.as_ref().unwrap().grad(&grads).unwrap());
    // Only the scales of ranks present in the batch (2 and 5) receive a gradient.
    for (idx, g) in gs.iter().enumerate() {
        let r = idx + 1;
        assert_eq!(*g != 0.0, r == 2 || r == 5, "rank {r} scale gradient {g}");
    }
}

#[test]
fn zero_initialised_b_leaves_the_base_output_unchanged() {
    let device = Default::default();
    let layer = FlexiLinearConfig::new(D_IN, D_OUT, R_MAX)
        .with_bias(true)
        .init::<Cpu>(&device);
    assert!(to_vec(layer.lora_b.val()).iter().all(|v| *v == 0.0));
    // PEFT init: A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)), not all zero.
    let a = to_vec(layer.lora_a.val());
    let bound = 1.0 / (D_IN as f32).sqrt();
    assert!(a.iter().all(|v| v.abs() <= bound) && a.iter().any(|v| *v != 0.0));
    let x = tensor::<Cpu, 3>([4, SEQ, D_IN], 51, &device);
    let base = to_vec(layer.forward_base(x.clone()));
    let adapted = to_vec(layer.forward(x, &SampleRanks::new(vec![8, 4, 1, 0])));
    assert_eq!(base, adapted);
}

#[test]
fn merged_weight_as_a_plain_linear_equals_the_adapter_at_that_rank() {
    let device = Default::default();
    for policy in [
        ScalePolicy::AlphaOverRank,
        ScalePolicy::AlphaOverSqrtRank,
        ScalePolicy::Learned,
    ] {
        let layer = layer::<Cpu>(D_IN, D_OUT, R_MAX, policy, &device);
        let x = tensor::<Cpu, 3>([2, SEQ, D_IN], 61, &device);
        for r in [0, 1, 4, 8] {
            let merged = layer.merged_linear(r).forward(x.clone());
            let adapted = layer.forward(x.clone(), &SampleRanks::uniform(2, r));
            let diff = max_abs_diff(&to_vec(merged), &to_vec(adapted));
            assert!(diff <= 1e-5, "{policy:?} rank {r}: {diff}");
        }
        assert_eq!(layer.merged_weight(3).dims(), [D_OUT, D_IN]);
    }
}

#[test]
fn finite_differences_agree_with_autodiff() {
    // Small case: loss = sum(y^2) is quadratic in each single parameter, so the central
    // difference is exact up to f32 rounding.
    let device = Default::default();
    let (d_in, d_out, r_max) = (3, 2, 4);
    let base = layer::<CpuAd>(d_in, d_out, r_max, ScalePolicy::AlphaOverSqrtRank, &device);
    let x = tensor::<CpuAd, 3>([2, 2, d_in], 71, &device);
    let ranks = SampleRanks::new(vec![2, 4]);
    let loss_of = |a: Vec<f32>, b: Vec<f32>| -> f64 {
        let mut l = base.clone();
        l.lora_a = Param::from_tensor(Tensor::from_data(
            TensorData::new(a, [r_max, d_in]),
            &device,
        ));
        l.lora_b = Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [d_out, r_max]),
            &device,
        ));
        let y = l.forward(x.clone(), &ranks);
        to_vec(y.clone().mul(y).sum())[0] as f64
    };
    let y = base.forward(x.clone(), &ranks);
    let grads = y.clone().mul(y).sum().backward();
    let ga = to_vec(base.lora_a.grad(&grads).unwrap());
    let gb = to_vec(base.lora_b.grad(&grads).unwrap());
    let a0 = to_vec(base.lora_a.val());
    let b0 = to_vec(base.lora_b.val());
    let eps = 1e-2f32;
    for i in 0..a0.len() {
        let (mut p, mut m) = (a0.clone(), a0.clone());
        p[i] += eps;
        m[i] -= eps;
        let fd = (loss_of(p, b0.clone()) - loss_of(m, b0.clone())) / (2.0 * eps as f64);
        assert!(
            (fd - ga[i] as f64).abs() <= 1e-3 * (1.0 + fd.abs()),
            "dA[{i}]: fd {fd} vs {}",
            ga[i]
        );
    }
    for i in 0..b0.len() {
        let (mut p, mut m) = (b0.clone(), b0.clone());
        p[i] += eps;
        m[i] -= eps;
        let fd = (loss_of(a0.clone(), p) - loss_of(a0.clone(), m)) / (2.0 * eps as f64);
        assert!(
            (fd - gb[i] as f64).abs() <= 1e-3 * (1.0 + fd.abs()),
            "dB[{i}]: fd {fd} vs {}",
            gb[i]
        );
    }
}

#[test]
fn dylora_frozen_prefix_trains_only_the_last_component() {
    let device = Default::default();
    let layer = layer::<CpuAd>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device);
    let x = tensor::<CpuAd, 3>([2, SEQ, D_IN], 81, &device);
    let plain = to_vec(layer.forward(x.clone(), &SampleRanks::uniform(2, 5)));
    let y = layer.forward(x, &SampleRanks::uniform(2, 5).with_frozen_prefix(true));
    // Same values, only the gradient flow differs.
    assert!(max_abs_diff(&plain, &to_vec(y.clone())) <= 1e-6);
    let grads = y.sum().backward();
    let ga = to_vec(layer.lora_a.grad(&grads).unwrap());
    let gb = to_vec(layer.lora_b.grad(&grads).unwrap());
    for j in 0..R_MAX {
        let learns = ga[j * D_IN..(j + 1) * D_IN].iter().any(|v| *v != 0.0);
        let learns_b = (0..D_OUT).any(|o| gb[o * R_MAX + j] != 0.0);
        assert_eq!(learns, j == 4, "A component {j}");
        assert_eq!(learns_b, j == 4, "B component {j}");
    }
}

#[test]
fn same_module_runs_on_flex_and_autodiff_flex() {
    let device = Default::default();
    let trained = layer::<CpuAd>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device);
    let inner = trained.valid(); // the same module on the plain backend
    let ranks = SampleRanks::new(vec![0, 2, 8]);
    let x_ad = tensor::<CpuAd, 3>([3, SEQ, D_IN], 91, &device);
    let x = tensor::<Cpu, 3>([3, SEQ, D_IN], 91, &device);
    let a = to_vec(trained.forward(x_ad, &ranks));
    let b = to_vec(inner.forward(x, &ranks));
    assert_eq!(a, b);
    // Two-dimensional input (tokens as the batch) works too.
    let x2 = tensor::<Cpu, 2>([3, D_IN], 92, &device);
    assert_eq!(inner.forward(x2, &ranks).dims(), [3, D_OUT]);
}

#[test]
fn bad_ranks_and_shapes_are_typed_errors_naming_the_values() {
    let device = Default::default();
    let layer = layer::<Cpu>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device);
    let x = tensor::<Cpu, 3>([2, SEQ, D_IN], 1, &device);
    let err = layer
        .try_forward(x.clone(), &SampleRanks::new(vec![2, 9]))
        .unwrap_err();
    assert_eq!(
        err,
        FlexiError::RankTooLarge {
            sample: 1,
            rank: 9,
            r_max: 8
        }
    );
    assert!(err.to_string().contains("rank 9") && err.to_string().contains("r_max = 8"));
    let err = layer
        .try_forward(x.clone(), &SampleRanks::new(vec![2, 2, 2]))
        .unwrap_err();
    assert_eq!(err, FlexiError::BatchMismatch { ranks: 3, batch: 2 });
    let empty = Tensor::<Cpu, 3>::zeros([0, SEQ, D_IN], &device);
    assert_eq!(
        layer
            .try_forward(empty, &SampleRanks::new(vec![]))
            .unwrap_err(),
        FlexiError::EmptyBatch
    );
    let wrong = tensor::<Cpu, 3>([2, SEQ, D_IN + 1], 1, &device);
    assert_eq!(
        layer
            .try_forward(wrong, &SampleRanks::uniform(2, 1))
            .unwrap_err(),
        FlexiError::InputDim {
            expected: D_IN,
            got: D_IN + 1
        }
    );
    let err = layer
        .try_forward(x, &SampleRanks::new(vec![2, 3]).with_frozen_prefix(true))
        .unwrap_err();
    assert!(matches!(
        err,
        FlexiError::FrozenPrefixNeedsUniformRank { .. }
    ));
    let err = FlexiLinearConfig::new(4, 4, 0)
        .try_init::<Cpu>(&device)
        .unwrap_err();
    assert!(err.to_string().contains("r_max = 0"), "{err}");
    let err = FlexiLinearConfig::new(4, 4, 2)
        .with_dropout(1.5)
        .try_init::<Cpu>(&device)
        .unwrap_err();
    assert!(err.to_string().contains("dropout = 1.5"), "{err}");
}

#[test]
#[should_panic(expected = "sample 0 asks for LoRA rank 12, but the adapter has r_max = 8")]
fn forward_panics_with_the_values_when_rank_exceeds_r_max() {
    let device = Default::default();
    let layer = layer::<Cpu>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device);
    let x = tensor::<Cpu, 3>([1, SEQ, D_IN], 1, &device);
    let _ = layer.forward(x, &SampleRanks::new(vec![12]));
}

#[test]
fn adalora_svd_form_computes_b_diag_e_a() {
    let device = Default::default();
    let mut layer = FlexiLinearConfig::new(64, 48, 8)
        .with_svd_form(true)
        .with_alpha(8.0)
        .init::<CpuAd>(&device);
    // PEFT AdaLoRA init: E = 0 (so the base output is unchanged), A, B ~ N(0, 0.02).
    assert!(
        to_vec(layer.lora_e.as_ref().unwrap().val())
            .iter()
            .all(|v| *v == 0.0)
    );
    for (name, v) in [
        ("A", to_vec(layer.lora_a.val())),
        ("B", to_vec(layer.lora_b.val())),
    ] {
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.005 && (0.016..0.024).contains(&std),
            "{name}: mean {mean} std {std}"
        );
    }
    let x = tensor::<CpuAd, 3>([2, SEQ, 64], 101, &device);
    let ranks = SampleRanks::uniform(2, 8);
    assert_eq!(
        to_vec(layer.forward_base(x.clone())),
        to_vec(layer.forward(x.clone(), &ranks))
    );

    // Non-zero E with one pruned component: y = W0 x + (alpha/r) B diag(E) A x.
    let e = vec![1.0f32, -0.5, 0.0, 2.0, 0.25, 0.0, 1.5, -1.0];
    layer.lora_e = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(e.clone(), [8]),
        &device,
    )));
    let (w0, a, b) = (
        to_vec(layer.base.weight.val()),
        to_vec(layer.lora_a.val()),
        to_vec(layer.lora_b.val()),
    );
    let xs = to_vec(x.clone());
    let y = layer.forward(x.clone(), &ranks);
    let got = to_vec(y.clone());
    let mut worst = 0f32;
    for t in 0..2 * SEQ {
        let xt = &xs[t * 64..(t + 1) * 64];
        for o in 0..48 {
            let base: f32 = (0..64).map(|k| xt[k] * w0[k * 48 + o]).sum();
            let lora: f32 = (0..8)
                .map(|j| b[o * 8 + j] * e[j] * (0..64).map(|k| a[j * 64 + k] * xt[k]).sum::<f32>())
                .sum();
            worst = worst.max((got[t * 48 + o] - (base + 1.0 * lora)).abs());
        }
    }
    assert!(worst <= 1e-5, "max abs diff {worst}");
    let merged = to_vec(layer.valid().merged_linear(8).forward(x.clone().inner()));
    assert!(max_abs_diff(&merged, &got) <= 1e-5);
    // E is trainable and its pruned entries still get a gradient (AdaLoRA may revive them).
    let grads = y.sum().backward();
    let ge = to_vec(layer.lora_e.as_ref().unwrap().grad(&grads).unwrap());
    assert!(ge.iter().all(|g| *g != 0.0), "{ge:?}");
}

#[test]
fn a_rank_argument_shared_by_layers_of_other_settings_gives_each_its_own_mask() {
    // The mixed-rank prefix mask is built once per rank argument and reused by every layer
    // with the same settings; a layer with another alpha, scale policy, r_max or backend
    // must not pick up a mask built for another.
    let device = Default::default();
    let ranks = SampleRanks::new(vec![1, 3, 0]);
    let x = tensor::<Cpu, 3>([3, SEQ, D_IN], 31, &device);
    let mut layers = vec![
        layer::<Cpu>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device),
        layer::<Cpu>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverSqrtRank, &device),
        layer::<Cpu>(D_IN, D_OUT, R_MAX, ScalePolicy::Learned, &device),
        layer::<Cpu>(D_IN, D_OUT, 3, ScalePolicy::AlphaOverRank, &device),
    ];
    let mut other_alpha = layer::<Cpu>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device);
    other_alpha.alpha = 9.0;
    layers.push(other_alpha);
    for (i, l) in layers.iter().enumerate() {
        let shared = to_vec(l.forward(x.clone(), &ranks));
        let fresh = to_vec(l.forward(x.clone(), &SampleRanks::new(vec![1, 3, 0])));
        assert_eq!(shared, fresh, "layer {i}");
    }
    // The same argument under autodiff (another backend type) as well.
    let ad = layer::<CpuAd>(D_IN, D_OUT, R_MAX, ScalePolicy::AlphaOverRank, &device);
    let x_ad = tensor::<CpuAd, 3>([3, SEQ, D_IN], 31, &device);
    assert_eq!(
        to_vec(ad.forward(x_ad, &ranks)),
        to_vec(layers[0].forward(x, &SampleRanks::new(vec![1, 3, 0])))
    );
}
