//! llama.cpp's Llama layout -> Hugging Face's: tensor names, the Q/K row permutation, and a
//! `config.json` equivalent from the GGUF metadata.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`) permutes the rows of `q_proj` and `k_proj`
//! so that its interleaved-pair RoPE computes HF's rotate-half RoPE: within each head of
//! `head_dim` rows, HF row `j * head_dim / 2 + i` (half `j` in 0..2, `i` in 0..head_dim/2)
//! becomes GGUF row `2 i + j`. [`unpermute_qk_rows`] undoes it.

use std::path::Path;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use serde_json::{Value, json};

use super::error::{GgufError, Result};
use super::reader::{GgufFile, MetaValue};
use crate::llama::{
    AdapterConfig, Checkpoint, JinjaChat, Llama, Llama3RopeScaling, LlamaConfig, Tokenizer,
};

/// The architectures [`llama_config_json`] accepts (`general.architecture`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

/// The HF name of a llama.cpp tensor name, or `None` for names outside the Llama layout.
///
/// `token_embd.weight` -> `model.embed_tokens.weight`, `blk.N.attn_q.weight` ->
/// `model.layers.N.self_attn.q_proj.weight`, `output.weight` -> `lm_head.weight`, ...
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    if param != "weight" && param != "bias" {
        return None;
    }
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// llama.cpp's forward Q/K permutation of a row-major `[rows, cols]` matrix (or a `[rows]`
/// bias with `cols = 1`) with `n_head` heads: HF row `h hd + j hd/2 + i` -> row `h hd + 2 i + j`.
/// The converter's `reshape(n_head, 2, hd / 2, cols).swapaxes(1, 2)`; kept for tests and for
/// writing GGUF files.
pub fn permute_qk_rows(w: &[f32], cols: usize, n_head: usize) -> Vec<f32> {
    qk_rows(w, cols, n_head, true)
}

/// The inverse of [`permute_qk_rows`]: GGUF row `h hd + 2 i + j` -> HF row `h hd + j hd/2 + i`.
pub fn unpermute_qk_rows(w: &[f32], cols: usize, n_head: usize) -> Vec<f32> {
    qk_rows(w, cols, n_head, false)
}

