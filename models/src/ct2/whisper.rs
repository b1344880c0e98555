//! CTranslate2 `WhisperSpec` (revision 3) -> Hugging Face `WhisperForConditionalGeneration`.
//!
//! | CTranslate2 | Hugging Face |
//! | --- | --- |
//! | `encoder/conv{1,2}/{weight,bias}` | `model.encoder.conv{1,2}.*` |
//! | `{encoder,decoder}/position_encodings/encodings` | `model.{encoder,decoder}.embed_positions.weight` |
//! | `{enc,dec}/layer_N/self_attention/linear_0` (fused `[q; k; v]`) | `...layers.N.self_attn.{q,k,v}_proj` |
//! | `{enc,dec}/layer_N/self_attention/linear_1` | `...self_attn.out_proj` |
//! | `{enc,dec}/layer_N/self_attention/layer_norm/{gamma,beta}` | `...self_attn_layer_norm.{weight,bias}` |
//! | `decoder/layer_N/attention/linear_0` | `...encoder_attn.q_proj` |
//! | `decoder/layer_N/attention/linear_1` (fused `[k; v]`) | `...encoder_attn.{k,v}_proj` |
//! | `decoder/layer_N/attention/linear_2` | `...encoder_attn.out_proj` |
//! | `decoder/layer_N/attention/layer_norm` | `...encoder_attn_layer_norm` |
//! | `{enc,dec}/layer_N/ffn/linear_{0,1}`, `ffn/layer_norm` | `...fc1`, `...fc2`, `...final_layer_norm` |
//! | `{encoder,decoder}/layer_norm` | `model.{encoder,decoder}.layer_norm` |
//! | `decoder/embeddings/weight` | `model.decoder.embed_tokens.weight` |
//! | `decoder/projection/weight` (alias of the embeddings) | tied: not loaded |
//!
//! HF's `k_proj` has no bias: the converter fills zeros into the fused bias, which are
//! checked and dropped. The scalar settings must be Whisper's (GELU, pre-norm, no embedding
//! scale, no ALiBi).

use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use serde_json::{Value, json};

use super::error::{Ct2Error, Result};
use super::reader::Ct2Model;
use crate::format::Checkpoint;
use crate::whisper::{Whisper, WhisperAdapter, WhisperConfig, build_whisper_in};

/// The spec this mapping reads.
pub const WHISPER_SPEC: &str = "WhisperSpec";
/// The spec revision this mapping reads (ctranslate2 3.x / 4.x).
pub const WHISPER_REVISION: u32 = 3;

/// CTranslate2's `Activation.GELU`.
const GELU: i64 = 3;

/// Checks the spec name and revision.
pub fn check_whisper_spec(model: &Ct2Model) -> Result<()> {
    if model.spec != WHISPER_SPEC || model.revision != WHISPER_REVISION {
        return Err(Ct2Error::UnsupportedSpec {
            path: model.path().to_path_buf(),
            spec: model.spec.clone(),
            revision: model.revision,
            supported: format!("{WHISPER_SPEC} revision {WHISPER_REVISION}"),
        });
    }
    Ok(())
}

fn count_layers(model: &Ct2Model, stack: &str) -> usize {
    (0..)
        .take_while(|i| {
            model
                .variable(&format!("{stack}/layer_{i}/ffn/linear_0/weight"))
                .is_some()
        })
        .count()
}

fn dim(model: &Ct2Model, name: &str, axis: usize) -> Result<usize> {
    let v = model
        .variable(name)
        .ok_or_else(|| Ct2Error::MissingVariable {
            path: model.path().to_path_buf(),
            name: name.into(),
        })?;
    v.shape
        .get(axis)
        .copied()
        .ok_or_else(|| Ct2Error::Malformed {
            path: model.path().to_path_buf(),
            what: format!("variable {name}"),
            reason: format!("shape {:?} has no axis {axis}", v.shape),
        })
}

/// The id of `token` in the model directory's `vocabulary.txt` (one token per line, the
/// vocabulary CTranslate2 itself uses) or, failing that, `tokenizer.json`. CTranslate2's
/// converter appends Whisper's timestamp tokens (`<|0.00|>` ... `<|30.00|>`) to
/// `vocabulary.txt`, so their ids can be read here even where `tokenizer.json` lacks them.
pub fn vocabulary_token_id(dir: &Path, token: &str) -> Result<u32> {
    let vocab = dir.join("vocabulary.txt");
    if let Ok(text) = std::fs::read_to_string(&vocab) {
        return text
            .lines()
            .position(|l| l == token)
            .map(|i| i as u32)
            .ok_or_else(|| Ct2Error::Malformed {
                path: vocab.clone(),
                what: "vocabulary".into(),
                reason: format!("no token {token}"),
            });
    }
    let path = dir.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&path).map_err(|e| Ct2Error::Malformed {
        path: path.clone(),
        what: "tokenizer".into(),
        reason: e.to_string(),
    })?;
    tok.token_to_id(token).ok_or_else(|| Ct2Error::Malformed {
        path,
        what: "tokenizer".into(),
        reason: format!("no token {token}"),
    })
}

