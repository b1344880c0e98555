//! The nested-rank LoRA layer (SPEC 2.1).
//!
//! One adapter holds all ranks as prefixes: rank `r` uses the first `r` rows of `A` and the
//! first `r` columns of `B`. A batch may mix ranks; sample `i` computes
//!
//! ```text
//! h_i = W0 x_i + s(r_i) * B[:, :r_i] A[:r_i, :] x_i
//! ```
//!
//! implemented as a prefix mask on the rank intermediate, `((x A^T) ⊙ m_i) B^T`, which equals
//! slicing exactly and gives masked components zero gradient.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorData};

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::FlexiError;

/// `x [rows, d_in]` through a [`Linear`] (Burn layout `[d_in, d_out]`) as one 2-D matmul.
///
/// Prefer this over `Linear::forward` on `[batch, seq, d_in]`: Burn 0.21's generic linear
/// unsqueezes the weight to the input's rank, which makes its backward copy the transposed
/// weight into a contiguous buffer on every call, and runs a batched gemm per sample.
///
/// A weight stored in a half type (mixed precision, [`crate::precision`]) is multiplied in
/// that type and the result returned in `x`'s type.
pub fn linear_rows<B: Backend>(x: Tensor<B, 2>, layer: &Linear<B>) -> Tensor<B, 2> {
    crate::precision::linear_mixed(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// [`linear_rows`] for any input rank: `[..., d_in] -> [..., d_out]` through the 2-D view.
pub fn linear_nd<B: Backend, const D: usize>(x: Tensor<B, D>, layer: &Linear<B>) -> Tensor<B, D> {
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = linear_rows(x.reshape([rows, d_in]), layer);
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// How the LoRA update is scaled for a given rank `r`. Written `alpha_over_rank`,
/// `alpha_over_sqrt_rank` or `learned` in configuration files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalePolicy {
    /// `alpha / r`, DyLoRA's effective scale (the default).
    #[default]
    #[serde(alias = "AlphaOverRank")]
    AlphaOverRank,
    /// rsLoRA: `alpha / sqrt(r)`.
    #[serde(alias = "AlphaOverSqrtRank")]
    AlphaOverSqrtRank,
    /// One trainable scalar per rank, initialised to `alpha / r`.
    #[serde(alias = "Learned")]
    Learned,
}

/// The settings of a nested-rank LoRA adapter, wherever it is attached: the one definition
/// that the layer's [`FlexiLinearConfig`], the models' adapter configurations (which add the
/// target projections) and training configurations (which derive it from the method) share.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSettings {
    /// Largest rank; every smaller rank is a prefix of it.
    pub r_max: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// Rank-specific scale `s(r)`.
    pub scale: ScalePolicy,
    /// AdaLoRA's SVD form `B diag(E) A` (see [`FlexiLinearConfig::svd_form`]).
    pub svd_form: bool,
    /// Dropout on the adapter input (training only).
    pub dropout: f64,
}

impl LoraSettings {
    /// Rank `r_max`, `alpha`, scale `alpha / r`, no SVD form, no dropout.
    pub fn new(r_max: usize, alpha: f64) -> Self {
        Self {
            r_max,
            alpha,
            scale: ScalePolicy::AlphaOverRank,
            svd_form: false,
            dropout: 0.0,
        }
    }

    /// The configuration of one adapted `d_in -> d_out` layer with these settings.
    pub fn layer(&self, d_in: usize, d_out: usize) -> FlexiLinearConfig {
        FlexiLinearConfig::new(d_in, d_out, self.r_max)
            .with_alpha(self.alpha)
            .with_scale(self.scale)
            .with_svd_form(self.svd_form)
            .with_dropout(self.dropout)
    }
}

impl ScalePolicy {
    /// The fixed scale `s(r)` for `r >= 1` (the initial value for [`ScalePolicy::Learned`]).
    pub fn scale(&self, alpha: f64, rank: usize) -> f64 {
        if rank == 0 {
            return 0.0;
        }
        match self {
            ScalePolicy::AlphaOverRank | ScalePolicy::Learned => alpha / rank as f64,
            ScalePolicy::AlphaOverSqrtRank => alpha / (rank as f64).sqrt(),
        }
    }
}

/// The ranks of one batch: one entry per sample, `0` meaning "base model only".
///
/// This is the explicit rank argument of every adapted forward pass; models pass the same
/// value to every adapted layer, so a sample uses one rank throughout the network.
///
/// A batch that mixes ranks builds its per-sample prefix mask on the device once and every
/// adapted layer with the same settings reuses it (a model with 120 adapted projections would
/// otherwise upload 120 copies from the host per forward pass); clones share that cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleRanks {
    ranks: Vec<usize>,
    frozen_prefix: bool,
    masks: MaskCache,
}