fn qk_rows(w: &[f32], cols: usize, n_head: usize, forward: bool) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..half {
                let hf = h * hd + j * half + i;
                let gg = h * hd + 2 * i + j;
                let (src, dst) = if forward { (hf, gg) } else { (gg, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The shortest decimal that rounds to this f32, as f64 (GGUF stores `1e-5` as the f32
/// `9.99999974e-6`; HF configs hold the decimal).
fn f32_decimal(v: f64) -> f64 {
    let s = format!("{}", v as f32);
    s.parse().unwrap_or(v)
}

/// The `general.architecture`, checked against [`SUPPORTED_ARCHITECTURES`].
pub fn architecture(file: &GgufFile) -> Result<&str> {
    let arch = file.get_str("general.architecture")?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch) {
        return Err(GgufError::UnsupportedArchitecture {
            path: file.path().to_path_buf(),
            architecture: arch.into(),
            supported: SUPPORTED_ARCHITECTURES.join(", "),
        });
    }
    Ok(arch)
}

/// llama.cpp's Llama 3 RoPE factors (`rope_freqs.weight`, one per frequency `i` of
/// `theta^(-2i/d)`): 1 for short wavelengths, `factor` for long ones, smooth in between, as
/// `convert_hf_to_gguf.py` computes them from HF's `rope_scaling`.
pub fn llama3_rope_factors(s: &Llama3RopeScaling, theta: f64, n: usize) -> Vec<f64> {
    let (lo, hi) = (s.low_freq_factor, s.high_freq_factor);
    let orig = s.original_max_position_embeddings as f64;
    (0..n)
        .map(|i| {
            let wavelen = 2.0 * std::f64::consts::PI * theta.powf((2 * i) as f64 / (2 * n) as f64);
            if wavelen < orig / hi {
                1.0
            } else if wavelen > orig / lo {
                s.factor
            } else {
                let smooth = (orig / wavelen - lo) / (hi - lo);
                1.0 / ((1.0 - smooth) / s.factor + smooth)
            }
        })
        .collect()
}

/// HF `rope_scaling` (`llama3`) parameters that reproduce llama.cpp's factors, or `None`
/// when the factors do not follow the rule. The factors depend only on `factor`,
/// `original_max_position_embeddings / (high - low)` and `low / (high - low)`, so
/// `low_freq_factor = 1` is chosen and the rest solved from the factors strictly between 1
/// and `factor` (Llama 3's own values come back exactly; with fewer than two such factors,
/// `high_freq_factor = 4` is assumed). The result is checked against every factor.
pub fn llama3_scaling_from_factors(factors: &[f32], theta: f64) -> Option<Llama3RopeScaling> {
    let n = factors.len();
    let f = factors.iter().fold(0f32, |m, &x| m.max(x)) as f64;
    if n == 0 || f < 1.0 {
        return None;
    }
    let wavelen =
        |i: usize| 2.0 * std::f64::consts::PI * theta.powf((2 * i) as f64 / (2 * n) as f64);
    let tol = 1e-4;
    let is_one = |r: f64| r <= 1.0 + tol;
    let is_max = |r: f64| r >= f * (1.0 - tol);
    // (smooth, 1 / wavelen) of the in-between factors: smooth = A / wavelen - B with
    // A = orig / (hi - lo) and B = lo / (hi - lo).
    let smooth: Vec<(f64, f64)> = (0..n)
        .filter(|&i| !is_one(factors[i] as f64) && !is_max(factors[i] as f64))
        .map(|i| {
            let r = factors[i] as f64;
            ((1.0 / r - 1.0 / f) / (1.0 - 1.0 / f), 1.0 / wavelen(i))
        })
        .collect();
    let (lo, hi, orig) = match smooth.as_slice() {
        [] | [_] => {
            let (lo, hi) = (1.0, 4.0);
            let orig = match smooth.first() {
                Some(&(sm, x)) => (sm * (hi - lo) + lo) / x,
                None => {
                    // Any context between the longest "1" wavelength x hi and the shortest
                    // "factor" wavelength works: take the power of two nearest their middle.
                    let short = (0..n)
                        .filter(|&i| is_one(factors[i] as f64))
                        .map(|i| wavelen(i) * hi)
                        .fold(1.0, f64::max);
                    let long = (0..n)
                        .filter(|&i| is_max(factors[i] as f64))
                        .map(wavelen)
                        .fold(f64::INFINITY, f64::min);
                    let mid = if long.is_finite() {
                        (short * long).sqrt()
                    } else {
                        short * 2.0
                    };
                    2f64.powf(mid.log2().round())
                }
            };
            (lo, hi, orig)
        }
        many => {
            let (&(s0, x0), &(s1, x1)) = (many.first()?, many.last()?);
            let a = (s1 - s0) / (x1 - x0);
            let b = a * x0 - s0;
            if !(a > 0.0 && b > 0.0) {
                return None;
            }
            (1.0, 1.0 + 1.0 / b, a / b)
        }
    };
    let s = Llama3RopeScaling {
        factor: f32_decimal(f),
        low_freq_factor: lo,
        high_freq_factor: (hi * 1e3).round() / 1e3,
        original_max_position_embeddings: orig.round() as usize,
    };
    let again = llama3_rope_factors(&s, theta, n);
    let ok = again
        .iter()
        .zip(factors)
        .all(|(a, &b)| (a - b as f64).abs() <= 1e-3 * a.abs().max(1.0));
    ok.then_some(s)
}

/// An HF `config.json` (`LlamaForCausalLM`) equivalent of the file's metadata:
/// `{arch}.embedding_length` -> `hidden_size`, `block_count`, `attention.head_count(_kv)`,
/// `feed_forward_length`, `rope.freq_base`, `attention.layer_norm_rms_epsilon`,
/// `context_length`, the vocabulary size (`{arch}.vocab_size`, else the token list, else
/// the embedding's rows), `tie_word_embeddings` when `output.weight` is absent, and the
/// tokenizer's bos/eos ids.
pub fn llama_config_json(file: &GgufFile) -> Result<Value> {
    let arch = architecture(file)?;
    let k = |name: &str| format!("{arch}.{name}");
    let hidden = file.get_u64(&k("embedding_length"))?;
    let heads = file.get_u64(&k("attention.head_count"))?;
    let kv_heads = file
        .opt(&k("attention.head_count_kv"), "integer", MetaValue::as_u64)?
        .unwrap_or(heads);
    if heads == 0 || kv_heads == 0 {
        return Err(GgufError::Malformed {
            path: file.path().to_path_buf(),
            what: k("attention.head_count"),
            reason: format!("head counts must be positive (got {heads} and {kv_heads})"),
        });
    }
    let head_dim = file
        .opt(&k("attention.key_length"), "integer", MetaValue::as_u64)?
        .unwrap_or(hidden / heads);
    let vocab = match file.opt(&k("vocab_size"), "integer", MetaValue::as_u64)? {
        Some(v) => v,
        None => match file
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
        {
            Some(tokens) => tokens.len() as u64,
            None => file
                .tensor_info("token_embd.weight")
                .map(|t| t.shape()[0] as u64)
                .ok_or_else(|| GgufError::MissingKey {
                    path: file.path().to_path_buf(),
                    key: k("vocab_size"),
                })?,
        },
    };
    let rope_theta = file
        .opt(&k("rope.freq_base"), "number", MetaValue::as_f64)?
        .map(f32_decimal)
        .unwrap_or(10_000.0);
    let eps = file
        .opt(
            &k("attention.layer_norm_rms_epsilon"),
            "number",
            MetaValue::as_f64,
        )?
        .map(f32_decimal)
        .unwrap_or(1e-5);
    let context = file
        .opt(&k("context_length"), "integer", MetaValue::as_u64)?
        .unwrap_or(2048);
    let tied = file.tensor_info("output.weight").is_none();
    let bos = file.opt("tokenizer.ggml.bos_token_id", "integer", MetaValue::as_u64)?;
    let eos = file.opt("tokenizer.ggml.eos_token_id", "integer", MetaValue::as_u64)?;
    let attention_bias = file.tensor_info("blk.0.attn_q.bias").is_some();
    let mlp_bias = file.tensor_info("blk.0.ffn_up.bias").is_some();
    if let Some(kind) = file.get(&k("rope.scaling.type")) {
        // Linear / YaRN scaling metadata (not Llama 3's factor tensor).
        return Err(GgufError::Malformed {
            path: file.path().to_path_buf(),
            what: k("rope.scaling.type"),
            reason: format!("RoPE scaling {kind:?} is not supported (only Llama 3's rope_freqs)"),
        });
    }
    let rope_scaling = match file.tensor_info("rope_freqs.weight") {
        None => Value::Null,
        Some(_) => {
            let (factors, _) = file.dequantize("rope_freqs.weight")?;
            if factors.len() * 2 != head_dim as usize {
                return Err(GgufError::ShapeMismatch {
                    path: file.path().to_path_buf(),
                    tensor: "rope_freqs.weight".into(),
                    expected: vec![head_dim as usize / 2],
                    found: vec![factors.len()],
                });
            }
            let s = llama3_scaling_from_factors(&factors, rope_theta).ok_or_else(|| {
                GgufError::Malformed {
                    path: file.path().to_path_buf(),
                    what: "rope_freqs.weight".into(),
                    reason: "the RoPE factors do not follow Llama 3's scaling rule".into(),
                }
            })?;
            json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            })
        }
    };
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": file.get_u64(&k("feed_forward_length"))?,
        "num_hidden_layers": file.get_u64(&k("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": eps,
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": tied,
        "max_position_embeddings": context,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "attention_bias": attention_bias,
        "mlp_bias": mlp_bias,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }))
}

