//! AdaLoRA: the budget schedule against PEFT's formula, pruning to exactly the budget, the
//! importance EMAs and the orthogonality penalty against hand-computed values.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flexi_burn::{FlexiLinear, FlexiLinearConfig, SampleRanks};
use train::adalora::{AdaLoraAllocator, AdaLoraConfig};

type B = Autodiff<Flex>;

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    layers: Vec<FlexiLinear<B>>,
}

/// Typed access to the adapted layers, as models provide it (paths as Burn's visitors name
/// them: `layers.{i}`).
impl<B: Backend> flexi_burn::Adapters<B> for Tiny<B> {
    fn adapters(&self) -> Vec<(String, &FlexiLinear<B>)> {
        (self.layers.adapters().into_iter())
            .map(|(p, l)| (format!("layers.{p}"), l))
            .collect()
    }

    fn adapters_mut(&mut self) -> Vec<(String, &mut FlexiLinear<B>)> {
        (self.layers.adapters_mut().into_iter())
            .map(|(p, l)| (format!("layers.{p}"), l))
            .collect()
    }
}

fn to_vec<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn tiny(r: usize) -> Tiny<B> {
    let device = Default::default();
    B::seed(&device, 3);
    let layers = (0..3)
        .map(|i| {
            let mut l = FlexiLinearConfig::new(5, 4, r)
                .with_svd_form(true)
                .init::<B>(&device);
            let e: Vec<f32> = (0..r).map(|j| 0.1 + 0.05 * (i * r + j) as f32).collect();
            l.lora_e = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(e, [r]),
                &device,
            )));
            l
        })
        .collect();
    Tiny { layers }
}

fn loss(m: &Tiny<B>) -> Tensor<B, 1> {
    let device = Default::default();
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(
            (0..10).map(|v| (v as f32 * 0.37).sin()).collect::<Vec<_>>(),
            [2, 5],
        ),
        &device,
    );
    let ranks = SampleRanks::uniform(2, m.layers[0].r_max());
    let mut total = Tensor::<B, 1>::zeros([1], &device);
    for l in &m.layers {
        let y = l.forward(x.clone(), &ranks);
        total = total.add(y.powf_scalar(2.0).sum());
    }
    total
}