/// The device masks built for one [`SampleRanks`] (see [`FlexiLinear`]'s prefix mask), keyed
/// by everything a mask depends on besides the ranks: backend and tensor rank (by type), the
/// device, the widest rank and the scale of each rank.
#[derive(Clone, Default)]
struct MaskCache(Arc<Mutex<Vec<Box<dyn Any + Send + Sync>>>>);

/// One cached mask.
struct MaskEntry<B: Backend, const D: usize> {
    device: B::Device,
    r_hi: usize,
    /// `s(r)` per sample as f32 bits (all 1.0 with a learned scale).
    scales: Vec<u32>,
    mask: Tensor<B, D>,
}

impl MaskCache {
    fn get_or_build<B: Backend, const D: usize>(
        &self,
        device: &B::Device,
        r_hi: usize,
        scales: &[f32],
        build: impl FnOnce() -> Tensor<B, D>,
    ) -> Tensor<B, D> {
        let bits: Vec<u32> = scales.iter().map(|s| s.to_bits()).collect();
        // A poisoned lock only means another thread panicked mid-lookup: the entries are
        // whole (pushed after being built), so keep using them.
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let hit = entries.iter().find_map(|e| {
            e.downcast_ref::<MaskEntry<B, D>>()
                .filter(|e| e.r_hi == r_hi && e.scales == bits && &e.device == device)
        });
        if let Some(e) = hit {
            return e.mask.clone();
        }
        let mask = build();
        entries.push(Box::new(MaskEntry::<B, D> {
            device: device.clone(),
            r_hi,
            scales: bits,
            mask: mask.clone(),
        }));
        mask
    }
}

impl fmt::Debug for MaskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskCache")
    }
}

/// Two rank arguments are equal when their ranks and mode are; the cache is not compared.
impl PartialEq for MaskCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for MaskCache {}

impl SampleRanks {
    /// Per-sample ranks.
    pub fn new(ranks: Vec<usize>) -> Self {
        Self {
            ranks,
            frozen_prefix: false,
            masks: MaskCache::default(),
        }
    }

    /// The same rank for each of `batch` samples.
    pub fn uniform(batch: usize, rank: usize) -> Self {
        Self::new(vec![rank; batch])
    }

    /// DyLoRA's "frozen" mode: with rank `b`, components `0..b-1` are detached so that only
    /// component `b-1` (the b-th) receives a gradient. Needs one rank for the whole batch.
    pub fn with_frozen_prefix(mut self, frozen: bool) -> Self {
        self.frozen_prefix = frozen;
        self
    }

    /// The ranks, one per sample.
    pub fn as_slice(&self) -> &[usize] {
        &self.ranks
    }

    /// Whether DyLoRA's frozen-prefix mode is on.
    pub fn frozen_prefix(&self) -> bool {
        self.frozen_prefix
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.ranks.is_empty()
    }

    /// The largest rank in the batch (0 for an empty batch).
    pub fn max(&self) -> usize {
        self.ranks.iter().copied().max().unwrap_or(0)
    }

    /// Mean rank over the samples.
    pub fn mean(&self) -> f64 {
        if self.ranks.is_empty() {
            return 0.0;
        }
        self.ranks.iter().sum::<usize>() as f64 / self.ranks.len() as f64
    }

    /// Checks the ranks against a batch size and an adapter's `r_max`.
    pub fn validate(&self, batch: usize, r_max: usize) -> crate::Result<()> {
        if batch == 0 || self.ranks.is_empty() {
            return Err(FlexiError::EmptyBatch);
        }
        if self.ranks.len() != batch {
            return Err(FlexiError::BatchMismatch {
                ranks: self.ranks.len(),
                batch,
            });
        }
        if let Some((sample, &rank)) = self.ranks.iter().enumerate().find(|(_, r)| **r > r_max) {
            return Err(FlexiError::RankTooLarge {
                sample,
                rank,
                r_max,
            });
        }
        if self.frozen_prefix && self.ranks.iter().any(|r| *r != self.ranks[0]) {
            return Err(FlexiError::FrozenPrefixNeedsUniformRank {
                ranks: self.ranks.clone(),
            });
        }
        Ok(())
    }
}