fn ids(v: Option<&Value>) -> Value {
    v.filter(|v| v.is_array()).cloned().unwrap_or(json!([]))
}

/// HF `config.json` and `generation_config.json` equivalents for a CTranslate2 Whisper
/// directory: sizes from the variables' shapes and the `num_heads` scalars, token ids from the
/// vocabulary, suppressed tokens from CTranslate2's `config.json` (`suppress_ids`,
/// `suppress_ids_begin`).
pub fn whisper_config_json(model: &Ct2Model, dir: &Path) -> Result<(Value, Value)> {
    check_whisper_spec(model)?;
    let path = model.path().to_path_buf();
    for (name, want, reason) in [
        ("decoder/activation", GELU, "Whisper uses GELU"),
        ("decoder/pre_norm", 1, "Whisper is pre-norm"),
        (
            "decoder/scale_embeddings",
            0,
            "Whisper does not scale embeddings",
        ),
        ("decoder/alibi", 0, "Whisper has no ALiBi"),
    ] {
        if let Ok(got) = model.scalar_i64(name)
            && got != want
        {
            return Err(Ct2Error::UnsupportedSetting {
                path: path.clone(),
                name: name.into(),
                value: got.to_string(),
                reason: reason.into(),
            });
        }
    }
    let ct2_config: Value = match std::fs::read_to_string(dir.join("config.json")) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| Ct2Error::Malformed {
            path: dir.join("config.json"),
            what: "JSON".into(),
            reason: e.to_string(),
        })?,
        Err(_) => json!({}),
    };
    let eos = vocabulary_token_id(dir, "<|endoftext|>")?;
    let config = json!({
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "activation_function": "gelu",
        "d_model": dim(model, "decoder/embeddings/weight", 1)?,
        "vocab_size": dim(model, "decoder/embeddings/weight", 0)?,
        "encoder_layers": count_layers(model, "encoder"),
        "decoder_layers": count_layers(model, "decoder"),
        "encoder_attention_heads": model.scalar_i64("encoder/num_heads")?,
        "decoder_attention_heads": model.scalar_i64("decoder/num_heads")?,
        "encoder_ffn_dim": dim(model, "encoder/layer_0/ffn/linear_0/weight", 0)?,
        "decoder_ffn_dim": dim(model, "decoder/layer_0/ffn/linear_0/weight", 0)?,
        "num_mel_bins": dim(model, "encoder/conv1/weight", 1)?,
        "max_source_positions": dim(model, "encoder/position_encodings/encodings", 0)?,
        "max_target_positions": dim(model, "decoder/position_encodings/encodings", 0)?,
        "decoder_start_token_id": vocabulary_token_id(dir, "<|startoftranscript|>")?,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "bos_token_id": eos,
        "scale_embedding": false,
        "suppress_tokens": ids(ct2_config.get("suppress_ids")),
        "begin_suppress_tokens": ids(ct2_config.get("suppress_ids_begin")),
        "tie_word_embeddings": true,
    });
    let generation = json!({
        "suppress_tokens": ids(ct2_config.get("suppress_ids")),
        "begin_suppress_tokens": ids(ct2_config.get("suppress_ids_begin")),
        "alignment_heads": ct2_config.get("alignment_heads").cloned().unwrap_or(Value::Null),
    });
    Ok((config, generation))
}

/// A dequantised tensor under its Hugging Face name.
pub type HfTensor = (String, TensorData);