/// A dequantised tensor under its Hugging Face name.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// HF name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Row-major f32 values.
    pub values: Vec<f32>,
    /// Row-major shape (HF's `[out, in]` for linear weights).
    pub shape: Vec<usize>,
}

/// Every tensor of a Llama GGUF file dequantised to f32 under its HF name, with HF's row
/// order for `q_proj` / `k_proj` (weights and biases), in file order. Errors on tensors
/// outside the Llama layout and unsupported types.
pub fn hf_tensors(file: &GgufFile) -> Result<Vec<HfTensor>> {
    let config = llama_config_json(file)?;
    let heads = config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(1) as usize;
    let path: &Path = file.path();
    let unknown: Vec<String> = file
        .tensors()
        .iter()
        .filter(|t| hf_name(&t.name).is_none() && t.name != "rope_freqs.weight")
        .map(|t| t.name.clone())
        .collect();
    if !unknown.is_empty() {
        return Err(GgufError::UnexpectedTensors {
            path: path.to_path_buf(),
            tensors: unknown,
        });
    }
    let mut out = Vec::with_capacity(file.tensors().len());
    // `rope_freqs.weight` became `rope_scaling` in the config.
    for t in file
        .tensors()
        .iter()
        .filter(|t| t.name != "rope_freqs.weight")
    {
        let (values, shape) = file.dequantize(&t.name)?;
        let name = hf_name(&t.name).unwrap_or_default();
        let n_head = if name.contains(".self_attn.q_proj.") {
            Some(heads)
        } else if name.contains(".self_attn.k_proj.") {
            Some(kv_heads)
        } else {
            None
        };
        let values = match n_head {
            Some(n) => {
                let rows = shape[0];
                let cols = shape.get(1).copied().unwrap_or(1);
                if rows % (2 * n) != 0 {
                    return Err(GgufError::ShapeMismatch {
                        path: path.to_path_buf(),
                        tensor: t.name.clone(),
                        expected: vec![2 * n, cols],
                        found: shape,
                    });
                }
                unpermute_qk_rows(&values, cols, n)
            }
            None => values,
        };
        out.push(HfTensor {
            name,
            values,
            shape,
        });
    }
    Ok(out)
}