impl From<Vec<usize>> for SampleRanks {
    fn from(ranks: Vec<usize>) -> Self {
        Self::new(ranks)
    }
}

/// Configuration of a [`FlexiLinear`] layer.
#[derive(Config, Debug)]
pub struct FlexiLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Largest LoRA rank; every smaller rank is a prefix of this one.
    pub r_max: usize,
    /// LoRA alpha.
    #[config(default = 16.0)]
    pub alpha: f64,
    /// Rank-specific scale `s(r)`.
    #[config(default = "ScalePolicy::AlphaOverRank")]
    pub scale: ScalePolicy,
    /// Whether the base linear has a bias.
    #[config(default = false)]
    pub bias: bool,
    /// Dropout on the adapter's input (PEFT's `lora_dropout`), active only in training.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// AdaLoRA's SVD form: `ΔW = B diag(E) A` with a trainable singular-value vector
    /// `E [r_max]` (init 0) and `A, B ~ N(0, 0.02)` (PEFT's AdaLoRA init). Pruning a component
    /// sets its `E` entry to zero.
    #[config(default = false)]
    pub svd_form: bool,
}

impl FlexiLinearConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected| {
            Err(FlexiError::InvalidConfig {
                field,
                value,
                expected,
            })
        };
        if self.d_input == 0 {
            return bad("d_input", self.d_input.to_string(), "at least 1");
        }
        if self.d_output == 0 {
            return bad("d_output", self.d_output.to_string(), "at least 1");
        }
        if self.r_max == 0 {
            return bad("r_max", self.r_max.to_string(), "at least 1");
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad("alpha", self.alpha.to_string(), "a finite number > 0");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                self.dropout.to_string(),
                "a probability in [0, 1)",
            );
        }
        Ok(())
    }

    /// Builds the layer: a freshly initialised base linear (frozen) and PEFT-initialised
    /// factors (A kaiming-uniform with `a = sqrt(5)`, B = 0).
    ///
    /// # Panics
    /// If the configuration is invalid (see [`FlexiLinearConfig::validate`]); use
    /// [`FlexiLinearConfig::try_init`] to get the error instead.
    pub fn init<B: Backend>(&self, device: &B::Device) -> FlexiLinear<B> {
        match self.try_init(device) {
            Ok(layer) => layer,
            Err(e) => panic!("FlexiLinearConfig::init: {e}"),
        }
    }

    /// Like [`FlexiLinearConfig::init`], returning a configuration error instead of panicking.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> crate::Result<FlexiLinear<B>> {
        self.validate()?;
        let base = LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .init(device);
        self.try_wrap(base)
    }

    /// Wraps an existing (e.g. pretrained) linear. Its parameters are frozen.
    pub fn try_wrap<B: Backend>(&self, base: Linear<B>) -> crate::Result<FlexiLinear<B>> {
        self.validate()?;
        let [d_in, d_out] = base.weight.dims();
        if d_in != self.d_input || d_out != self.d_output {
            return Err(FlexiError::InvalidConfig {
                field: "base",
                value: format!("Linear [{d_in} -> {d_out}]"),
                expected: "a base linear of shape [d_input -> d_output]",
            });
        }
        let device = base.weight.device();
        let (lora_a, lora_b, lora_e) = if self.svd_form {
            // PEFT AdaLoRA: A, B ~ N(0, 0.02), E = 0.
            let normal = Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            };
            (
                normal.init([self.r_max, self.d_input], &device),
                normal.init([self.d_output, self.r_max], &device),
                Some(Initializer::Zeros.init([self.r_max], &device)),
            )
        } else {
            // PEFT LoRA: kaiming_uniform_(A, a=sqrt(5)) -> U(-1/sqrt(d_in), 1/sqrt(d_in)), B = 0.
            let a = Initializer::KaimingUniform {
                gain: 1.0 / 3.0f64.sqrt(),
                fan_out_only: false,
            }
            .init_with(
                [self.r_max, self.d_input],
                Some(self.d_input),
                None,
                &device,
            );
            (
                a,
                Initializer::Zeros.init([self.d_output, self.r_max], &device),
                None,
            )
        };
        let rank_scale = (self.scale == ScalePolicy::Learned).then(|| {
            let values: Vec<f32> = (1..=self.r_max)
                .map(|r| self.scale.scale(self.alpha, r) as f32)
                .collect();
            Param::from_tensor(Tensor::from_data(
                TensorData::new(values, [self.r_max]),
                &device,
            ))
        });
        Ok(FlexiLinear {
            base: base.no_grad(),
            lora_a,
            lora_b,
            rank_scale,
            lora_e,
            dropout: DropoutConfig::new(self.dropout).init(),
            alpha: self.alpha,
            scale: self.scale,
        })
    }
}