/// Every weight of a CTranslate2 Whisper model as f32 under its HF name (fused projections
/// split). Errors on variables the mapping does not know and on a non-zero fused `k` bias.
pub fn whisper_hf_tensors(model: &Ct2Model) -> Result<Vec<HfTensor>> {
    check_whisper_spec(model)?;
    let path = model.path().to_path_buf();
    let mut out: Vec<HfTensor> = Vec::new();
    let mut unknown = Vec::new();
    let push = |out: &mut Vec<HfTensor>, name: String, values: Vec<f32>, shape: Vec<usize>| {
        out.push((name, TensorData::new(values, shape)));
    };
    for v in model.variables() {
        let name = v.name.as_str();
        // Settings and quantisation scales are consumed elsewhere.
        if v.shape.is_empty() || name.ends_with("_scale") {
            continue;
        }
        let (values, shape) = model.to_f32(name)?;
        let parts: Vec<&str> = name.split('/').collect();
        let mapped: Mapped = match parts.as_slice() {
            ["encoder", conv @ ("conv1" | "conv2"), p] => {
                Some(vec![(format!("model.encoder.{conv}.{p}"), values, shape)])
            }
            [
                stack @ ("encoder" | "decoder"),
                "position_encodings",
                "encodings",
            ] => Some(vec![(
                format!("model.{stack}.embed_positions.weight"),
                values,
                shape,
            )]),
            [stack @ ("encoder" | "decoder"), "layer_norm", p] => norm_param(p)
                .map(|p| vec![(format!("model.{stack}.layer_norm.{p}"), values, shape)]),
            ["decoder", "embeddings", "weight"] => Some(vec![(
                "model.decoder.embed_tokens.weight".into(),
                values,
                shape,
            )]),
            [stack @ ("encoder" | "decoder"), layer, module, rest @ ..] => {
                let Some(i) = layer
                    .strip_prefix("layer_")
                    .and_then(|i| i.parse::<usize>().ok())
                else {
                    unknown.push(name.to_string());
                    continue;
                };
                let p = format!("model.{stack}.layers.{i}");
                layer_tensor(&path, name, &p, module, rest, values, shape)?
            }
            _ => None,
        };
        match mapped {
            Some(ts) => ts.into_iter().for_each(|(n, v, s)| push(&mut out, n, v, s)),
            None => unknown.push(name.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(Ct2Error::UnexpectedVariables {
            path,
            names: unknown,
        });
    }
    Ok(out)
}

fn norm_param(p: &str) -> Option<&'static str> {
    match p {
        "gamma" => Some("weight"),
        "beta" => Some("bias"),
        _ => None,
    }
}

type Mapped = Option<Vec<(String, Vec<f32>, Vec<usize>)>>;

/// Splits a fused `[n * d, ...]` weight or `[n * d]` bias into `n` equal row blocks.
fn split_rows(values: Vec<f32>, shape: &[usize], n: usize) -> Vec<(Vec<f32>, Vec<usize>)> {
    let rows = shape[0] / n;
    let per = values.len() / n;
    let mut s = shape.to_vec();
    s[0] = rows;
    values
        .chunks_exact(per)
        .map(|c| (c.to_vec(), s.clone()))
        .collect()
}

fn layer_tensor(
    path: &Path,
    name: &str,
    p: &str,
    module: &str,
    rest: &[&str],
    values: Vec<f32>,
    shape: Vec<usize>,
) -> Result<Mapped> {
    let hf_attn = match module {
        "self_attention" => "self_attn",
        "attention" => "encoder_attn",
        "ffn" => "ffn",
        _ => return Ok(None),
    };
    let one = |n: String| Ok(Some(vec![(n, values.clone(), shape.clone())]));
    match (module, rest) {
        ("ffn", ["layer_norm", q]) => match norm_param(q) {
            Some(q) => one(format!("{p}.final_layer_norm.{q}")),
            None => Ok(None),
        },
        ("ffn", [lin @ ("linear_0" | "linear_1"), q @ ("weight" | "bias")]) => {
            let fc = if *lin == "linear_0" { "fc1" } else { "fc2" };
            one(format!("{p}.{fc}.{q}"))
        }
        (_, ["layer_norm", q]) => match norm_param(q) {
            Some(q) => one(format!("{p}.{hf_attn}_layer_norm.{q}")),
            None => Ok(None),
        },
        // Self-attention: linear_0 = [q; k; v], linear_1 = out.
        ("self_attention", ["linear_0", q @ ("weight" | "bias")]) => split_qkv(
            path,
            name,
            p,
            hf_attn,
            &["q_proj", "k_proj", "v_proj"],
            q,
            values,
            &shape,
        ),
        ("self_attention", ["linear_1", q @ ("weight" | "bias")]) => {
            one(format!("{p}.{hf_attn}.out_proj.{q}"))
        }
        // Cross-attention: linear_0 = q, linear_1 = [k; v], linear_2 = out.
        ("attention", ["linear_0", q @ ("weight" | "bias")]) => {
            one(format!("{p}.{hf_attn}.q_proj.{q}"))
        }
        ("attention", ["linear_1", q @ ("weight" | "bias")]) => split_qkv(
            path,
            name,
            p,
            hf_attn,
            &["k_proj", "v_proj"],
            q,
            values,
            &shape,
        ),
        ("attention", ["linear_2", q @ ("weight" | "bias")]) => {
            one(format!("{p}.{hf_attn}.out_proj.{q}"))
        }
        _ => Ok(None),
    }
}

#[allow(clippy::too_many_arguments)]
fn split_qkv(
    path: &Path,
    name: &str,
    p: &str,
    attn: &str,
    projs: &[&str],
    param: &str,
    values: Vec<f32>,
    shape: &[usize],
) -> Result<Mapped> {
    if !shape[0].is_multiple_of(projs.len()) {
        return Err(Ct2Error::Malformed {
            path: path.to_path_buf(),
            what: format!("variable {name}"),
            reason: format!("{} rows do not split into {}", shape[0], projs.len()),
        });
    }
    let mut out = Vec::new();
    for (proj, (v, s)) in projs.iter().zip(split_rows(values, shape, projs.len())) {
        if *proj == "k_proj" && param == "bias" {
            // HF Whisper's k_proj has no bias; the converter wrote zeros.
            if v.iter().any(|&x| x != 0.0) {
                return Err(Ct2Error::Malformed {
                    path: path.to_path_buf(),
                    what: format!("variable {name}"),
                    reason: "the k part of the fused bias is not zero (HF Whisper's k_proj \
                             has no bias)"
                        .into(),
                });
            }
            continue;
        }
        out.push((format!("{p}.{attn}.{proj}.{param}"), v, s));
    }
    Ok(Some(out))
}

/// The [`WhisperConfig`] of a CTranslate2 Whisper directory.
pub fn whisper_config(model: &Ct2Model, dir: &Path) -> Result<WhisperConfig> {
    let (config, generation) = whisper_config_json(model, dir)?;
    Ok(WhisperConfig::from_json(
        &config,
        Some(&generation),
        model.path(),
    )?)
}

/// Loads a CTranslate2 Whisper directory (`model.bin`, `config.json`, `vocabulary.txt` or
/// `tokenizer.json`) into the Burn [`Whisper`] through the same builder and checks as HF
/// checkpoints. float16 / int8 weights are converted to f32 on the host.
pub fn load_whisper_ct2<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &WhisperAdapter,
    device: &B::Device,
) -> Result<Whisper<B>> {
    load_whisper_ct2_in(dir, adapter, flexi_burn::Precision::F32, device)
}