/// The [`LlamaConfig`] of a GGUF file: [`llama_config_json`] read and validated by the HF
/// `config.json` reader.
pub fn llama_config(file: &GgufFile) -> Result<LlamaConfig> {
    let json = llama_config_json(file)?;
    Ok(LlamaConfig::from_json_str(&json.to_string(), file.path())?)
}

/// The file's tensors as an in-memory [`Checkpoint`] under HF names (dequantised, Q/K rows
/// in HF order), for [`build_llama`].
pub fn llama_checkpoint(file: &GgufFile) -> Result<Checkpoint> {
    let tensors = hf_tensors(file)?
        .into_iter()
        .map(|t| (t.name, TensorData::new(t.values, t.shape)));
    Ok(Checkpoint::from_tensors(file.path(), tensors))
}

/// Loads a Llama-architecture GGUF file (e.g. SmolLM2-135M-Instruct Q4_1) into the
/// [`Llama`] model, through the same builder and shape checks as HF checkpoints, with
/// Flexi-LoRA adapters on `adapter.targets`. Weights are dequantised to f32 and stored in the
/// backend's float type.
pub fn load_llama_gguf<B: Backend>(
    path: impl AsRef<Path>,
    adapter: &AdapterConfig,
    device: &B::Device,
) -> Result<Llama<B>> {
    load_llama_gguf_in(path, adapter, flexi_burn::Precision::F32, device)
}

