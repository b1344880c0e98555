//! Which projections of a Llama decoder layer are adapted ([`Target`], [`AdapterConfig`]).
//! Each projection is a [`Proj`] (shared with Whisper, in [`crate::proj`]): a plain frozen
//! linear, or a `FlexiLinear` when it is in the adapter's target set.

use std::fmt;
use std::str::FromStr;

use flexi_burn::LoraSettings;

use super::error::{LlamaError, Result};

/// A projection of a Llama decoder layer, by its Hugging Face name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl Target {
    /// All seven projections.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The HF module name (`q_proj`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The path inside a decoder layer (`self_attn.q_proj`, `mlp.up_proj`, ...).
    pub fn path(&self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = LlamaError;

    fn from_str(s: &str) -> Result<Self> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| {
                LlamaError::InvalidInput(format!(
                    "unknown LoRA target {s:?}: expected one of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
                ))
            })
    }
}

/// Which projections carry a Flexi-LoRA adapter ([`Target`]s), with the adapter's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// Adapted projections (SPEC default: `q_proj,k_proj,v_proj,o_proj`).
    pub targets: Vec<Target>,
    /// Rank, alpha, scale, SVD form, dropout.
    pub lora: LoraSettings,
}

impl AdapterConfig {
    /// No adapter: every projection is a plain `Linear`.
    pub fn none() -> Self {
        Self {
            targets: Vec::new(),
            lora: LoraSettings::new(1, 1.0),
        }
    }

    /// An adapter of `r_max` on `targets` with `alpha`, scale `alpha / r`.
    pub fn new(targets: Vec<Target>, r_max: usize, alpha: f64) -> Self {
        Self {
            targets,
            lora: LoraSettings::new(r_max, alpha),
        }
    }

    /// Parses a comma-separated target list such as `q_proj,k_proj,v_proj,o_proj`.
    pub fn parse_targets(list: &str) -> Result<Vec<Target>> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Target::from_str)
            .collect()
    }

    /// Whether `t` is adapted.
    pub fn adapts(&self, t: Target) -> bool {
        self.targets.contains(&t)
    }
}

/// The plain-or-adapted projection is shared with Whisper: [`crate::proj`].
pub use crate::proj::Proj;