/// [`load_whisper_ct2`] with the frozen matrices stored in `precision`'s type on the device
/// as each is built ([`crate::whisper::load_whisper_in`]). The host still converts every
/// tensor of `model.bin` to f32 before the model is built (CTranslate2's Whisper models are
/// small: 39 M parameters for tiny, 74 M for base).
pub fn load_whisper_ct2_in<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &WhisperAdapter,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<Whisper<B>> {
    let dir = dir.as_ref();
    let model = Ct2Model::open(dir)?;
    let config = whisper_config(&model, dir)?;
    let tensors = whisper_hf_tensors(&model)?;
    let origin: PathBuf = model.path().to_path_buf();
    drop(model);
    let mut ckpt = Checkpoint::from_tensors(origin, tensors);
    let whisper = build_whisper_in(&config, &mut ckpt, adapter, precision, device)?;
    ckpt.finish(|_| false)
        .map_err(|e| Ct2Error::Whisper(e.into()))?;
    Ok(whisper)
}

/// Whether `dir` is a CTranslate2 model directory (has `model.bin`).
pub fn is_ct2_dir(dir: impl AsRef<Path>) -> bool {
    dir.as_ref().join("model.bin").is_file()
}

/// Loads Whisper from a CTranslate2 directory (has `model.bin`) or a Hugging Face directory
/// (`config.json` + safetensors), so commands accept either. Both ship `tokenizer.json`
/// (`WhisperTokenizer::from_dir` reads it from either).
pub fn load_whisper_any<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &WhisperAdapter,
    device: &B::Device,
) -> Result<Whisper<B>> {
    load_whisper_any_in(dir, adapter, flexi_burn::Precision::F32, device)
}

/// [`load_whisper_any`] with the frozen matrices stored in `precision`'s type as they are
/// read (mixed precision).
pub fn load_whisper_any_in<B: Backend>(
    dir: impl AsRef<Path>,
    adapter: &WhisperAdapter,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<Whisper<B>> {
    let dir = dir.as_ref();
    if is_ct2_dir(dir) {
        load_whisper_ct2_in(dir, adapter, precision, device)
    } else {
        Ok(crate::whisper::load_whisper_in(
            dir, adapter, precision, device,
        )?)
    }
}
