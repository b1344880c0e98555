//! The projections of a decoder layer: a plain frozen [`Linear`] or, when the projection is
//! in the adapter's target set, a [`FlexiLinear`] that takes the per-sample ranks.
//!
//! Non-targeted projections are plain `Linear`s (no LoRA parameters at all, and nothing to
//! mask), so parameter counts and checkpoints of a LoRA on `q_proj,v_proj` only hold those.

use std::fmt;
use std::str::FromStr;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flexi_burn::{FlexiLinear, SampleRanks, ScalePolicy};

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

/// Which projections carry a Flexi-LoRA adapter, and its size.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// Adapted projections (SPEC default: `q_proj,k_proj,v_proj,o_proj`).
    pub targets: Vec<Target>,
    /// Largest rank.
    pub r_max: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// Rank scale policy.
    pub scale: ScalePolicy,
    /// AdaLoRA's SVD form `B diag(E) A` (see [`flexi_burn::FlexiLinearConfig::svd_form`]).
    pub svd_form: bool,
    /// Dropout on the adapter input (training only).
    pub dropout: f64,
}

impl AdapterConfig {
    /// No adapter: every projection is a plain `Linear`.
    pub fn none() -> Self {
        Self {
            targets: Vec::new(),
            r_max: 1,
            alpha: 1.0,
            scale: ScalePolicy::AlphaOverRank,
            svd_form: false,
            dropout: 0.0,
        }
    }

    /// An adapter of `r_max` on `targets` with `alpha`, scale `alpha / r`.
    pub fn new(targets: Vec<Target>, r_max: usize, alpha: f64) -> Self {
        Self {
            targets,
            r_max,
            alpha,
            scale: ScalePolicy::AlphaOverRank,
            svd_form: false,
            dropout: 0.0,
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

/// A plain or adapted projection.
// A model has seven per layer; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Proj<B: Backend> {
    /// Frozen, no adapter.
    Plain(Linear<B>),
    /// Frozen base plus nested LoRA factors.
    Adapted(FlexiLinear<B>),
}

impl<B: Backend> Proj<B> {
    /// `x [batch, seq, d_in] -> [batch, seq, d_out]`; `ranks` is ignored by a plain projection.
    pub fn forward(&self, x: Tensor<B, 3>, ranks: &SampleRanks) -> Tensor<B, 3> {
        match self {
            Proj::Plain(l) => flexi_burn::linear_nd(x, l),
            Proj::Adapted(l) => l.forward(x, ranks),
        }
    }

    /// The adapter, if any.
    pub fn adapter(&self) -> Option<&FlexiLinear<B>> {
        match self {
            Proj::Plain(_) => None,
            Proj::Adapted(l) => Some(l),
        }
    }

    /// The adapter, mutably, if any.
    pub fn adapter_mut(&mut self) -> Option<&mut FlexiLinear<B>> {
        match self {
            Proj::Plain(_) => None,
            Proj::Adapted(l) => Some(l),
        }
    }
}

/// The adapted layers among `projs` (module paths `"{prefix}.{name}.Adapted"`, Burn's path of
/// the enum variant), for [`flexi_burn::Adapters`] implementations.
pub(crate) fn adapted<'a, B: Backend>(
    prefix: &str,
    projs: impl IntoIterator<Item = (&'static str, &'a Proj<B>)>,
) -> Vec<(String, &'a FlexiLinear<B>)> {
    projs
        .into_iter()
        .filter_map(|(name, p)| p.adapter().map(|l| (format!("{prefix}.{name}.Adapted"), l)))
        .collect()
}

/// [`adapted`], mutably.
pub(crate) fn adapted_mut<'a, B: Backend>(
    prefix: &str,
    projs: impl IntoIterator<Item = (&'static str, &'a mut Proj<B>)>,
) -> Vec<(String, &'a mut FlexiLinear<B>)> {
    projs
        .into_iter()
        .filter_map(|(name, p)| {
            p.adapter_mut()
                .map(|l| (format!("{prefix}.{name}.Adapted"), l))
        })
        .collect()
}
