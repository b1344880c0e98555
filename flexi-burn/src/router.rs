//! The difficulty-aware router (SPEC 2.2): mean-pooled prompt embeddings -> K class logits,
//! and the class -> rank map that turns a predicted class into a LoRA rank.

use std::fmt;
use std::str::FromStr;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{gelu, log_softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::FlexiError;
use crate::schedule::Phase;

/// Configuration of a [`Router`].
#[derive(Config, Debug)]
pub struct RouterConfig {
    /// Width of the (frozen) token embedding that is pooled.
    pub d_model: usize,
    /// Number of difficulty classes (the paper: 2, easy / hard).
    #[config(default = 2)]
    pub num_classes: usize,
    /// Width of the hidden layer; `None` for a linear classifier.
    #[config(default = "None")]
    pub hidden: Option<usize>,
    /// Standard deviation of the Gaussian noise added to the logits in the training loss.
    #[config(default = 1.0)]
    pub noise_std: f64,
    /// Standardise each input feature with fixed statistics ([`InputNorm`], set with
    /// [`Router::with_input_stats`]) before the first layer.
    #[config(default = false)]
    pub standardize: bool,
}

impl RouterConfig {
    /// Builds the router.
    ///
    /// # Panics
    /// If `d_model`, `num_classes` or `hidden` is zero, or `noise_std` is negative; use
    /// [`RouterConfig::try_init`] to get the error instead.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Router<B> {
        match self.try_init(device) {
            Ok(r) => r,
            Err(e) => panic!("RouterConfig::init: {e}"),
        }
    }

    /// Builds the router or says which field is out of range.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> crate::Result<Router<B>> {
        let bad = |field, value: String, expected| FlexiError::InvalidConfig {
            field,
            value,
            expected,
        };
        if self.d_model == 0 {
            return Err(bad("d_model", "0".into(), "at least 1"));
        }
        if self.num_classes < 2 {
            return Err(bad(
                "num_classes",
                self.num_classes.to_string(),
                "at least 2",
            ));
        }
        if self.hidden == Some(0) {
            return Err(bad("hidden", "0".into(), "at least 1, or none"));
        }
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(bad(
                "noise_std",
                self.noise_std.to_string(),
                "a finite number >= 0",
            ));
        }
        let (hidden, d_last) = match self.hidden {
            Some(h) => (Some(LinearConfig::new(self.d_model, h).init(device)), h),
            None => (None, self.d_model),
        };
        let input_norm = self.standardize.then(|| InputNorm {
            shift: Param::from_tensor(Tensor::zeros([self.d_model], device))
                .set_require_grad(false),
            scale: Param::from_tensor(Tensor::ones([self.d_model], device)).set_require_grad(false),
        });
        Ok(Router {
            input_norm,
            hidden,
            output: LinearConfig::new(d_last, self.num_classes).init(device),
            noise_std: self.noise_std,
        })
    }
}

/// A fixed per-feature affine map `(x - shift) * scale` of the router's input: the training
/// set's mean and inverse standard deviation, so that features of very different offsets and
/// spreads (pooled audio features) reach the first layer on one scale. Not trained.
#[derive(Module, Debug)]
pub struct InputNorm<B: Backend> {
    /// Subtracted from each feature `[d_model]`.
    pub shift: Param<Tensor<B, 1>>,
    /// Then multiplied into it `[d_model]`.
    pub scale: Param<Tensor<B, 1>>,
}

/// A small classifier over pooled prompt embeddings.
#[derive(Module, Debug)]
pub struct Router<B: Backend> {
    /// Optional input standardisation ([`RouterConfig::standardize`]).
    pub input_norm: Option<InputNorm<B>>,
    /// Optional hidden layer (GELU).
    pub hidden: Option<Linear<B>>,
    /// Output layer to K logits.
    pub output: Linear<B>,
    /// Noise std of the training loss.
    pub noise_std: f64,
}

/// Mean of `embeddings [batch, seq, d]` over the positions where `mask [batch, seq]` is 1
/// (padding is 0). Rows with no real token pool to zeros. Returns `[batch, d]`.
pub fn masked_mean_pool<B: Backend>(embeddings: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
    let [batch, _, d] = embeddings.dims();
    let mask3 = mask.clone().unsqueeze_dim::<3>(2); // [batch, seq, 1]
    let summed = embeddings.mul(mask3).sum_dim(1).reshape([batch, d]);
    let counts = mask.sum_dim(1).clamp_min(1.0); // [batch, 1]
    summed.div(counts)
}

