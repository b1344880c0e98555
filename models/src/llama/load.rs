//! Loading Hugging Face checkpoints (`model.safetensors` or a sharded
//! `model.safetensors.index.json`, f32 / f16 / bf16) and PEFT LoRA adapters.
//!
//! Files are memory-mapped and read with the `safetensors` crate; every tensor is converted to
//! f32 on the host (exact for f16 and bf16) and handed to the backend, which stores it in its
//! own float type. HF linear weights `[out, in]` are transposed to Burn's `[in, out]`.
//!
//! Errors name the file and the tensor: a corrupt or truncated file, a tensor the
//! configuration needs but the checkpoint lacks, a tensor of the wrong shape, and tensors the
//! model does not use.

use std::path::Path;

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flexi_burn::Precision;
use serde_json::Value;

use crate::format::{Builder, Checkpoint};

use super::attention::Attention;
use super::config::LlamaConfig;
use super::error::{LlamaError, Result, io_err};
use super::linear::{AdapterConfig, Proj, Target};
use super::mlp::Mlp;
use super::model::{DecoderLayer, Llama, RmsNorm};
use super::rope::RotaryEmbedding;

/// The Llama-specific pieces of the builder: adapter-aware projections and RMSNorm.
impl<B: Backend> Builder<'_, B> {
    fn proj(
        &mut self,
        prefix: &str,
        target: Target,
        (d_in, d_out): (usize, usize),
        bias: bool,
        adapter: &AdapterConfig,
    ) -> Result<Proj<B>> {
        let base = self.linear(prefix, d_in, d_out, bias)?;
        if !adapter.adapts(target) {
            return Ok(Proj::Plain(base));
        }
        let layer = adapter
            .lora
            .layer(d_in, d_out)
            .with_bias(bias)
            .try_wrap(base)?;
        Ok(Proj::Adapted(layer))
    }

    fn norm(&mut self, name: &str, dim: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNorm {
            weight: self.frozen(name, [dim])?,
            eps,
        })
    }
}

/// Loads a model directory (`config.json` + weights) with Flexi-LoRA adapters on the
/// projections `adapter.targets` (PEFT-initialised: A random, B zero, so rank > 0 equals the
/// base model until trained or until an adapter is loaded with [`load_peft_adapter`]).
pub fn load_llama<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &AdapterConfig,
    device: &B::Device,
) -> Result<Llama<B>> {
    load_llama_in(dir, adapter, Precision::F32, device)
}

