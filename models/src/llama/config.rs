//! The model configuration, read from a Hugging Face `config.json`, and presets.
//!
//! Fields are read one by one from the JSON object so that a bad value is reported with its
//! field name (`LlamaError::ConfigField`), e.g. `config.json: field num_key_value_heads:
//! 3 does not divide num_attention_heads = 4`.

use std::path::Path;

use flexi_burn::LlamaShape;
use serde_json::{Map, Value};

use super::error::{LlamaError, Result, io_err};

/// Llama 3's frequency-dependent RoPE scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    /// `factor`: how much the low frequencies are stretched.
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`: the pre-training context.
    pub original_max_position_embeddings: usize,
}

/// A Llama-family decoder configuration (the fields of HF's `LlamaConfig` this model uses).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size` (d_model).
    pub hidden_size: usize,
    /// `intermediate_size` (SwiGLU width).
    pub intermediate_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads` (query heads).
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (GQA; defaults to `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// `head_dim` (defaults to `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f64,
    /// `rope_theta`.
    pub rope_theta: f64,
    /// `rope_scaling` of type `llama3`, or `None` (null / type `default`).
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// `tie_word_embeddings`: the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// `max_position_embeddings`: the context length.
    pub max_position_embeddings: usize,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id`, an integer or a list in the JSON.
    pub eos_token_ids: Vec<u32>,
    /// `attention_bias`: q/k/v/o projections have biases.
    pub attention_bias: bool,
    /// `mlp_bias`: gate/up/down projections have biases.
    pub mlp_bias: bool,
}

/// Typed access to the JSON object, naming the file and field in every error.
struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> LlamaError {
        LlamaError::ConfigField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.err(field, format!("expected a non-negative integer, got {v}"))
            }),
        }
    }

    fn usize(&self, field: &str) -> Result<usize> {
        let n = self
            .opt_usize(field)?
            .ok_or_else(|| self.err(field, "missing (required)"))?;
        if n == 0 {
            return Err(self.err(field, "must be at least 1"));
        }
        Ok(n)
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.err(field, format!("expected a finite number, got {v}"))),
            },
        }
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected true or false, got {v}"))),
        }
    }

    fn token_ids(&self, field: &str) -> Result<Vec<u32>> {
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.err(field, format!("expected a token id, got {v}")))
        };
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

impl LlamaConfig {
    /// Reads `config.json` from a model directory (or the file itself).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = if dir.is_dir() {
            dir.join("config.json")
        } else {
            dir.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Self::from_json_str(&text, &path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|source| LlamaError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let Value::Object(obj) = &value else {
            return Err(LlamaError::ConfigField {
                path: path.to_path_buf(),
                field: "<root>".into(),
                reason: "expected a JSON object".into(),
            });
        };
        let f = Fields { path, obj };

        // A config of another architecture (a Whisper, BERT, ... checkpoint) is refused by
        // name instead of failing on the first Llama field it lacks.
        if let Some(t) = f.get("model_type")
            && t.as_str() != Some("llama")
        {
            return Err(f.err(
                "model_type",
                format!("is {t}, expected \"llama\" (this is not a Llama checkpoint)"),
            ));
        }
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"
                ),
            ));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(f.err(
                    "head_dim",
                    format!(
                        "absent, and hidden_size = {hidden_size} is not a multiple of num_attention_heads = {num_attention_heads}"
                    ),
                ));
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(f.err(
                "head_dim",
                format!("{head_dim} must be even and > 0 for RoPE"),
            ));
        }
        let rms_norm_eps = f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6);
        if rms_norm_eps <= 0.0 {
            return Err(f.err("rms_norm_eps", "must be > 0"));
        }
        let rope_theta = f.opt_f64("rope_theta")?.unwrap_or(10_000.0);
        if rope_theta <= 1.0 {
            return Err(f.err("rope_theta", format!("{rope_theta} must be > 1")));
        }
        let config = LlamaConfig {
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling: Self::rope_scaling(&f)?,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.token_ids("eos_token_id")?,
            attention_bias: f.opt_bool("attention_bias")?.unwrap_or(false),
            mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
        };
        if let Some(act) = f.get("hidden_act")
            && act.as_str() != Some("silu")
        {
            return Err(f.err(
                "hidden_act",
                format!("{act} is not supported (only \"silu\")"),
            ));
        }
        Ok(config)
    }

    fn rope_scaling(f: &Fields<'_>) -> Result<Option<Llama3RopeScaling>> {
        let Some(v) = f.get("rope_scaling") else {
            return Ok(None);
        };
        let Value::Object(obj) = v else {
            return Err(f.err(
                "rope_scaling",
                format!("expected an object or null, got {v}"),
            ));
        };
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| f.err("rope_scaling.rope_type", "missing"))?;
        match kind {
            "default" => return Ok(None),
            "llama3" => {}
            other => {
                return Err(LlamaError::UnknownRopeScaling {
                    path: f.path.to_path_buf(),
                    kind: other.to_string(),
                });
            }
        }
        let sub = Fields { path: f.path, obj };
        let num = |name: &str| -> Result<f64> {
            let field = format!("rope_scaling.{name}");
            match sub.opt_f64(name) {
                Ok(Some(x)) if x > 0.0 => Ok(x),
                Ok(Some(x)) => Err(f.err(&field, format!("{x} must be > 0"))),
                Ok(None) => Err(f.err(&field, "missing (required by rope_type llama3)")),
                Err(_) => Err(f.err(&field, "expected a finite number")),
            }
        };
        let factor = num("factor")?;
        let low_freq_factor = num("low_freq_factor")?;
        let high_freq_factor = num("high_freq_factor")?;
        if high_freq_factor <= low_freq_factor {
            return Err(f.err(
                "rope_scaling.high_freq_factor",
                format!("{high_freq_factor} must exceed low_freq_factor = {low_freq_factor}"),
            ));
        }
        let original = sub
            .opt_usize("original_max_position_embeddings")
            .ok()
            .flatten()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                f.err(
                    "rope_scaling.original_max_position_embeddings",
                    "missing or not a positive integer",
                )
            })?;
        Ok(Some(Llama3RopeScaling {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: original,
        }))
    }

    fn llama3_rope() -> Option<Llama3RopeScaling> {
        Some(Llama3RopeScaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        })
    }

    /// meta-llama/Llama-3.2-1B-Instruct.
    pub fn llama_3_2_1b() -> Self {
        LlamaConfig {
            vocab_size: 128_256,
            hidden_size: 2048,
            intermediate_size: 8192,
            num_hidden_layers: 16,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: Self::llama3_rope(),
            tie_word_embeddings: true,
            max_position_embeddings: 131_072,
            bos_token_id: Some(128_000),
            eos_token_ids: vec![128_001, 128_008, 128_009],
            attention_bias: false,
            mlp_bias: false,
        }
    }

    /// meta-llama/Llama-3.2-3B-Instruct.
    pub fn llama_3_2_3b() -> Self {
        LlamaConfig {
            hidden_size: 3072,
            num_hidden_layers: 28,
            num_attention_heads: 24,
            head_dim: 128,
            ..Self::llama_3_2_1b()
        }
    }

    /// meta-llama/Llama-3.1-8B-Instruct (untied LM head, RoPE scaled by 8).
    pub fn llama_3_1_8b() -> Self {
        LlamaConfig {
            hidden_size: 4096,
            intermediate_size: 14_336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            rope_scaling: Some(Llama3RopeScaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
            tie_word_embeddings: false,
            ..Self::llama_3_2_1b()
        }
    }

    /// HuggingFaceTB/SmolLM2-135M-Instruct.
    pub fn smollm2_135m() -> Self {
        LlamaConfig {
            vocab_size: 49_152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            rope_scaling: None,
            tie_word_embeddings: true,
            max_position_embeddings: 8192,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            attention_bias: false,
            mlp_bias: false,
        }
    }

    /// A preset by name: `llama-3.2-1b`, `llama-3.2-3b`, `llama-3.1-8b`, `smollm2-135m`.
    pub fn preset(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama-3.2-1b" | "llama-3.2-1b-instruct" => Some(Self::llama_3_2_1b()),
            "llama-3.2-3b" | "llama-3.2-3b-instruct" => Some(Self::llama_3_2_3b()),
            "llama-3.1-8b" | "llama-3.1-8b-instruct" => Some(Self::llama_3_1_8b()),
            "smollm2-135m" | "smollm2-135m-instruct" => Some(Self::smollm2_135m()),
            _ => None,
        }
    }

    /// The projection shapes, as the core library's parameter accounting sees them.
    pub fn shape(&self) -> LlamaShape {
        LlamaShape {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            layers: self.num_hidden_layers,
        }
    }

    /// Query heads per KV head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}