#[test]
fn budget_follows_the_cubic_schedule() {
    let c = AdaLoraConfig {
        init_r: 12,
        target_r: 8,
        tinit: 10,
        tfinal: 20,
        delta_t: 5,
        ..Default::default()
    };
    let n = 4; // layers: init budget 48, target 32
    assert_eq!(c.budget(5, 100, n), (48, false));
    assert_eq!(c.budget(10, 100, n), (48, false));
    // step 11: 16 * (1 - 1/70)^3 + 32 = 47.32 -> 47, no pruning (11 % 5 != 0)
    assert_eq!(c.budget(11, 100, n), (47, false));
    // step 45: 16 * 0.5^3 + 32 = 34, pruning
    assert_eq!(c.budget(45, 100, n), (34, true));
    // step 80 = total - tfinal: 16 * 0 + 32
    assert_eq!(c.budget(80, 100, n), (32, true));
    assert_eq!(c.budget(81, 100, n), (32, true));
    for step in 11..=80 {
        let mul: f64 = 1.0 - (step - 10) as f64 / 70.0;
        let want = (16.0 * mul.powi(3) + 32.0) as usize;
        assert_eq!(c.budget(step, 100, n).0, want, "step {step}");
    }
    assert!(
        AdaLoraConfig {
            target_r: 16,
            ..Default::default()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn pruning_keeps_exactly_the_budget_and_drops_the_lowest_scores() {
    let r = 6;
    let config = AdaLoraConfig {
        init_r: r,
        target_r: 2,
        tinit: 1,
        tfinal: 2,
        delta_t: 1,
        ..Default::default()
    };
    let total = 10;
    let mut alloc = AdaLoraAllocator::new(config.clone(), total);
    let mut model = tiny(r);
    for step in 1..=total {
        let grads = loss(&model).backward();
        let snap = alloc.snapshot(&model, &GradientsParams::from_grads(grads, &model));
        model = alloc.update_and_allocate(model, &snap, step);
        let kept: usize = model
            .layers
            .iter()
            .map(|l| {
                to_vec(l.lora_e.as_ref().unwrap().val())
                    .iter()
                    .filter(|v| **v != 0.0)
                    .count()
            })
            .sum();
        let (budget, _) = config.budget(step, total, 3);
        assert_eq!(
            kept, budget,
            "step {step}: kept {kept} triplets, budget {budget}"
        );
        if step == 4 {
            // The pruned triplets are the lowest-scoring ones.
            let mut scores = Vec::new();
            for (i, l) in model.layers.iter().enumerate() {
                let s = alloc.triplet_scores(&format!("layers.{i}"), r, 5, 4);
                let e = to_vec(l.lora_e.as_ref().unwrap().val());
                scores.extend(s.into_iter().zip(e).map(|(s, e)| (s, e != 0.0)));
            }
            let max_pruned = scores
                .iter()
                .filter(|(_, k)| !k)
                .map(|(s, _)| *s)
                .fold(f32::MIN, f32::max);
            let min_kept = scores
                .iter()
                .filter(|(_, k)| *k)
                .map(|(s, _)| *s)
                .fold(f32::MAX, f32::min);
            assert!(
                max_pruned <= min_kept,
                "pruned {max_pruned} > kept {min_kept}"
            );
        }
    }
    assert_eq!(alloc.rank_pattern().len(), 3);
    assert_eq!(
        alloc
            .rank_pattern()
            .values()
            .flatten()
            .filter(|k| **k)
            .count(),
        6
    );
    // Masked entries stay trainable parameters.
    assert!(model.layers[0].lora_e.as_ref().unwrap().is_require_grad());
}

#[test]
fn importance_emas_follow_the_formula() {
    let r = 2;
    let config = AdaLoraConfig {
        init_r: r,
        target_r: 1,
        tinit: 100,
        beta1: 0.5,
        beta2: 0.25,
        ..Default::default()
    };
    let mut alloc = AdaLoraAllocator::new(config, 1000);
    let model = tiny(r);
    let e = to_vec(model.layers[1].lora_e.as_ref().unwrap().val());
    // Two updates with the same parameters and gradients: I = |p g|,
    // Ibar1 = 0.5 I, Ubar1 = 0.75 |I - Ibar1| = 0.375 I;
    // Ibar2 = 0.5 Ibar1 + 0.5 I = 0.75 I, Ubar2 = 0.25 Ubar1 + 0.75 |I - Ibar2| = 0.28125 I.
    let grads = loss(&model).backward();
    let ge = to_vec(
        model.layers[1]
            .lora_e
            .as_ref()
            .unwrap()
            .grad(&grads)
            .unwrap(),
    );
    let ga = to_vec(model.layers[1].lora_a.grad(&grads).unwrap());
    let gb = to_vec(model.layers[1].lora_b.grad(&grads).unwrap());
    let a = to_vec(model.layers[1].lora_a.val());
    let b = to_vec(model.layers[1].lora_b.val());
    let snap = alloc.snapshot(&model, &GradientsParams::from_grads(grads, &model));
    let model = alloc.update_and_allocate(model, &snap, 1);
    let _ = alloc.update_and_allocate(model, &snap, 2);
    let s = |p: f32, g: f32| {
        let i = (p * g).abs();
        (0.75 * i) * (0.28125 * i)
    };
    let scores = alloc.triplet_scores("layers.1", r, 5, 4);
    for t in 0..r {
        let se = s(e[t], ge[t]);
        let sa = (0..5).map(|k| s(a[t * 5 + k], ga[t * 5 + k])).sum::<f32>() / 5.0;
        let sb = (0..4).map(|o| s(b[o * r + t], gb[o * r + t])).sum::<f32>() / 4.0;
        let want = se + sa + sb;
        assert!(
            (scores[t] - want).abs() <= 1e-6 * want.abs().max(1e-12),
            "triplet {t}: {} vs {want}",
            scores[t]
        );
    }
}

#[test]
fn orthogonality_penalty_matches_hand_values() {
    let device = Default::default();
    let mut l = FlexiLinearConfig::new(2, 3, 2)
        .with_svd_form(true)
        .init::<B>(&device);
    // A A^T = diag(1, 4) -> ||. - I|| = 3;  B = [[1, 1], [0, 1], [0, 0]]:
    // B^T B = [[1, 1], [1, 2]] -> ||. - I|| = sqrt(0 + 1 + 1 + 1) = sqrt 3.
    l.lora_a = Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0, 2.0], [2, 2]),
        &device,
    ));
    l.lora_b = Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![1.0f32, 1.0, 0.0, 1.0, 0.0, 0.0], [3, 2]),
        &device,
    ));
    let model = Tiny { layers: vec![l] };
    let alloc = AdaLoraAllocator::new(
        AdaLoraConfig {
            orth_reg_weight: 0.5,
            ..Default::default()
        },
        10,
    );
    let p = to_vec(alloc.orth_penalty(&model, &device))[0];
    let want = 0.5 * (3.0 + 3f32.sqrt()) / 2.0;
    assert!((p - want).abs() < 1e-6, "{p} vs {want}");
}

#[test]
fn the_final_mask_is_forced_at_total_minus_tfinal_whatever_delta_t() {
    // PEFT masks to the target budget at step total - tfinal even when delta_t does not
    // divide it (`force_mask=True`), then keeps that pattern. Here total 10, tfinal 3: the
    // final step is 7, delta_t 4 prunes only at step 4 on its own.
    let r = 6;
    let config = AdaLoraConfig {
        init_r: r,
        target_r: 2,
        tinit: 1,
        tfinal: 3,
        delta_t: 4,
        ..Default::default()
    };
    let total = 10;
    let mut alloc = AdaLoraAllocator::new(config.clone(), total);
    let mut model = tiny(r);
    let mut kept_by_step = Vec::new();
    for step in 1..=total {
        let grads = loss(&model).backward();
        let snap = alloc.snapshot(&model, &GradientsParams::from_grads(grads, &model));
        model = alloc.update_and_allocate(model, &snap, step);
        let kept: usize = model
            .layers
            .iter()
            .map(|l| {
                to_vec(l.lora_e.as_ref().unwrap().val())
                    .iter()
                    .filter(|v| **v != 0.0)
                    .count()
            })
            .sum();
        kept_by_step.push(kept);
    }
    // 3 layers: init budget 18, target 6. Step 4 masks to 12 * (1 - 3/6)^3 + 6 = 7.5 -> 7;
    // step 7 must be forced to the target 6 (without the force, steps 8-10 would keep
    // step 4's pattern of 7), and 8-10 keep its pattern.
    assert_eq!(kept_by_step, vec![18, 18, 18, 7, 7, 7, 6, 6, 6, 6]);
    assert_eq!(
        kept_by_step[6], 6,
        "forced at total - tfinal: {kept_by_step:?}"
    );
    assert!(
        kept_by_step[7..].iter().all(|k| *k == 6),
        "{kept_by_step:?}"
    );
    assert_eq!(
        alloc
            .rank_pattern()
            .values()
            .flatten()
            .filter(|k| **k)
            .count(),
        6
    );
}
