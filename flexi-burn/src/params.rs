//! Parameter accounting as the paper reports it (SPEC 4): trainable parameters, LoRA
//! parameters per unit of rank, and the average *activated* LoRA parameters per input.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// One adapted linear: its name (e.g. `layers.3.q_proj`) and shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptedLinear {
    /// Module path.
    pub name: String,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

impl AdaptedLinear {
    /// LoRA parameters of one unit of rank: a row of A plus a column of B.
    pub fn params_per_rank(&self) -> usize {
        self.d_in + self.d_out
    }
}

/// LoRA parameters per unit of rank over a set of adapted linears.
pub fn params_per_rank(layers: &[AdaptedLinear]) -> usize {
    layers.iter().map(AdaptedLinear::params_per_rank).sum()
}

/// Average activated LoRA parameters per input, for inputs that used `ranks` (one entry per
/// input): `params_per_rank * mean(rank)`. Returns 0 for no inputs.
pub fn average_activated_params(per_rank: usize, ranks: &[usize]) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    per_rank as f64 * ranks.iter().sum::<usize>() as f64 / ranks.len() as f64
}

/// The attention/MLP shape of a Llama-style decoder, enough to list its adapted linears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlamaShape {
    /// `hidden_size`.
    pub hidden: usize,
    /// `intermediate_size`.
    pub intermediate: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads`.
    pub kv_heads: usize,
    /// `head_dim`.
    pub head_dim: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
}

impl LlamaShape {
    /// meta-llama/Llama-3.2-1B(-Instruct).
    pub fn llama_3_2_1b() -> Self {
        Self {
            hidden: 2048,
            intermediate: 8192,
            heads: 32,
            kv_heads: 8,
            head_dim: 64,
            layers: 16,
        }
    }

    /// meta-llama/Llama-3.2-3B(-Instruct).
    pub fn llama_3_2_3b() -> Self {
        Self {
            hidden: 3072,
            intermediate: 8192,
            heads: 24,
            kv_heads: 8,
            head_dim: 128,
            layers: 28,
        }
    }

    /// HuggingFaceTB/SmolLM2-135M(-Instruct).
    pub fn smollm2_135m() -> Self {
        Self {
            hidden: 576,
            intermediate: 1536,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            layers: 30,
        }
    }

    /// `(d_in, d_out)` of a projection by its HF name, or `None` for an unknown name.
    pub fn projection(&self, name: &str) -> Option<(usize, usize)> {
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        Some(match name {
            "q_proj" => (self.hidden, q),
            "k_proj" | "v_proj" => (self.hidden, kv),
            "o_proj" => (q, self.hidden),
            "gate_proj" | "up_proj" => (self.hidden, self.intermediate),
            "down_proj" => (self.intermediate, self.hidden),
            _ => return None,
        })
    }

    /// Adapted linears of every layer for the target names (HF names such as `q_proj`).
    /// Unknown names are returned in the error.
    pub fn adapted(&self, targets: &[&str]) -> Result<Vec<AdaptedLinear>, String> {
        let mut out = Vec::with_capacity(self.layers * targets.len());
        for layer in 0..self.layers {
            for t in targets {
                let (d_in, d_out) = self
                    .projection(t)
                    .ok_or_else(|| format!("unknown Llama target module {t:?}"))?;
                out.push(AdaptedLinear {
                    name: format!("layers.{layer}.{t}"),
                    d_in,
                    d_out,
                });
            }
        }
        Ok(out)
    }
}

/// Counts the parameters of a module, split by whether they require a gradient.
///
/// Meaningful on an autodiff backend: on a plain backend no tensor tracks gradients, so every
/// parameter counts as frozen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamCount {
    /// Parameters that require a gradient.
    pub trainable: usize,
    /// All parameters.
    pub total: usize,
}

impl ParamCount {
    /// Counts the parameters of `module`.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut visitor = CountVisitor::default();
        module.visit(&mut visitor);
        visitor.0
    }

    /// Trainable share in percent.
    pub fn trainable_percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.trainable as f64 / self.total as f64
        }
    }
}

#[derive(Default)]
struct CountVisitor(ParamCount);

impl<B: Backend> ModuleVisitor<B> for CountVisitor {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param.shape().num_elements();
        self.0.total += n;
        if param.is_require_grad() {
            self.0.trainable += n;
        }
    }
}

/// LoRA parameters per unit of rank over every adapted layer of a model (`sum (d_in +
/// d_out)`).
pub fn lora_params_per_rank<B: Backend, M: crate::Adapters<B>>(module: &M) -> usize {
    module
        .adapters()
        .iter()
        .map(|(_, l)| l.lora_a.dims()[1] + l.lora_b.dims()[0])
        .sum()
}

/// Activated LoRA parameters of a model at each rank `0..=r_max`: entry `r` is
/// `sum over adapted layers of k_l(r) (d_in + d_out)`, where `k_l(r)` is `min(r, r_max_l)`,
/// or, for an SVD-form (AdaLoRA) layer, the components below `r` that pruning kept (`E != 0`).
/// So a pruned AdaLoRA adapter counts what it computes with (its budget), not its `init_r`.
/// `E` itself is not counted (one number per component, as the paper's LoRA-r counts).
pub fn activated_params_by_rank<B: Backend, M: crate::Adapters<B>>(module: &M) -> Vec<usize> {
    let layers = module.adapters();
    let r_max = layers.iter().map(|(_, l)| l.r_max()).max().unwrap_or(0);
    let kept: Vec<(usize, Vec<bool>)> = layers
        .iter()
        .map(|(_, l)| {
            let per = l.lora_a.dims()[1] + l.lora_b.dims()[0];
            let live = match &l.lora_e {
                Some(e) => e
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map(|v| v.iter().map(|x| *x != 0.0).collect())
                    .unwrap_or_else(|_| vec![true; l.r_max()]),
                None => vec![true; l.r_max()],
            };
            (per, live)
        })
        .collect();
    (0..=r_max)
        .map(|r| {
            kept.iter()
                .map(|(per, live)| per * live.iter().take(r).filter(|k| **k).count())
                .sum()
        })
        .collect()
}

/// Average activated parameters per input for inputs that used `ranks`, from a table of
/// [`activated_params_by_rank`] (ranks beyond the table count as its last entry).
pub fn average_activated_params_by_rank(table: &[usize], ranks: &[usize]) -> f64 {
    if ranks.is_empty() || table.is_empty() {
        return 0.0;
    }
    let at = |r: usize| table[r.min(table.len() - 1)] as f64;
    ranks.iter().map(|r| at(*r)).sum::<f64>() / ranks.len() as f64
}

/// `param` with new values `data` (same shape), keeping its id, its float type (`data` is
/// converted: an f32 checkpoint loads into a half-stored weight rounded) and, on autodiff
/// backends, whether it requires a gradient (a fresh leaf). Loading checkpoints and seeded
/// initialisation both replace parameters this way.
pub fn with_values<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    data: burn::tensor::TensorData,
) -> Param<Tensor<B, D>> {
    param.map(|old| {
        let require_grad = old.is_require_grad();
        // Converted by the backend's cast, the rounding the trainer gives a half-stored weight
        // from its f32 master (`train::optim`), so a resumed run continues bit for bit.
        // burn-flex's cast goes through f64 and `half`'s `from_f64`, which misrounds values
        // just above a tie by one ulp; `TensorData`'s conversion (`from_f32`) does not, so the
        // two differ there (docs/upstream/flex-cast-rounding.md).
        let new: Tensor<B, D> = Tensor::from_data(data, &old.device());
        let new = match old.dtype() {
            dtype if dtype == new.dtype() => new,
            dtype => new.cast(burn::tensor::FloatDType::from(dtype)),
        };
        if require_grad {
            new.require_grad()
        } else {
            new
        }
    })
}
