//! Loading Hugging Face Whisper checkpoints (`model.safetensors`, f32 / f16 / bf16) into
//! [`Whisper`], with Flexi-LoRA adapters on the projections the [`WhisperAdapter`] names.
//!
//! Tensors are read with the shared safetensors reader [`crate::format::Checkpoint`]
//! (memory-mapped, converted to f32 on the host, exact for f16 / bf16). Names follow
//! transformers' `WhisperForConditionalGeneration`:
//!
//! | HF tensor | here |
//! | --- | --- |
//! | `model.encoder.conv{1,2}.{weight,bias}` | `Conv1d` (same `[out, in, k]` layout) |
//! | `model.encoder.embed_positions.weight` | encoder positions |
//! | `model.{encoder,decoder}.layers.N.self_attn.{q,k,v,out}_proj.*` | `WhisperAttention` (`k_proj` has no bias) |
//! | `model.decoder.layers.N.encoder_attn.*` | cross-attention |
//! | `model.*.layers.N.{self_attn,encoder_attn,final}_layer_norm.{weight,bias}` | `LayerNorm` gamma / beta |
//! | `model.*.layers.N.fc{1,2}.*` | MLP |
//! | `model.{encoder,decoder}.layer_norm.*` | final norms |
//! | `model.decoder.embed_tokens.weight`, `model.decoder.embed_positions.weight` | decoder embeddings |
//! | `proj_out.weight` (if saved) | ignored: tied to `embed_tokens` |
//!
//! Linear weights `[out, in]` are transposed to Burn's `[in, out]`. A missing tensor, a shape
//! other than the configuration implies, and any tensor left unused are errors naming it.

use std::path::Path;

use burn::module::Param;
use burn::nn::conv::Conv1d;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, PaddingConfig1d};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::attention::WhisperAttention;
use super::config::{WhisperAdapter, WhisperConfig, WhisperTarget};
use super::decoder::{DecoderLayer, WhisperDecoder};
use super::encoder::{EncoderLayer, WhisperEncoder};
use super::error::Result;
use super::model::Whisper;
use crate::format::Checkpoint;
use crate::proj::Proj;

/// Llama's checkpoint builder (frozen tensors, host-transposed linears) plus the adapter.
struct Builder<'a, B: Backend> {
    base: crate::format::Builder<'a, B>,
    adapter: &'a WhisperAdapter,
}

impl<B: Backend> Builder<'_, B> {
    fn frozen<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Param<Tensor<B, D>>> {
        Ok(self.base.frozen(name, shape)?)
    }

    fn proj(
        &mut self,
        prefix: &str,
        target: WhisperTarget,
        encoder: bool,
        (d_in, d_out): (usize, usize),
        bias: bool,
    ) -> Result<Proj<B>> {
        let base = self
            .base
            .linear(&format!("{prefix}.{}", target.name()), d_in, d_out, bias)?;
        if !self.adapter.adapts(target, encoder) {
            return Ok(Proj::Plain(base));
        }
        let layer = self
            .adapter
            .lora
            .layer(d_in, d_out)
            .with_bias(bias)
            .try_wrap(base)?;
        Ok(Proj::Adapted(layer))
    }

    fn norm(&mut self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm<B>> {
        let mut ln = LayerNormConfig::new(dim)
            .with_epsilon(eps)
            .init::<B>(self.base.device);
        ln.gamma = self.frozen(&format!("{prefix}.weight"), [dim])?;
        ln.beta = Some(self.frozen(&format!("{prefix}.bias"), [dim])?);
        Ok(ln)
    }

    fn conv(
        &mut self,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Conv1d<B>> {
        Ok(Conv1d {
            weight: self.frozen(&format!("{prefix}.weight"), [c_out, c_in, 3])?,
            bias: Some(self.frozen(&format!("{prefix}.bias"), [c_out])?),
            stride,
            kernel_size: 3,
            dilation: 1,
            groups: 1,
            padding: PaddingConfig1d::Explicit(1, 1),
        })
    }

    fn attention(
        &mut self,
        prefix: &str,
        encoder: bool,
        d: usize,
        heads: usize,
    ) -> Result<WhisperAttention<B>> {
        Ok(WhisperAttention {
            q_proj: self.proj(prefix, WhisperTarget::Q, encoder, (d, d), true)?,
            k_proj: self.proj(prefix, WhisperTarget::K, encoder, (d, d), false)?,
            v_proj: self.proj(prefix, WhisperTarget::V, encoder, (d, d), true)?,
            out_proj: self.proj(prefix, WhisperTarget::Out, encoder, (d, d), true)?,
            heads,
            head_dim: d / heads,
        })
    }
}

/// Loads `dir` (`config.json`, optional `generation_config.json`, `model.safetensors`) with
/// adapters as `adapter` says (PEFT init: B = 0, so any rank equals the base model until
/// trained). Refuses a `model_type` other than `whisper`.
pub fn load_whisper<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &WhisperAdapter,
    device: &B::Device,
) -> Result<Whisper<B>> {
    load_whisper_in(dir, adapter, flexi_burn::Precision::F32, device)
}