/// A frozen base linear plus nested LoRA factors; a drop-in for [`Linear`] whose forward also
/// takes the batch's per-sample ranks.
#[derive(Module, Debug)]
pub struct FlexiLinear<B: Backend> {
    /// The frozen base layer (Burn layout: weight `[d_in, d_out]`).
    pub base: Linear<B>,
    /// LoRA down projection `A [r_max, d_in]` (PEFT's `lora_A.weight`).
    pub lora_a: Param<Tensor<B, 2>>,
    /// LoRA up projection `B [d_out, r_max]` (PEFT's `lora_B.weight`).
    pub lora_b: Param<Tensor<B, 2>>,
    /// Learned per-rank scale `[r_max]` (entry `r-1` is `s(r)`), only with
    /// [`ScalePolicy::Learned`].
    pub rank_scale: Option<Param<Tensor<B, 1>>>,
    /// AdaLoRA singular values `E [r_max]` (only in the SVD form).
    pub lora_e: Option<Param<Tensor<B, 1>>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// LoRA alpha.
    pub alpha: f64,
    /// Scale policy.
    #[module(skip)]
    pub scale: ScalePolicy,
}

impl<B: Backend> FlexiLinear<B> {
    /// Re-initialises the random factors from `seed` and the layer's module `path`, with
    /// PEFT's distributions: LoRA `A` kaiming-uniform with `a = sqrt(5)` (`U(-1/sqrt(d_in),
    /// 1/sqrt(d_in))`), `B` untouched (zero); the SVD form (AdaLoRA) `A` and `B` ~ N(0, 0.02).
    /// Each factor draws from its own generator seeded by `(seed, path_hash("{path}.lora_a"))`,
    /// so the initial adapter is a function of the seed and the layer's place alone, on every
    /// backend (the backend's own RNG is global to the process). Ids and `require_grad` are
    /// kept.
    pub fn seeded_init(&mut self, seed: u64, path: &str) {
        let svd_form = self.lora_e.is_some();
        let a = seeded_factor(&self.lora_a, seed, path, "lora_a", svd_form);
        self.lora_a = a;
        if svd_form {
            let b = seeded_factor(&self.lora_b, seed, path, "lora_b", true);
            self.lora_b = b;
        }
    }

    /// Input features.
    pub fn d_input(&self) -> usize {
        self.base.weight.dims()[0]
    }

    /// Output features.
    pub fn d_output(&self) -> usize {
        self.base.weight.dims()[1]
    }

    /// Largest rank.
    pub fn r_max(&self) -> usize {
        self.lora_a.dims()[0]
    }

    /// LoRA parameters that one unit of rank activates: `d_in + d_out`.
    pub fn params_per_rank(&self) -> usize {
        self.d_input() + self.d_output()
    }