/// [`load_llama`] with the frozen matrices (projections, embedding, LM head) stored in
/// `precision`'s type, converted tensor by tensor while loading: a bf16 model's peak is its
/// bf16 size plus one tensor in f32, never the whole model in f32.
pub fn load_llama_in<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &AdapterConfig,
    precision: Precision,
    device: &B::Device,
) -> Result<Llama<B>> {
    let dir = dir.as_ref();
    let config = LlamaConfig::from_dir(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    let model = build_llama_in(&config, &mut ckpt, adapter, precision, device)?;
    let tied = config.tie_word_embeddings;
    ckpt.finish(|name| {
        // Tied checkpoints sometimes still carry the head; old ones saved RoPE buffers.
        (tied && name == "lm_head.weight") || name.ends_with("rotary_emb.inv_freq")
    })?;
    Ok(model)
}

/// Builds the model from an opened checkpoint (HF names `model.layers.{i}...`).
pub fn build_llama<B: Backend>(
    config: &LlamaConfig,
    ckpt: &mut Checkpoint,
    adapter: &AdapterConfig,
    device: &B::Device,
) -> Result<Llama<B>> {
    build_llama_in(config, ckpt, adapter, Precision::F32, device)
}

/// [`build_llama`] with the frozen matrices stored in `precision`'s type (see
/// [`load_llama_in`]).
pub fn build_llama_in<B: Backend>(
    config: &LlamaConfig,
    ckpt: &mut Checkpoint,
    adapter: &AdapterConfig,
    precision: Precision,
    device: &B::Device,
) -> Result<Llama<B>> {
    let c = config;
    let mut b = Builder::<B> {
        ckpt,
        device,
        matrices: precision,
    };
    let (hidden, inter) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;

    let embed_tokens = Embedding {
        weight: b.frozen_matrix("model.embed_tokens.weight", [c.vocab_size, hidden])?,
    };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let (ab, mb) = (c.attention_bias, c.mlp_bias);
        let mut proj =
            |t: Target, dims, bias| b.proj(&format!("{p}.{}", t.path()), t, dims, bias, adapter);
        let self_attn = Attention {
            q_proj: proj(Target::Q, (hidden, q), ab)?,
            k_proj: proj(Target::K, (hidden, kv), ab)?,
            v_proj: proj(Target::V, (hidden, kv), ab)?,
            o_proj: proj(Target::O, (q, hidden), ab)?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        };
        let mlp = Mlp {
            gate_proj: proj(Target::Gate, (hidden, inter), mb)?,
            up_proj: proj(Target::Up, (hidden, inter), mb)?,
            down_proj: proj(Target::Down, (inter, hidden), mb)?,
        };
        layers.push(DecoderLayer {
            input_layernorm: b.norm(
                &format!("{p}.input_layernorm.weight"),
                hidden,
                c.rms_norm_eps,
            )?,
            self_attn,
            post_attention_layernorm: b.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                hidden,
                c.rms_norm_eps,
            )?,
            mlp,
        });
    }
    let norm = b.norm("model.norm.weight", hidden, c.rms_norm_eps)?;
    let lm_head = match c.tie_word_embeddings {
        true => None,
        false => Some(b.linear("lm_head", hidden, c.vocab_size, false)?),
    };
    Ok(Llama {
        embed_tokens,
        layers,
        norm,
        lm_head,
        config: config.clone(),
        rope: RotaryEmbedding::new(config),
    })
}

/// A plain PEFT LoRA adapter directory's settings (`adapter_config.json`): one `r` and
/// `lora_alpha` for every module, `target_modules` a list of projection names. The full
/// reader (AdaLoRA, regex targets, `rank_pattern` / `alpha_pattern`, Whisper, dtype checks)
/// is `train::peft`, which the commands use.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftAdapter {
    /// `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `target_modules`.
    pub targets: Vec<Target>,
    /// `use_rslora`: the scale is `lora_alpha / sqrt(r)` instead of `lora_alpha / r`.
    pub use_rslora: bool,
}

impl PeftAdapter {
    /// Reads `dir/adapter_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("adapter_config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let v: Value = serde_json::from_str(&text).map_err(|source| LlamaError::Json {
            path: path.clone(),
            source,
        })?;
        let field = |name: &str, reason: &str| LlamaError::ConfigField {
            path: path.clone(),
            field: name.into(),
            reason: reason.into(),
        };
        let r = v
            .get("r")
            .and_then(Value::as_u64)
            .filter(|r| *r > 0)
            .ok_or_else(|| field("r", "missing or not a positive integer"))?
            as usize;
        let lora_alpha = v
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| field("lora_alpha", "missing or not a number"))?;
        let targets = match v.get("target_modules") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| field("target_modules", "expected strings"))?
                        .parse::<Target>()
                        .map_err(|e| field("target_modules", &e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(Value::String(s)) => AdapterConfig::parse_targets(s)
                .map_err(|e| field("target_modules", &e.to_string()))?,
            _ => return Err(field("target_modules", "missing")),
        };
        let use_rslora = match v.get("use_rslora") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(field("use_rslora", "expected true or false")),
        };
        Ok(Self {
            r,
            lora_alpha,
            targets,
            use_rslora,
        })
    }

    /// The matching Flexi-LoRA configuration: `r_max = r`, `alpha = lora_alpha`, so rank `r`
    /// reproduces PEFT's scale `lora_alpha / r` (rsLoRA: `lora_alpha / sqrt(r)`).
    pub fn adapter_config(&self) -> AdapterConfig {
        let mut targets = self.targets.clone();
        targets.sort();
        let mut config = AdapterConfig::new(targets, self.r, self.lora_alpha);
        if self.use_rslora {
            config.lora.scale = flexi_burn::ScalePolicy::AlphaOverSqrtRank;
        }
        config
    }
}