impl<B: Backend> Router<B> {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.output.weight.dims()[1]
    }

    /// Sets the input standardisation to the per-feature mean and standard deviation of
    /// `features [n][d_model]` (a standard deviation below 1e-6 counts as 1e-6). Does nothing
    /// for a router built without [`RouterConfig::standardize`].
    pub fn with_input_stats(mut self, features: &[Vec<f32>]) -> Self {
        let Some(norm) = self.input_norm.as_mut() else {
            return self;
        };
        let [d] = norm.shift.dims();
        if features.is_empty() || features.iter().any(|f| f.len() != d) {
            return self;
        }
        let n = features.len() as f64;
        let mut mean = vec![0f64; d];
        for f in features {
            for (m, v) in mean.iter_mut().zip(f) {
                *m += f64::from(*v) / n;
            }
        }
        let mut var = vec![0f64; d];
        for f in features {
            for ((s, v), m) in var.iter_mut().zip(f).zip(&mean) {
                *s += (f64::from(*v) - m).powi(2) / n;
            }
        }
        let device = norm.shift.device();
        let shift: Vec<f32> = mean.iter().map(|m| *m as f32).collect();
        let scale: Vec<f32> = var
            .iter()
            .map(|v| (1.0 / v.sqrt().max(1e-6)) as f32)
            .collect();
        norm.shift = Param::from_tensor(Tensor::from_data(TensorData::new(shift, [d]), &device))
            .set_require_grad(false);
        norm.scale = Param::from_tensor(Tensor::from_data(TensorData::new(scale, [d]), &device))
            .set_require_grad(false);
        self
    }

    /// Logits `[batch, K]` of pooled embeddings `[batch, d_model]`.
    pub fn forward(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        let pooled = match &self.input_norm {
            Some(n) => pooled
                .sub(n.shift.val().unsqueeze::<2>())
                .mul(n.scale.val().unsqueeze::<2>()),
            None => pooled,
        };
        let x = match &self.hidden {
            Some(h) => gelu(h.forward(pooled)),
            None => pooled,
        };
        self.output.forward(x)
    }

    /// Cross-entropy of `logits [batch, K]` against class `labels`, averaged over the batch.
    /// In [`Phase::Train`] Gaussian noise of std `noise_std` (drawn from `rng`) is added to the
    /// logits first; in [`Phase::Inference`] no noise is added and `rng` is not touched.
    ///
    /// # Panics
    /// If `labels.len()` differs from the batch or a label is not below K.
    pub fn loss(
        &self,
        logits: Tensor<B, 2>,
        labels: &[usize],
        phase: Phase,
        rng: &mut impl Rng,
    ) -> Tensor<B, 1> {
        let [batch, k] = logits.dims();
        assert_eq!(
            labels.len(),
            batch,
            "Router::loss: {} labels for a batch of {batch}",
            labels.len()
        );
        let device = logits.device();
        let logits = match phase {
            Phase::Train if self.noise_std > 0.0 => {
                let noise: Vec<f32> = (0..batch * k)
                    .map(|_| (standard_normal(rng) * self.noise_std) as f32)
                    .collect();
                logits.add(Tensor::from_data(
                    TensorData::new(noise, [batch, k]),
                    &device,
                ))
            }
            _ => logits,
        };
        let mut onehot = vec![0f32; batch * k];
        for (i, &c) in labels.iter().enumerate() {
            assert!(
                c < k,
                "Router::loss: label {c} of sample {i} is not below K = {k}"
            );
            onehot[i * k + c] = 1.0;
        }
        let onehot = Tensor::<B, 2>::from_data(TensorData::new(onehot, [batch, k]), &device);
        log_softmax(logits, 1).mul(onehot).sum_dim(1).mean().neg()
    }

    /// Predicted class per sample: argmax of the logits, no noise.
    pub fn predict(&self, pooled: Tensor<B, 2>) -> Vec<usize> {
        argmax_classes(self.forward(pooled))
    }
}

impl<B: Backend> Router<B> {
    /// Per-sample LoRA ranks: the predicted class of each pooled prompt through `map`.
    pub fn route(&self, pooled: Tensor<B, 2>, map: &ClassRankMap) -> crate::Result<Vec<usize>> {
        if map.num_classes() != self.num_classes() {
            return Err(FlexiError::InvalidConfig {
                field: "class_ranks",
                value: map.to_string(),
                expected: "one rank per router class",
            });
        }
        let logits = self.forward(pooled); // [batch, K]
        let k = logits.dims()[1];
        let values = logits.clone().into_data().convert::<f32>();
        if let Ok(values) = values.to_vec::<f32>()
            && let Some(i) = values.iter().position(|v| !v.is_finite())
        {
            // argmax over NaN would pick a class silently.
            return Err(FlexiError::NonFiniteRouterOutput {
                sample: i / k.max(1),
                value: values[i],
            });
        }
        map.ranks(&argmax_classes(logits))
    }
}

/// The argmax class of each row of `logits [batch, K]`.
fn argmax_classes<B: Backend>(logits: Tensor<B, 2>) -> Vec<usize> {
    logits
        .argmax(1)
        .into_data()
        .iter::<i64>()
        // argmax returns an index in 0..K.
        .map(|c| c.max(0) as usize)
        .collect()
}

/// A draw from N(0, 1) (Box–Muller), so noise is reproducible from the caller's generator on
/// every backend.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Class -> rank map, written `(a,b)`: class 0 (easy) -> rank a, class 1 (hard) -> rank b.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassRankMap(pub Vec<usize>);

impl ClassRankMap {
    /// Rank of each predicted class.
    pub fn ranks(&self, classes: &[usize]) -> crate::Result<Vec<usize>> {
        classes
            .iter()
            .map(|&c| {
                self.0.get(c).copied().ok_or(FlexiError::UnknownClass {
                    class: c,
                    classes: self.0.len(),
                })
            })
            .collect()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.0.len()
    }

    /// Largest rank in the map.
    pub fn max_rank(&self) -> usize {
        self.0.iter().copied().max().unwrap_or(0)
    }
}

impl FromStr for ClassRankMap {
    type Err = FlexiError;

    fn from_str(s: &str) -> crate::Result<Self> {
        let err = |reason: String| FlexiError::RankMap {
            input: s.to_string(),
            reason,
        };
        let inner = s.trim().trim_start_matches('(').trim_end_matches(')');
        let ranks = inner
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<usize>()
                    .map_err(|_| err(format!("{:?} is not a non-negative integer", p.trim())))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        if ranks.len() < 2 {
            return Err(err(format!("{} class(es); need at least 2", ranks.len())));
        }
        Ok(Self(ranks))
    }
}

impl fmt::Display for ClassRankMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        write!(f, "({})", parts.join(","))
    }
}