/// [`load_llama_gguf`] with the frozen matrices stored in `precision`'s type (see
/// [`crate::llama::load_llama_in`]).
pub fn load_llama_gguf_in<B: Backend>(
    path: impl AsRef<Path>,
    adapter: &AdapterConfig,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<Llama<B>> {
    let file = GgufFile::open(path)?;
    let config = llama_config(&file)?;
    let mut ckpt = llama_checkpoint(&file)?;
    let model = crate::llama::build_llama_in(&config, &mut ckpt, adapter, precision, device)?;
    ckpt.finish(|_| false)?;
    Ok(model)
}

/// The file's tokenizer (see [`super::tokenizer`]) as the Llama [`Tokenizer`].
pub fn load_tokenizer_gguf(path: impl AsRef<Path>) -> Result<Tokenizer> {
    let file = GgufFile::open(path)?;
    let inner = super::tokenizer::tokenizer(&file)?;
    // The model's own chat template, when the file carries one; bos/eos as token strings.
    let template = file.opt("tokenizer.chat_template", "string", |v| {
        v.as_str().map(str::to_string)
    })?;
    let token = |key: &str| -> Result<String> {
        Ok(file
            .opt(key, "integer", MetaValue::as_u64)?
            .and_then(|id| inner.id_to_token(id as u32))
            .unwrap_or_default())
    };
    let (bos, eos) = (
        token("tokenizer.ggml.bos_token_id")?,
        token("tokenizer.ggml.eos_token_id")?,
    );
    let tok = Tokenizer::from_tokenizer(inner, file.path());
    Ok(match template {
        Some(source) => tok.with_chat_template(JinjaChat::new(source, bos, eos, file.path())?),
        None => tok,
    })
}

/// Whether `path` is a GGUF file (by its magic bytes), so commands can accept either a HF
/// directory or a `.gguf` file.
pub fn is_gguf(path: impl AsRef<Path>) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_q.weight",
                "model.layers.0.self_attn.q_proj.weight",
            ),
            (
                "blk.12.attn_k.bias",
                "model.layers.12.self_attn.k_proj.bias",
            ),
            (
                "blk.3.attn_v.weight",
                "model.layers.3.self_attn.v_proj.weight",
            ),
            (
                "blk.3.attn_output.weight",
                "model.layers.3.self_attn.o_proj.weight",
            ),
            (
                "blk.29.ffn_gate.weight",
                "model.layers.29.mlp.gate_proj.weight",
            ),
            ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
            (
                "blk.1.ffn_down.weight",
                "model.layers.1.mlp.down_proj.weight",
            ),
            (
                "blk.1.attn_norm.weight",
                "model.layers.1.input_layernorm.weight",
            ),
            (
                "blk.1.ffn_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
        ];
        for (g, h) in cases {
            assert_eq!(hf_name(g).as_deref(), Some(h), "{g}");
        }
        for bad in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
        ] {
            assert_eq!(hf_name(bad), None, "{bad}");
        }
    }

    /// The converter's permutation written out literally: numpy's
    /// `w.reshape(n_head, 2, hd // 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
    fn numpy_permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
        let half = rows / n_head / 2;
        let src =
            |h: usize, two: usize, i: usize, c: usize| w[((h * 2 + two) * half + i) * cols + c];
        // After swapaxes: index order (h, i, two, c).
        let mut out = Vec::with_capacity(w.len());
        for h in 0..n_head {
            for i in 0..half {
                for two in 0..2 {
                    for c in 0..cols {
                        out.push(src(h, two, i, c));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn qk_permutation_round_trips_against_the_converter() {
        // 3 heads of head_dim 4, 2 columns; values encode (row, col).
        let (n_head, rows, cols) = (3, 12, 2);
        let w: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let gg = numpy_permute(&w, rows, cols, n_head);
        assert_eq!(permute_qk_rows(&w, cols, n_head), gg);
        // Head 0: HF rows [0, 1, 2, 3] -> GGUF rows [0, 2, 1, 3].
        assert_eq!(&gg[..8], &[0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(unpermute_qk_rows(&gg, cols, n_head), w);
        // A bias (one column) and GQA-sized k.
        let b: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let gb = numpy_permute(&b, 8, 1, 1);
        assert_eq!(gb, vec![0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]);
        assert_eq!(unpermute_qk_rows(&gb, 1, 1), b);
    }

    #[test]
    fn llama3_rope_parameters_come_back_from_the_factors() {
        // Llama 3.2 1B / 3B and 3.1 8B (factor 32 / 8, original context 8192), head_dim 64
        // and 128; the factors are stored as f32 like llama.cpp's converter writes them.
        for (factor, hd) in [(32.0, 64), (8.0, 128), (32.0, 128)] {
            let want = Llama3RopeScaling {
                factor,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            };
            let f: Vec<f32> = llama3_rope_factors(&want, 500_000.0, hd / 2)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            assert_eq!(llama3_scaling_from_factors(&f, 500_000.0), Some(want));
        }
        assert_eq!(
            llama3_scaling_from_factors(&[1.0, 5.0, 1.0, 8.0], 500_000.0),
            None
        );
    }

    #[test]
    fn f32_metadata_reads_as_the_decimal() {
        assert_eq!(f32_decimal(1e-5f32 as f64), 1e-5);
        assert_eq!(f32_decimal(100_000.0), 100_000.0);
        assert_eq!(f32_decimal(500_000.0), 500_000.0);
    }
}