/// [`load_whisper`] with the frozen matrices (every projection's base and the token table)
/// stored in `precision`'s type as each tensor is read, so a half-precision model never
/// exists in f32 as a whole (mixed precision, [`flexi_burn::precision`]); the same model as
/// `load_whisper(..).store_frozen_in(precision)`.
pub fn load_whisper_in<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &WhisperAdapter,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<Whisper<B>> {
    let dir = dir.as_ref();
    let config = WhisperConfig::from_dir(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    let model = build_whisper_in(&config, &mut ckpt, adapter, precision, device)?;
    ckpt.finish(|name| name == "proj_out.weight")?;
    Ok(model)
}

/// Builds the model from an opened checkpoint (names as in the module docs).
pub fn build_whisper<B: Backend>(
    config: &WhisperConfig,
    ckpt: &mut Checkpoint,
    adapter: &WhisperAdapter,
    device: &B::Device,
) -> Result<Whisper<B>> {
    build_whisper_in(config, ckpt, adapter, flexi_burn::Precision::F32, device)
}

/// [`build_whisper`] with the frozen matrices stored in `precision`'s type (see
/// [`load_whisper_in`]).
pub fn build_whisper_in<B: Backend>(
    config: &WhisperConfig,
    ckpt: &mut Checkpoint,
    adapter: &WhisperAdapter,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<Whisper<B>> {
    let c = config;
    let d = c.d_model;
    let eps = c.layer_norm_eps;
    let mut b = Builder::<B> {
        base: crate::format::Builder {
            ckpt,
            device,
            matrices: precision,
        },
        adapter,
    };

    let conv1 = b.conv("model.encoder.conv1", c.num_mel_bins, d, 1)?;
    let conv2 = b.conv("model.encoder.conv2", d, d, 2)?;
    let enc_pos = b.frozen(
        "model.encoder.embed_positions.weight",
        [c.max_source_positions, d],
    )?;
    let mut enc_layers = Vec::with_capacity(c.encoder_layers);
    for i in 0..c.encoder_layers {
        let p = format!("model.encoder.layers.{i}");
        enc_layers.push(EncoderLayer {
            self_attn_layer_norm: b.norm(&format!("{p}.self_attn_layer_norm"), d, eps)?,
            self_attn: b.attention(
                &format!("{p}.self_attn"),
                true,
                d,
                c.encoder_attention_heads,
            )?,
            final_layer_norm: b.norm(&format!("{p}.final_layer_norm"), d, eps)?,
            fc1: b.proj(&p, WhisperTarget::Fc1, true, (d, c.encoder_ffn_dim), true)?,
            fc2: b.proj(&p, WhisperTarget::Fc2, true, (c.encoder_ffn_dim, d), true)?,
        });
    }
    let encoder = WhisperEncoder {
        conv1,
        conv2,
        embed_positions: enc_pos,
        layers: enc_layers,
        layer_norm: b.norm("model.encoder.layer_norm", d, eps)?,
    };

    let embed_tokens = Embedding {
        weight: b
            .base
            .frozen_matrix("model.decoder.embed_tokens.weight", [c.vocab_size, d])?,
    };
    let dec_pos = b.frozen(
        "model.decoder.embed_positions.weight",
        [c.max_target_positions, d],
    )?;
    let mut dec_layers = Vec::with_capacity(c.decoder_layers);
    for i in 0..c.decoder_layers {
        let p = format!("model.decoder.layers.{i}");
        let heads = c.decoder_attention_heads;
        dec_layers.push(DecoderLayer {
            self_attn_layer_norm: b.norm(&format!("{p}.self_attn_layer_norm"), d, eps)?,
            self_attn: b.attention(&format!("{p}.self_attn"), false, d, heads)?,
            encoder_attn_layer_norm: b.norm(&format!("{p}.encoder_attn_layer_norm"), d, eps)?,
            encoder_attn: b.attention(&format!("{p}.encoder_attn"), false, d, heads)?,
            final_layer_norm: b.norm(&format!("{p}.final_layer_norm"), d, eps)?,
            fc1: b.proj(&p, WhisperTarget::Fc1, false, (d, c.decoder_ffn_dim), true)?,
            fc2: b.proj(&p, WhisperTarget::Fc2, false, (c.decoder_ffn_dim, d), true)?,
        });
    }
    let decoder = WhisperDecoder {
        embed_tokens,
        embed_positions: dec_pos,
        layers: dec_layers,
        layer_norm: b.norm("model.decoder.layer_norm", d, eps)?,
        embed_scale: if c.scale_embedding {
            (d as f64).sqrt()
        } else {
            1.0
        },
    };
    Ok(Whisper {
        encoder,
        decoder,
        config: config.clone(),
        max_rank: adapter.max_rank(),
    })
}
