//! AdaLoRA (SPEC 2.3, as PEFT implements it) on top of [`FlexiLinear`]'s SVD form.
//!
//! - Every adapted layer is a `FlexiLinear` with `svd_form = true` and `r_max = init_r`:
//!   `ΔW = B diag(E) A`, scale `alpha / init_r`.
//! - Importance of each parameter `I = |p * grad|`, smoothed `Ibar = b1 Ibar + (1-b1) I`,
//!   uncertainty `Ubar = b2 Ubar + (1-b2) |I - Ibar|`, score `s = Ibar * Ubar`.
//! - Score of triplet `i` of a layer: `s(E_i) + mean_j s(A_ij) + mean_j s(B_ji)`.
//! - Budget (total kept triplets) follows a cubic schedule from `init_r * n` to `target_r * n`
//!   between `tinit` and `total - tfinal`; every `delta_t` steps the lowest-scoring triplets are
//!   pruned by zeroing their `E` entry, after the optimizer step; at `total - tfinal` the mask
//!   to the target budget is forced (PEFT's `force_mask`) whatever `delta_t` is. After it the
//!   last rank pattern is kept.
//! - Orthogonality penalty `w * mean(||A A^T - I||_F, ||B^T B - I||_F)` over all A and B.
//!
//! Layers are found generically: any [`FlexiLinear`] inside any Burn module (a visitor that
//! follows module paths), so model code needs no AdaLoRA hook.
//!
//! `alpha` is the run's adapter alpha (`TrainConfig`'s `adapter.alpha`, default 16, the
//! project's default for every method), where PEFT's `AdaLoraConfig` defaults `lora_alpha` to
//! 8: set `adapter.alpha = 8` to match PEFT's default scale `8 / init_r`.
//!
//! One deliberate difference to PEFT: PEFT prunes every triplet whose score is `<=` the k-th
//! smallest, which can prune more than k on ties; here exactly the k lowest are pruned (ties
//! broken by position), so the kept count always equals the budget.

use std::collections::BTreeMap;

use crate::params::HostTensor;
use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use flexi_burn::Adapters;
use serde::{Deserialize, Serialize};

/// AdaLoRA hyper-parameters (PEFT defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaLoraConfig {
    /// Initial rank of every layer (the adapter's `r_max`).
    pub init_r: usize,
    /// Average target rank per layer.
    pub target_r: usize,
    /// Steps of warm-up at the initial budget.
    pub tinit: usize,
    /// Final steps at the target budget with a fixed pattern.
    pub tfinal: usize,
    /// Prune every `delta_t` steps.
    pub delta_t: usize,
    /// EMA factor of the importance.
    pub beta1: f64,
    /// EMA factor of the uncertainty.
    pub beta2: f64,
    /// Weight of the orthogonality penalty.
    pub orth_reg_weight: f64,
}

impl Default for AdaLoraConfig {
    fn default() -> Self {
        Self {
            init_r: 12,
            target_r: 8,
            tinit: 0,
            tfinal: 0,
            delta_t: 1,
            beta1: 0.85,
            beta2: 0.85,
            orth_reg_weight: 0.5,
        }
    }
}

impl AdaLoraConfig {
    /// Budget (kept triplets over `n_layers` layers) at optimizer step `step` (1-based, as
    /// PEFT's `global_step` after the first step), and whether to prune at this step.
    pub fn budget(&self, step: usize, total_steps: usize, n_layers: usize) -> (usize, bool) {
        let init = self.init_r * n_layers;
        let target = self.target_r * n_layers;
        if step <= self.tinit {
            (init, false)
        } else if step > total_steps.saturating_sub(self.tfinal) {
            (target, true)
        } else {
            let span = total_steps.saturating_sub(self.tfinal + self.tinit).max(1) as f64;
            let mul = 1.0 - (step - self.tinit) as f64 / span;
            let budget = ((init - target) as f64 * mul.powi(3) + target as f64) as usize;
            (budget, step.is_multiple_of(self.delta_t.max(1)))
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.init_r == 0 || self.target_r == 0 || self.target_r > self.init_r {
            return Err(format!(
                "adalora: need 0 < target_r ({}) <= init_r ({})",
                self.target_r, self.init_r
            ));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(format!("adalora: {name} = {b}, expected a value in [0, 1)"));
            }
        }
        Ok(())
    }
}

/// Which factor of a `FlexiLinear` a parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Factor {
    A,
    B,
    E,
}