    /// Forward pass of the base layer alone.
    pub fn forward_base<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear_nd(x, &self.base)
    }

    /// Adapted forward pass. `x` is `[batch, ..., d_in]`; `ranks` has one entry per sample
    /// of dimension 0. Returns `[batch, ..., d_out]`.
    ///
    /// # Panics
    /// With the message of [`FlexiError`] when the ranks do not fit the batch or the adapter
    /// (a rank above `r_max`, a rank vector whose length differs from the batch, an empty
    /// batch) or when the input's last dimension is not `d_in`. Models validate the ranks
    /// once with [`SampleRanks::validate`]; use [`FlexiLinear::try_forward`] to get the error.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, ranks: &SampleRanks) -> Tensor<B, D> {
        match self.try_forward(x, ranks) {
            Ok(y) => y,
            Err(e) => panic!("FlexiLinear::forward: {e}"),
        }
    }

    /// Adapted forward pass returning an error for bad ranks or input shapes.
    pub fn try_forward<const D: usize>(
        &self,
        x: Tensor<B, D>,
        ranks: &SampleRanks,
    ) -> crate::Result<Tensor<B, D>> {
        const {
            assert!(
                D >= 2,
                "FlexiLinear needs a batch dimension: input rank >= 2"
            )
        };
        let dims = x.dims();
        let batch = dims[0];
        if dims[D - 1] != self.d_input() {
            return Err(FlexiError::InputDim {
                expected: self.d_input(),
                got: dims[D - 1],
            });
        }
        ranks.validate(batch, self.r_max())?;

        // Every matmul runs on the 2-D view `[rows, d_in]` (rows = all leading dimensions):
        // one large gemm instead of a batched one, and Burn's linear backward then needs no
        // contiguous copy of the transposed weight (it copies it for inputs of rank > 2).
        let rows = dims[..D - 1].iter().product::<usize>();
        let x2 = x.reshape([rows, self.d_input()]);
        let base = linear_rows(x2.clone(), &self.base);
        let out_dims = {
            let mut d = dims;
            d[D - 1] = self.d_output();
            d
        };
        let r_hi = ranks.max();
        if r_hi == 0 {
            return Ok(base.reshape(out_dims));
        }
        let (a, b) = self.factors(r_hi, ranks.frozen_prefix());
        let uniform = ranks.as_slice().iter().all(|r| *r == r_hi);

        let mut h = linear(self.dropout.forward(x2), a.transpose(), None); // [rows, r_hi]
        if let Some(e) = &self.lora_e {
            h = h.mul(e.val().slice(0..r_hi).reshape([1, r_hi]));
        }
        let h = if uniform {
            match &self.rank_scale {
                None => h.mul_scalar(self.scale.scale(self.alpha, r_hi)),
                Some(_) => h
                    .reshape([batch, rows / batch, r_hi])
                    .mul(self.learned_scale::<3>(ranks.as_slice()))
                    .reshape([rows, r_hi]),
            }
        } else {
            // Per-sample prefix mask (carrying s(r_i)), broadcast over the sample's rows.
            let mask = self.prefix_mask::<3>(ranks, r_hi, &h.device());
            let mut h = h.reshape([batch, rows / batch, r_hi]).mul(mask);
            if self.rank_scale.is_some() {
                h = h.mul(self.learned_scale::<3>(ranks.as_slice()));
            }
            h.reshape([rows, r_hi])
        };
        let delta = linear(h, b.transpose(), None); // [rows, d_out]
        Ok(base.add(delta).reshape(out_dims))
    }

    /// The first `rank` components: `A[:rank] [rank, d_in]`, `B[:, :rank] [d_out, rank]`.
    /// With `frozen_prefix`, components `0..rank-1` are detached (DyLoRA frozen).
    fn factors(&self, rank: usize, frozen_prefix: bool) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let a = self.lora_a.val().slice([0..rank, 0..self.d_input()]);
        let b = self.lora_b.val().slice([0..self.d_output(), 0..rank]);
        if !frozen_prefix || rank == 1 {
            return (a, b);
        }
        let keep = rank - 1;
        let a = Tensor::cat(
            vec![
                a.clone().slice([0..keep, 0..self.d_input()]).detach(),
                a.slice([keep..rank, 0..self.d_input()]),
            ],
            0,
        );
        let b = Tensor::cat(
            vec![
                b.clone().slice([0..self.d_output(), 0..keep]).detach(),
                b.slice([0..self.d_output(), keep..rank]),
            ],
            1,
        );
        (a, b)
    }

    /// `m[i, j] = s(r_i) * 1[j < r_i]` (or just the indicator with a learned scale), shaped
    /// `[batch, 1, ..., 1, r_hi]` to broadcast over the middle dimensions.
    fn prefix_mask<const D: usize>(
        &self,
        ranks: &SampleRanks,
        r_hi: usize,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let scales: Vec<f32> = ranks
            .as_slice()
            .iter()
            .map(|&r| match self.rank_scale {
                None => self.scale.scale(self.alpha, r) as f32,
                Some(_) => 1.0,
            })
            .collect();
        ranks.masks.get_or_build(device, r_hi, &scales, || {
            let mut values = Vec::with_capacity(scales.len() * r_hi);
            for (&r, &s) in ranks.as_slice().iter().zip(&scales) {
                values.extend((0..r_hi).map(|j| if j < r { s } else { 0.0 }));
            }
            let mut shape = [1usize; D];
            shape[0] = scales.len();
            shape[D - 1] = r_hi;
            Tensor::from_data(TensorData::new(values, shape), device)
        })
    }

    /// Per-sample learned scale `s(r_i)` shaped `[batch, 1, ..., 1]` (0 for rank 0),
    /// differentiable with respect to `rank_scale`.
    fn learned_scale<const D: usize>(&self, ranks: &[usize]) -> Tensor<B, D> {
        let scale = self
            .rank_scale
            .as_ref()
            .expect("learned_scale is only called with ScalePolicy::Learned");
        let r_max = self.r_max();
        let device = scale.device();
        // one-hot [batch, r_max] @ scale [r_max, 1] -> [batch, 1]
        let mut onehot = vec![0f32; ranks.len() * r_max];
        for (i, &r) in ranks.iter().enumerate() {
            if r > 0 {
                onehot[i * r_max + r - 1] = 1.0;
            }
        }
        let onehot =
            Tensor::<B, 2>::from_data(TensorData::new(onehot, [ranks.len(), r_max]), &device);
        let per_sample = onehot.matmul(scale.val().reshape([r_max, 1]));
        let mut shape = [1usize; D];
        shape[0] = ranks.len();
        per_sample.reshape(shape)
    }

    /// The scale `s(rank)` as a number (the current value of the learned scalar, if any).
    pub fn scale_at(&self, rank: usize) -> f64 {
        if rank == 0 {
            return 0.0;
        }
        match &self.rank_scale {
            None => self.scale.scale(self.alpha, rank),
            Some(s) => {
                let v = s.val().slice(rank - 1..rank).into_scalar();
                burn::tensor::ElementConversion::elem::<f64>(v)
            }
        }
    }

    /// `W0 + s(r) B[:, :r] A[:r]` in the math/PyTorch layout `[d_out, d_in]`.
    ///
    /// # Panics
    /// If `rank > r_max`.
    pub fn merged_weight(&self, rank: usize) -> Tensor<B, 2> {
        assert!(
            rank <= self.r_max(),
            "merged_weight: rank {rank} exceeds r_max = {}",
            self.r_max()
        );
        let w0 = self.base.weight.val().transpose(); // [d_out, d_in]
        if rank == 0 {
            return w0;
        }
        let (a, b) = self.factors(rank, false);
        // A base stored in a half type (mixed precision) is merged in the factors' type.
        let w0 = w0.cast(a.dtype());
        let b = match &self.lora_e {
            Some(e) => b.mul(e.val().slice(0..rank).reshape([1, rank])),
            None => b,
        };
        w0.add(b.matmul(a).mul_scalar(self.scale_at(rank)))
    }

    /// A plain [`Linear`] whose weight is [`FlexiLinear::merged_weight`] at `rank`
    /// (for deployment at a fixed rank).
    pub fn merged_linear(&self, rank: usize) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.merged_weight(rank).transpose()),
            bias: self.base.bias.as_ref().map(|b| Param::from_tensor(b.val())),
        }
    }
}

/// A factor re-drawn from `(seed, path.field)`: N(0, 0.02) when `normal`, else
/// kaiming-uniform over its input width.
fn seeded_factor<B: Backend>(
    param: &Param<Tensor<B, 2>>,
    seed: u64,
    path: &str,
    field: &str,
    normal: bool,
) -> Param<Tensor<B, 2>> {
    use rand::{Rng, SeedableRng};
    let dims = param.dims();
    let n = dims[0] * dims[1];
    let key = crate::adapters::join_path(path, field);
    let mut rng = rand::rngs::StdRng::seed_from_u64(crate::schedule::mix(
        seed,
        crate::adapters::path_hash(&key),
    ));
    let values: Vec<f32> = if normal {
        // PEFT's AdaLoRA normal(0, 0.02), Box–Muller written out (not `router::standard_normal`:
        // its other order of products would change initial adapters in the last bit).
        (0..n)
            .map(|_| {
                let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                let u2: f64 = rng.random();
                (0.02 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    } else {
        let bound = 1.0 / (dims[1] as f32).sqrt();
        (0..n).map(|_| rng.random_range(-bound..bound)).collect()
    };
    crate::params::with_values(param.clone(), TensorData::new(values, dims))
}
