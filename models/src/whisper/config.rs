//! `config.json` (and `generation_config.json`) of a Hugging Face Whisper checkpoint ->
//! [`WhisperConfig`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{Result, WhisperError, io_err};

/// The architecture and decoding settings of a Whisper model.
#[derive(Clone, Debug, PartialEq)]
pub struct WhisperConfig {
    /// Hidden size of encoder and decoder.
    pub d_model: usize,
    /// Encoder blocks.
    pub encoder_layers: usize,
    /// Encoder attention heads.
    pub encoder_attention_heads: usize,
    /// Encoder MLP width.
    pub encoder_ffn_dim: usize,
    /// Decoder blocks.
    pub decoder_layers: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Decoder MLP width.
    pub decoder_ffn_dim: usize,
    /// Mel bins of the input (80, or 128 for large-v3).
    pub num_mel_bins: usize,
    /// Encoder positions (1500: 30 s of audio after the stride-2 convolution).
    pub max_source_positions: usize,
    /// Decoder positions (448).
    pub max_target_positions: usize,
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// `<|startoftranscript|>`.
    pub decoder_start_token_id: u32,
    /// `<|endoftext|>`.
    pub eos_token_id: u32,
    /// Padding id (Whisper uses `<|endoftext|>`).
    pub pad_token_id: u32,
    /// Tokens never generated (from `generation_config.json`, else `config.json`).
    pub suppress_tokens: Vec<u32>,
    /// Tokens not generated at the first step (same sources).
    pub begin_suppress_tokens: Vec<u32>,
    /// Multiply token embeddings by `sqrt(d_model)` (false for every released Whisper).
    pub scale_embedding: bool,
    /// Whether the model is multilingual (prompt with language and task tokens):
    /// `generation_config.json`'s `is_multilingual`, else Whisper's rule `vocab_size >= 51865`.
    pub is_multilingual: bool,
    /// Layer-norm epsilon (PyTorch's default, 1e-5, as in HF Whisper).
    pub layer_norm_eps: f64,
}

impl WhisperConfig {
    /// Reads `dir/config.json` and, when present, `dir/generation_config.json`.
    ///
    /// Refuses a `model_type` other than `"whisper"` ([`WhisperError::WrongModelType`]) and
    /// activation functions other than `gelu`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("config.json");
        let v = read_json(&path)?;
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.is_file() {
            Some(read_json(&gen_path)?)
        } else {
            None
        };
        Self::from_json(&v, generation.as_ref(), &path)
    }

    /// Builds the configuration from parsed `config.json` (and `generation_config.json`)
    /// values; `path` is used in error messages.
    pub fn from_json(v: &Value, generation: Option<&Value>, path: &Path) -> Result<Self> {
        let field = |name: &str, reason: &str| WhisperError::ConfigField {
            path: path.to_path_buf(),
            field: name.to_string(),
            reason: reason.to_string(),
        };
        match v.get("model_type").and_then(Value::as_str) {
            Some("whisper") => {}
            Some(other) => {
                return Err(WhisperError::WrongModelType {
                    path: path.to_path_buf(),
                    found: other.to_string(),
                });
            }
            None => return Err(field("model_type", "missing (expected \"whisper\")")),
        }
        let usize_of = |name: &str| -> Result<usize> {
            v.get(name)
                .and_then(Value::as_u64)
                .filter(|x| *x > 0)
                .map(|x| x as usize)
                .ok_or_else(|| field(name, "missing or not a positive integer"))
        };
        let id_of = |name: &str, default: Option<u32>| -> Result<u32> {
            match v.get(name) {
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| field(name, "not a token id")),
                None | Some(Value::Null) => default.ok_or_else(|| field(name, "missing")),
                Some(_) => Err(field(name, "not a token id")),
            }
        };
        if let Some(act) = v.get("activation_function").and_then(Value::as_str)
            && act != "gelu"
        {
            return Err(field(
                "activation_function",
                &format!("{act:?} is not supported (only \"gelu\")"),
            ));
        }
        let d_model = usize_of("d_model")?;
        let encoder_attention_heads = usize_of("encoder_attention_heads")?;
        let decoder_attention_heads = usize_of("decoder_attention_heads")?;
        for (name, heads) in [
            ("encoder_attention_heads", encoder_attention_heads),
            ("decoder_attention_heads", decoder_attention_heads),
        ] {
            if d_model % heads != 0 {
                return Err(field(
                    name,
                    &format!("{heads} does not divide d_model = {d_model}"),
                ));
            }
        }
        let vocab_size = usize_of("vocab_size")?;
        let eos_token_id = id_of("eos_token_id", None)?;
        // Token lists: generation_config.json first (where transformers keeps them), then
        // config.json.
        let list = |name: &str| -> Result<Vec<u32>> {
            let (src, value) = match generation.and_then(|g| g.get(name)) {
                Some(x) if !x.is_null() => (PathBuf::from("generation_config.json"), Some(x)),
                _ => (path.to_path_buf(), v.get(name)),
            };
            match value {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|x| {
                        x.as_u64()
                            .and_then(|x| u32::try_from(x).ok())
                            .ok_or_else(|| WhisperError::ConfigField {
                                path: src.clone(),
                                field: name.to_string(),
                                reason: format!("{x} is not a token id"),
                            })
                    })
                    .collect(),
                Some(other) => Err(WhisperError::ConfigField {
                    path: src,
                    field: name.to_string(),
                    reason: format!("expected a list of token ids, got {other}"),
                }),
            }
        };
        let is_multilingual = generation
            .and_then(|g| g.get("is_multilingual"))
            .and_then(Value::as_bool)
            .unwrap_or(vocab_size >= 51865);
        let config = Self {
            d_model,
            encoder_layers: usize_of("encoder_layers")?,
            encoder_attention_heads,
            encoder_ffn_dim: usize_of("encoder_ffn_dim")?,
            decoder_layers: usize_of("decoder_layers")?,
            decoder_attention_heads,
            decoder_ffn_dim: usize_of("decoder_ffn_dim")?,
            num_mel_bins: usize_of("num_mel_bins")?,
            max_source_positions: usize_of("max_source_positions")?,
            max_target_positions: usize_of("max_target_positions")?,
            vocab_size,
            decoder_start_token_id: id_of("decoder_start_token_id", None)?,
            eos_token_id,
            pad_token_id: id_of("pad_token_id", Some(eos_token_id))?,
            suppress_tokens: list("suppress_tokens")?,
            begin_suppress_tokens: list("begin_suppress_tokens")?,
            scale_embedding: v
                .get("scale_embedding")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            is_multilingual,
            layer_norm_eps: 1e-5,
        };
        for (name, id) in [
            ("decoder_start_token_id", config.decoder_start_token_id),
            ("eos_token_id", config.eos_token_id),
        ] {
            if id as usize >= vocab_size {
                return Err(field(
                    name,
                    &format!("{id} is not below vocab_size = {vocab_size}"),
                ));
            }
        }
        Ok(config)
    }

    /// Encoder head size.
    pub fn encoder_head_dim(&self) -> usize {
        self.d_model / self.encoder_attention_heads
    }

    /// Decoder head size.
    pub fn decoder_head_dim(&self) -> usize {
        self.d_model / self.decoder_attention_heads
    }

    /// Mel frames the encoder takes for one 30 s window (`2 * max_source_positions`).
    pub fn input_frames(&self) -> usize {
        2 * self.max_source_positions
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| WhisperError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A projection of a Whisper block that can carry a Flexi-LoRA adapter, by its HF name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WhisperTarget {
    /// `q_proj` (self- and cross-attention).
    Q,
    /// `k_proj`.
    K,
    /// `v_proj`.
    V,
    /// `out_proj`.
    Out,
    /// `fc1`.
    Fc1,
    /// `fc2`.
    Fc2,
}

impl WhisperTarget {
    /// All six projections.
    pub const ALL: [WhisperTarget; 6] = [
        WhisperTarget::Q,
        WhisperTarget::K,
        WhisperTarget::V,
        WhisperTarget::Out,
        WhisperTarget::Fc1,
        WhisperTarget::Fc2,
    ];

    /// The HF module name.
    pub fn name(&self) -> &'static str {
        match self {
            WhisperTarget::Q => "q_proj",
            WhisperTarget::K => "k_proj",
            WhisperTarget::V => "v_proj",
            WhisperTarget::Out => "out_proj",
            WhisperTarget::Fc1 => "fc1",
            WhisperTarget::Fc2 => "fc2",
        }
    }
}

