//! Training configuration: one TOML or JSON file, with `key=value` overrides from the command
//! line. Unknown keys and unknown methods are errors that name the key.

use std::path::Path;

use flexi_burn::{ClassRankMap, Precision, RankSchedule, ScalePolicy};
use serde::{Deserialize, Serialize};

use crate::adalora::AdaLoraConfig;
use crate::error::{Result, TrainError};
use crate::lr::Decay;

/// The fine-tuning methods of the paper (SPEC 2.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// Full fine-tuning: every weight trains, no adapter.
    Full,
    /// LoRA at a fixed rank.
    Lora {
        /// The rank.
        rank: usize,
    },
    /// DyLoRA: one random rank in `1..=r_max` per step, `eval_rank` at inference.
    Dylora {
        /// Largest rank.
        r_max: usize,
        /// Reference-code frozen mode (only the drawn component learns).
        #[serde(default)]
        frozen: bool,
        /// Rank at inference.
        eval_rank: usize,
    },
    /// DyLoRA+: a random rank per batch in training and at inference.
    DyloraPlus {
        /// Largest rank.
        r_max: usize,
    },
    /// AdaLoRA: SVD-form adapter pruned to a budget.
    Adalora(AdaLoraConfig),
    /// Flexi-LoRA: the router's class -> rank map, e.g. `"(2,8)"`.
    Flexi {
        /// Class -> rank map.
        class_ranks: String,
    },
}

impl Method {
    /// Short name for tables and file names.
    pub fn label(&self) -> String {
        match self {
            Method::Full => "full".into(),
            Method::Lora { rank } => format!("lora-{rank}"),
            // `dylora-8@4`: trained up to rank 8, inferred at rank 4 (the name says both, so a
            // table row and a training log of the same run read alike).
            Method::Dylora {
                r_max, eval_rank, ..
            } if r_max == eval_rank => format!("dylora-{r_max}"),
            Method::Dylora {
                r_max, eval_rank, ..
            } => format!("dylora-{r_max}@{eval_rank}"),
            Method::DyloraPlus { r_max } => format!("dylora+-{r_max}"),
            Method::Adalora(c) => format!("adalora-{}", c.target_r),
            Method::Flexi { class_ranks } => format!("flexi{class_ranks}"),
        }
    }

    /// The adapter's `r_max` (0 for full fine-tuning).
    pub fn r_max(&self) -> Result<usize> {
        Ok(match self {
            Method::Full => 0,
            Method::Lora { rank } => *rank,
            Method::Dylora {
                r_max, eval_rank, ..
            } => (*r_max).max(*eval_rank),
            Method::DyloraPlus { r_max } => *r_max,
            Method::Adalora(c) => c.init_r,
            Method::Flexi { .. } => self.class_ranks()?.map_or(0, |m| m.max_rank()),
        })
    }

    /// The class -> rank map of Flexi-LoRA.
    pub fn class_ranks(&self) -> Result<Option<ClassRankMap>> {
        match self {
            Method::Flexi { class_ranks } => Ok(Some(class_ranks.parse().map_err(|e| {
                TrainError::Config {
                    key: "method.class_ranks".into(),
                    message: format!("{e}"),
                }
            })?)),
            _ => Ok(None),
        }
    }

    /// The rank schedule (`None` for full fine-tuning).
    pub fn schedule(&self) -> Option<RankSchedule> {
        Some(match self {
            Method::Full => return None,
            Method::Lora { rank } => RankSchedule::Fixed { rank: *rank },
            Method::Dylora {
                r_max,
                frozen,
                eval_rank,
            } => RankSchedule::DyLoRA {
                r_max: *r_max,
                frozen: *frozen,
                eval_rank: *eval_rank,
            },
            Method::DyloraPlus { r_max } => RankSchedule::DyLoRAPlus { r_max: *r_max },
            Method::Adalora(c) => RankSchedule::Fixed { rank: c.init_r },
            Method::Flexi { .. } => RankSchedule::Routed,
        })
    }