/// The factors of every adapted layer by `(layer path, factor)`: their values, or with
/// `grads` their gradients (layers without a gradient are skipped).
fn collect<B: AutodiffBackend, M: Adapters<B>>(
    model: &M,
    grads: Option<&GradientsParams>,
) -> BTreeMap<(String, Factor), HostTensor> {
    fn host<B: AutodiffBackend, const D: usize>(
        param: &Param<Tensor<B, D>>,
        grads: Option<&GradientsParams>,
    ) -> Option<HostTensor> {
        match grads {
            Some(g) => g.get::<B::InnerBackend, D>(param.id).map(HostTensor::of),
            None => Some(HostTensor::of(param.val().inner())),
        }
    }
    let mut out = BTreeMap::new();
    for (path, l) in model.adapters() {
        let entries = [
            (Factor::A, host(&l.lora_a, grads)),
            (Factor::B, host(&l.lora_b, grads)),
            (Factor::E, l.lora_e.as_ref().and_then(|e| host(e, grads))),
        ];
        for (factor, value) in entries {
            if let Some(v) = value {
                out.insert((path.clone(), factor), v);
            }
        }
    }
    out
}

/// Gradients of the FlexiLinear factors, copied to the host before the optimizer consumes them.
#[derive(Clone, Debug, Default)]
pub struct GradSnapshot(BTreeMap<(String, Factor), HostTensor>);

/// Importance state and pruning of AdaLoRA.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdaLoraAllocator {
    config: AdaLoraConfig,
    total_steps: usize,
    /// Smoothed importance and uncertainty per (layer, factor).
    ema: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
    /// Kept triplets per layer after the last pruning (`true` = kept).
    rank_pattern: BTreeMap<String, Vec<bool>>,
}

fn key_name(layer: &str, f: Factor) -> String {
    format!("{layer}.{f:?}")
}