impl std::fmt::Display for WhisperTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WhisperTarget {
    type Err = WhisperError;

    fn from_str(s: &str) -> Result<Self> {
        WhisperTarget::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| {
                WhisperError::InvalidInput(format!(
                    "unknown Whisper LoRA target {s:?}: expected one of q_proj,k_proj,v_proj,out_proj,fc1,fc2"
                ))
            })
    }
}

/// Which projections carry a Flexi-LoRA adapter: target names, in which stacks (encoder self-
/// attention and MLP; decoder self-attention, cross-attention and MLP), and its size.
#[derive(Clone, Debug, PartialEq)]
pub struct WhisperAdapter {
    /// Adapted projection names.
    pub targets: Vec<WhisperTarget>,
    /// Adapt the encoder's projections.
    pub encoder: bool,
    /// Adapt the decoder's projections (self- and cross-attention, MLP).
    pub decoder: bool,
    /// Rank, alpha, scale, SVD form, dropout.
    pub lora: flexi_burn::LoraSettings,
}

impl WhisperAdapter {
    /// No adapter: every projection is a plain frozen `Linear` (ranks must then be 0).
    pub fn none() -> Self {
        Self {
            targets: Vec::new(),
            encoder: false,
            decoder: false,
            lora: flexi_burn::LoraSettings::new(1, 1.0),
        }
    }

    /// An adapter of `r_max` and `alpha` (scale `alpha / r`) on `targets` in both stacks.
    pub fn new(targets: Vec<WhisperTarget>, r_max: usize, alpha: f64) -> Self {
        Self {
            targets,
            encoder: true,
            decoder: true,
            lora: flexi_burn::LoraSettings::new(r_max, alpha),
        }
    }

    /// All six projections (`q_proj,k_proj,v_proj,out_proj,fc1,fc2`) in both stacks.
    pub fn all(r_max: usize, alpha: f64) -> Self {
        Self::new(WhisperTarget::ALL.to_vec(), r_max, alpha)
    }

    /// Parses a comma-separated list such as `q_proj,v_proj`.
    pub fn parse_targets(list: &str) -> Result<Vec<WhisperTarget>> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect()
    }

    /// Whether target `t` in the encoder (`encoder = true`) or decoder is adapted.
    pub fn adapts(&self, t: WhisperTarget, encoder: bool) -> bool {
        (if encoder { self.encoder } else { self.decoder }) && self.targets.contains(&t)
    }

    /// The largest rank a forward pass accepts: `r_max`, or 0 without any adapted projection.
    pub fn max_rank(&self) -> usize {
        if self.targets.is_empty() || !(self.encoder || self.decoder) {
            0
        } else {
            self.lora.r_max
        }
    }
}