    /// Checks ranks and sub-configurations.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| TrainError::Config {
            key: "method".into(),
            message,
        };
        match self {
            Method::Full => Ok(()),
            Method::Lora { rank: 0 } => Err(bad("lora rank must be at least 1".into())),
            Method::Dylora {
                r_max, eval_rank, ..
            } if *r_max == 0 || *eval_rank == 0 || eval_rank > r_max => Err(bad(format!(
                "dylora needs 1 <= eval_rank ({eval_rank}) <= r_max ({r_max})"
            ))),
            Method::DyloraPlus { r_max: 0 } => Err(bad("dylora_plus r_max must be >= 1".into())),
            Method::Adalora(c) => c.validate().map_err(bad),
            Method::Flexi { .. } => {
                let map = self.class_ranks()?.unwrap_or(ClassRankMap(vec![]));
                if map.0.contains(&0) && map.max_rank() == 0 {
                    return Err(bad("flexi class_ranks are all 0".into()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Adapter settings shared by the LoRA-family methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdapterSettings {
    /// LoRA alpha.
    pub alpha: f64,
    /// Scale policy of rank r: `alpha_over_rank`, `alpha_over_sqrt_rank` or `learned`.
    pub scale: ScalePolicy,
    /// Adapted projections (HF names).
    pub targets: Vec<String>,
    /// Dropout on the adapter input.
    pub dropout: f64,
}

impl AdapterSettings {
    /// The adapter's settings for `method`: its `r_max`, these alpha, scale and dropout, the
    /// SVD form for AdaLoRA.
    pub fn lora(&self, method: &Method) -> Result<flexi_burn::LoraSettings> {
        Ok(flexi_burn::LoraSettings {
            r_max: method.r_max()?,
            alpha: self.alpha,
            scale: self.scale,
            svd_form: matches!(method, Method::Adalora(_)),
            dropout: self.dropout,
        })
    }
}

impl Default for AdapterSettings {
    fn default() -> Self {
        Self {
            alpha: 16.0,
            scale: ScalePolicy::AlphaOverRank,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            dropout: 0.0,
        }
    }
}

/// Everything a training run needs besides the model and the data paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The method.
    pub method: Method,
    /// Adapter settings.
    pub adapter: AdapterSettings,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many optimizer steps (`0`: epochs decide).
    pub max_steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Clip the global gradient norm to this value (`0`: no clipping).
    pub grad_clip: f64,
    /// Longest tokenised example; longer prompts are truncated from the left, never the answer.
    pub max_len: usize,
    /// Seed of data order, rank draws and dropout.
    pub seed: u64,
    /// Checkpoint every N optimizer steps (`0`: only at the end).
    pub save_every: usize,
    /// Storage type of the frozen base weights (`f32`, `bf16`, `f16`; see
    /// [`flexi_burn::precision`]): the adapters, their gradients and the optimizer state are
    /// f32 whatever it is. Full fine-tuning stores every matrix in it and trains it on f32
    /// master copies ([`crate::optim`]). f16 scales the loss.
    #[serde(skip_serializing_if = "is_f32")]
    pub precision: Precision,
    /// Initial loss scale of f16 training (PyTorch's `GradScaler`: 65536).
    #[serde(skip_serializing_if = "is_default_scale")]
    pub loss_scale: f64,
    /// Finite steps after which the f16 loss scale doubles (PyTorch's `GradScaler`: 2000).
    #[serde(skip_serializing_if = "is_default_growth")]
    pub loss_scale_growth: usize,
}

// Settings at their defaults are left out of written configurations, so every f32 run's
// files read as they did before mixed precision existed.
fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

fn is_default_scale(s: &f64) -> bool {
    *s == DEFAULT_LOSS_SCALE
}

fn is_default_growth(g: &usize) -> bool {
    *g == DEFAULT_LOSS_SCALE_GROWTH
}

/// PyTorch's initial f16 loss scale.
pub const DEFAULT_LOSS_SCALE: f64 = 65536.0;
/// PyTorch's growth interval of the f16 loss scale.
pub const DEFAULT_LOSS_SCALE_GROWTH: usize = 2000;

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Lora { rank: 8 },
            adapter: AdapterSettings::default(),
            lr: 2e-4,
            min_lr: 0.0,
            weight_decay: 0.0,
            warmup_steps: 10,
            decay: Decay::Linear,
            epochs: 1,
            max_steps: 0,
            batch_size: 4,
            grad_accum: 1,
            grad_clip: 1.0,
            max_len: 512,
            seed: 42,
            save_every: 50,
            precision: Precision::F32,
            loss_scale: DEFAULT_LOSS_SCALE,
            loss_scale_growth: DEFAULT_LOSS_SCALE_GROWTH,
        }
    }
}

impl TrainConfig {
    /// Reads a `.toml` or `.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let value: serde_json::Value = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => {
                let v: toml::Value = toml::from_str(&text).map_err(|e| TrainError::Config {
                    key: path.display().to_string(),
                    message: e.to_string(),
                })?;
                serde_json::to_value(v).map_err(|e| TrainError::Config {
                    key: path.display().to_string(),
                    message: e.to_string(),
                })?
            }
            Some("json") => serde_json::from_str(&text).map_err(|e| TrainError::Config {
                key: path.display().to_string(),
                message: e.to_string(),
            })?,
            _ => {
                return Err(TrainError::Config {
                    key: path.display().to_string(),
                    message: "expected a .toml or .json file".into(),
                });
            }
        };
        Self::from_value(value, &path.display().to_string())
    }

    /// Builds a configuration from a JSON value (missing keys take their defaults).
    pub fn from_value(value: serde_json::Value, origin: &str) -> Result<Self> {
        let config: Self = serde_json::from_value(value).map_err(|e| TrainError::Config {
            key: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `key=value` overrides (`lr=1e-4`, `method.name=lora`, `method.rank=4`,
    /// `adapter.targets=q_proj,v_proj`). Values are parsed as JSON when they can be, else as
    /// strings; a comma list becomes an array for `adapter.targets`.
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        let mut value = serde_json::to_value(&self).map_err(|e| TrainError::Config {
            key: "<config>".into(),
            message: e.to_string(),
        })?;
        for o in overrides {
            let (key, raw) = o.split_once('=').ok_or_else(|| TrainError::Config {
                key: o.clone(),
                message: "overrides are written key=value".into(),
            })?;
            let parsed = if key == "adapter.targets" {
                serde_json::Value::from(raw.split(',').map(str::trim).collect::<Vec<_>>())
            } else {
                serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::from(raw))
            };
            let mut slot = &mut value;
            for part in key.split('.') {
                let obj = slot.as_object_mut().ok_or_else(|| TrainError::Config {
                    key: key.to_string(),
                    message: format!("{part:?} is not inside a table"),
                })?;
                slot = obj
                    .entry(part.to_string())
                    .or_insert(serde_json::Value::Null);
            }
            *slot = parsed;
        }
        Self::from_value(value, "command-line overrides")
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        self.method.validate()?;
        let bad = |key: &str, message: String| {
            Err(TrainError::Config {
                key: key.into(),
                message,
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} is not a positive number", self.lr));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad(
                "batch_size",
                "batch_size and grad_accum must be at least 1".into(),
            );
        }
        if self.epochs == 0 && self.max_steps == 0 {
            return bad("epochs", "set epochs or max_steps".into());
        }
        if self.max_len < 4 {
            return bad("max_len", format!("{} is too short", self.max_len));
        }
        if !(self.loss_scale.is_finite() && self.loss_scale >= 1.0) {
            return bad(
                "loss_scale",
                format!("{} is not a number >= 1", self.loss_scale),
            );
        }
        if self.loss_scale_growth == 0 {
            return bad("loss_scale_growth", "must be at least 1".into());
        }
        if self.adapter.targets.is_empty() && self.method != Method::Full {
            return bad("adapter.targets", "no module to adapt".into());
        }
        Ok(())
    }
}

/// How a training step trades compute for activation memory (`train
/// --checkpoint-activations`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationCheckpointing {
    /// Every activation the backward pass reads is kept from the forward pass.
    #[default]
    Off,
    /// Per-layer recomputation ([`crate::Trainer::recompute_layers`], transformers'
    /// `gradient_checkpointing`): only each layer's input is kept; each layer's forward runs
    /// again just before its backward. Llama and Whisper models.
    Layers,
    /// Burn's `BalancedCheckpointing` autodiff strategy: the outputs of memory-bound
    /// operations (elementwise, softmax, norms) are recomputed, those of matmuls kept. Every
    /// model.
    Balanced,
}

impl ActivationCheckpointing {
    /// The name `--checkpoint-activations` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Layers => "layers",
            Self::Balanced => "balanced",
        }
    }
}

impl std::fmt::Display for ActivationCheckpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ActivationCheckpointing {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "off" | "none" => Ok(Self::Off),
            "layers" => Ok(Self::Layers),
            "balanced" => Ok(Self::Balanced),
            other => Err(TrainError::Config {
                key: "checkpoint_activations".into(),
                message: format!("{other:?}: expected layers, balanced or off"),
            }),
        }
    }
}