/// Loads a base model and a PEFT adapter directory (`adapter_config.json`,
/// `adapter_model.safetensors`) into one model with `r_max = r`.
pub fn load_llama_with_peft<B: Backend>(
    model_dir: impl AsRef<Path>,
    adapter_dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Llama<B>> {
    let peft = PeftAdapter::from_dir(&adapter_dir)?;
    let mut model = load_llama(model_dir, &peft.adapter_config(), device)?;
    load_peft_adapter(&mut model, adapter_dir)?;
    Ok(model)
}

/// Copies PEFT LoRA factors (`base_model.model.model.layers.{i}.{path}.lora_A.weight [r, in]`,
/// `lora_B.weight [out, r]`) into the first `r` components of every adapted projection whose
/// target the adapter lists. The model's `r_max` must be at least `r`; components beyond `r`
/// are left as they are.
pub fn load_peft_adapter<B: Backend>(
    model: &mut Llama<B>,
    adapter_dir: impl AsRef<Path>,
) -> Result<()> {
    let dir = adapter_dir.as_ref();
    let peft = PeftAdapter::from_dir(dir)?;
    let file = dir.join("adapter_model.safetensors");
    let mut ckpt = Checkpoint::open(&file)?;
    let device = model.embed_tokens.weight.device();
    let r = peft.r;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for t in &peft.targets {
            let proj = match t {
                Target::Q => &mut layer.self_attn.q_proj,
                Target::K => &mut layer.self_attn.k_proj,
                Target::V => &mut layer.self_attn.v_proj,
                Target::O => &mut layer.self_attn.o_proj,
                Target::Gate => &mut layer.mlp.gate_proj,
                Target::Up => &mut layer.mlp.up_proj,
                Target::Down => &mut layer.mlp.down_proj,
            };
            let Some(lora) = proj.adapter_mut() else {
                return Err(LlamaError::Adapter {
                    path: file.clone(),
                    reason: format!("the adapter targets {t}, which the model was built without"),
                });
            };
            let (d_in, d_out, r_max) = (lora.d_input(), lora.d_output(), lora.r_max());
            if r > r_max {
                return Err(LlamaError::Adapter {
                    path: file.clone(),
                    reason: format!("adapter rank r = {r} exceeds the model's r_max = {r_max}"),
                });
            }
            let prefix = format!("base_model.model.model.layers.{i}.{}", t.path());
            let a: Tensor<B, 2> = Tensor::from_data(
                ckpt.take(&format!("{prefix}.lora_A.weight"), &[r, d_in])?,
                &device,
            );
            let bm: Tensor<B, 2> = Tensor::from_data(
                ckpt.take(&format!("{prefix}.lora_B.weight"), &[d_out, r])?,
                &device,
            );
            let (a, bm) = if r < r_max {
                let a_rest = lora.lora_a.val().slice([r..r_max, 0..d_in]);
                let b_rest = lora.lora_b.val().slice([0..d_out, r..r_max]);
                (
                    Tensor::cat(vec![a, a_rest], 0),
                    Tensor::cat(vec![bm, b_rest], 1),
                )
            } else {
                (a, bm)
            };
            lora.lora_a = Param::from_tensor(a.detach());
            lora.lora_b = Param::from_tensor(bm.detach());
        }
    }
    Ok(ckpt.finish(|_| false)?)
}