impl AdaLoraAllocator {
    /// A fresh allocator for a run of `total_steps` optimizer steps.
    pub fn new(config: AdaLoraConfig, total_steps: usize) -> Self {
        Self {
            config,
            total_steps,
            ema: BTreeMap::new(),
            rank_pattern: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdaLoraConfig {
        &self.config
    }

    /// Kept triplets per layer after the last pruning.
    pub fn rank_pattern(&self) -> &BTreeMap<String, Vec<bool>> {
        &self.rank_pattern
    }

    /// Copies the factor gradients out of `grads` (call before the optimizer step).
    pub fn snapshot<B: AutodiffBackend, M: Adapters<B>>(
        &self,
        model: &M,
        grads: &GradientsParams,
    ) -> GradSnapshot {
        GradSnapshot(collect(model, Some(grads)))
    }

    /// After optimizer step `step` (1-based): updates the importance EMAs from the new
    /// parameter values and the snapshot gradients, and prunes `E` to the budget when the
    /// schedule says so. Returns the model with its `E` vectors masked.
    pub fn update_and_allocate<B: AutodiffBackend, M: Adapters<B>>(
        &mut self,
        mut model: M,
        grads: &GradSnapshot,
        step: usize,
    ) -> M {
        let final_from = self.total_steps.saturating_sub(self.config.tfinal);
        let values = collect(&model, None);
        let layers: Vec<String> = values
            .keys()
            .filter(|(_, f)| *f == Factor::E)
            .map(|(l, _)| l.clone())
            .collect();

        if step < final_from {
            self.update_importance(&values, grads);
        }
        let (budget, prune) = self.config.budget(step, self.total_steps, layers.len());
        // PEFT forces the final mask at `total - tfinal` even when `delta_t` does not divide
        // that step (`force_mask=True`); later steps keep its pattern.
        let prune = prune || step == final_from;
        if step <= final_from && prune {
            self.rank_pattern = self.select(&layers, &values, budget);
        }
        if prune && !self.rank_pattern.is_empty() {
            mask_e(&mut model, &self.rank_pattern);
        }
        model
    }

    fn update_importance(
        &mut self,
        values: &BTreeMap<(String, Factor), HostTensor>,
        grads: &GradSnapshot,
    ) {
        let (b1, b2) = (self.config.beta1 as f32, self.config.beta2 as f32);
        for (key, p) in values {
            let Some(g) = grads.0.get(key) else { continue };
            let entry = self
                .ema
                .entry(key_name(&key.0, key.1))
                .or_insert_with(|| (vec![0.0; p.values.len()], vec![0.0; p.values.len()]));
            for (i, (pv, gv)) in p.values.iter().zip(&g.values).enumerate() {
                let ipt = (pv * gv).abs();
                entry.0[i] = b1 * entry.0[i] + (1.0 - b1) * ipt;
                entry.1[i] = b2 * entry.1[i] + (1.0 - b2) * (ipt - entry.0[i]).abs();
            }
        }
    }

    /// Triplet scores of one layer: `s(E_i) + mean_j s(A_ij) + mean_j s(B_ji)`.
    pub fn triplet_scores(&self, layer: &str, r: usize, d_in: usize, d_out: usize) -> Vec<f32> {
        let score = |f: Factor| -> Vec<f32> {
            self.ema
                .get(&key_name(layer, f))
                .map(|(i, u)| i.iter().zip(u).map(|(a, b)| a * b).collect())
                .unwrap_or_default()
        };
        let (e, a, b) = (score(Factor::E), score(Factor::A), score(Factor::B));
        (0..r)
            .map(|i| {
                let se = e.get(i).copied().unwrap_or(0.0);
                let sa = if a.len() == r * d_in {
                    a[i * d_in..(i + 1) * d_in].iter().sum::<f32>() / d_in as f32
                } else {
                    0.0
                };
                let sb = if b.len() == d_out * r {
                    (0..d_out).map(|o| b[o * r + i]).sum::<f32>() / d_out as f32
                } else {
                    0.0
                };
                se + sa + sb
            })
            .collect()
    }

    /// Keeps the `budget` highest-scoring triplets over all layers.
    fn select(
        &self,
        layers: &[String],
        values: &BTreeMap<(String, Factor), HostTensor>,
        budget: usize,
    ) -> BTreeMap<String, Vec<bool>> {
        let mut all: Vec<(f32, usize, usize)> = Vec::new(); // (score, layer, triplet)
        let mut pattern: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        for (li, layer) in layers.iter().enumerate() {
            let Some(a) = values.get(&(layer.clone(), Factor::A)) else {
                continue;
            };
            let Some(b) = values.get(&(layer.clone(), Factor::B)) else {
                continue;
            };
            let (r, d_in, d_out) = (a.shape[0], a.shape[1], b.shape[0]);
            pattern.insert(layer.clone(), vec![true; r]);
            for (i, s) in self
                .triplet_scores(layer, r, d_in, d_out)
                .into_iter()
                .enumerate()
            {
                all.push((s, li, i));
            }
        }
        let prune = all.len().saturating_sub(budget);
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by(|&x, &y| all[x].0.total_cmp(&all[y].0).then(x.cmp(&y)));
        for &idx in order.iter().take(prune) {
            let (_, li, i) = all[idx];
            if let Some(v) = pattern.get_mut(&layers[li]) {
                v[i] = false;
            }
        }
        pattern
    }

    /// The orthogonality penalty `w * mean over A and B of ||P P^T - I||_F` (A: `A A^T`,
    /// B: `B^T B`), differentiable; zero when the model has no FlexiLinear.
    pub fn orth_penalty<B: AutodiffBackend, M: Adapters<B>>(
        &self,
        model: &M,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let mut sum: Option<Tensor<B, 1>> = None;
        let mut n = 0;
        for (_, l) in model.adapters() {
            let (a, b) = (l.lora_a.val(), l.lora_b.val());
            for cov in [
                a.clone().matmul(a.transpose()),
                b.clone().transpose().matmul(b),
            ] {
                let r = cov.dims()[0];
                let eye = Tensor::<B, 2>::eye(r, &cov.device());
                let norm = cov.sub(eye).powf_scalar(2.0).sum().sqrt();
                sum = Some(match sum.take() {
                    Some(s) => s.add(norm),
                    None => norm,
                });
                n += 1;
            }
        }
        match sum {
            Some(sum) => sum.mul_scalar(self.config.orth_reg_weight / n as f64),
            None => Tensor::zeros([1], device),
        }
    }
}

/// Zeroes the pruned triplets' `E` entries of every layer in `pattern` (`true` = kept).
fn mask_e<B: AutodiffBackend, M: Adapters<B>>(
    model: &mut M,
    pattern: &BTreeMap<String, Vec<bool>>,
) {
    for (path, l) in model.adapters_mut() {
        let (Some(keep), Some(e)) = (pattern.get(&path), l.lora_e.as_ref()) else {
            continue;
        };
        let shape = e.dims();
        if shape[0] != keep.len() {
            continue;
        }
        let mask: Vec<f32> = keep.iter().map(|k| if *k { 1.0 } else { 0.0 }).collect();
        l.lora_e = Some(crate::params::replace_values(e.clone(), |t| {
            let m = Tensor::from_data(TensorData::new(mask, shape), &t.device());
            t.mul(m)
        }));
    }
}
