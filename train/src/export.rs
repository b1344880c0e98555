//! Exporting a trained run as a PEFT LoRA adapter (`adapter_config.json` +
//! `adapter_model.safetensors`), the layout PEFT, transformers, vLLM and llama.cpp serve.
//!
//! A nested-rank adapter is exported at one rank `r`: `lora_A = A[:r]` (`[r, in]`), `lora_B =
//! B[:, :r]` (`[out, r]`). PEFT scales the update by `lora_alpha / r` (`lora_alpha / sqrt(r)`
//! with `use_rslora`); the run's own scale `s(r)` is matched exactly: `alpha / r` and rsLoRA's
//! `alpha / sqrt(r)` through `lora_alpha` and `use_rslora`, a learned per-rank scale by
//! folding `s(r) / (alpha / r)` into `lora_B`.
//!
//! Covered: Llama and Whisper runs (PEFT's module names: `model.layers.{i}.self_attn.q_proj`,
//! `model.encoder.layers.{i}.fc1`, `model.decoder.layers.{i}.encoder_attn.q_proj`, ...) of
//! LoRA, DyLoRA (default: its eval rank), DyLoRA+, Flexi-LoRA (default: `r_max`) and AdaLoRA,
//! written as a plain LoRA of the components its pruning kept (`E` folded into `B`; every
//! layer at the largest kept count, zero-padded). PEFT's own AdaLoRA layout (`lora_E`) is
//! read by the import ([`crate::peft`]) but not written; full fine-tuning has no adapter
//! (merge instead). `target_modules` is written sorted, so that export -> import -> export
//! gives the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use flexi_burn::{Adapters, ScalePolicy};
use infer::weights::{HostTensor, to_safetensors};
use serde_json::json;

use crate::config::Method;
use crate::error::{Result, TrainError};
use crate::run::{FlexiRun, RunModel};

/// What [`export_peft`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftExport {
    /// The exported rank.
    pub rank: usize,
    /// PEFT's `lora_alpha`.
    pub lora_alpha: f64,
    /// PEFT's `use_rslora`.
    pub use_rslora: bool,
    /// Adapted layers written.
    pub layers: usize,
}

/// The PEFT key prefix of a Llama adapter path (`layers.3.self_attn.q_proj.Adapted` ->
/// `base_model.model.model.layers.3.self_attn.q_proj`).
fn peft_prefix(path: &str) -> String {
    let module = path.strip_suffix(".Adapted").unwrap_or(path);
    format!("base_model.model.model.{module}")
}

/// The rank to export or merge: `rank` if given, else the method's inference rank (LoRA's
/// rank, DyLoRA's eval rank, `r_max` otherwise); it must lie in `1..=r_max`.
fn checked_rank(method: &Method, rank: Option<usize>) -> Result<usize> {
    let r_max = method.r_max()?;
    let rank = rank.unwrap_or(match method {
        Method::Lora { rank } => *rank,
        Method::Dylora { eval_rank, .. } => *eval_rank,
        _ => r_max,
    });
    if rank == 0 || rank > r_max {
        return Err(TrainError::Config {
            key: "rank".into(),
            message: format!("rank {rank} is outside 1..={r_max} (the run's r_max)"),
        });
    }
    Ok(rank)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, source }
}

/// Writes `run` as a PEFT LoRA adapter of rank `rank` (default: the method's inference rank)
/// into `out`.
pub fn export_peft<B: Backend>(
    run: &FlexiRun<B>,
    rank: Option<usize>,
    out: &Path,
) -> Result<PeftExport> {
    write_peft(run, rank, out, None)
}

/// [`export_peft`], with `extra` added to `adapter_config.json` as its [`FLEXI_KEY`] block.
fn write_peft<B: Backend>(
    run: &FlexiRun<B>,
    rank: Option<usize>,
    out: &Path,
    extra: Option<serde_json::Value>,
) -> Result<PeftExport> {
    let info = run.info.as_ref().ok_or_else(|| TrainError::Config {
        key: "run".into(),
        message: "a base model has no adapter to export".into(),
    })?;
    let (adapters, speech) = match &run.model {
        RunModel::Text { model, .. } => (model.adapters(), false),
        RunModel::Speech { model, .. } => (model.adapters(), true),
    };
    let cfg = &info.config;
    match &cfg.method {
        Method::Adalora(_) => {
            if let Some(r) = rank {
                return Err(TrainError::Config {
                    key: "rank".into(),
                    message: format!(
                        "an AdaLoRA run is exported at the rank its pruning kept, not at a chosen \
                         rank ({r}): leave --rank out"
                    ),
                });
            }
        }
        Method::Full => {
            return Err(TrainError::Config {
                key: "export".into(),
                message: "full fine-tuning has no adapter; merge the weights instead".into(),
            });
        }
        _ => {}
    }
    // AdaLoRA: `s B diag(E) A` with pruned components at E = 0, written as a plain LoRA of
    // the kept components (E folded into B). Layers keep different numbers of components;
    // all are written at the largest kept count, zero-padded (a zero row of A and column of B
    // add nothing), so that the adapter has one `r` as every PEFT server expects.
    let kept: Option<Vec<Vec<usize>>> = match &cfg.method {
        Method::Adalora(_) => Some(
            adapters
                .iter()
                .map(|(_, layer)| match &layer.lora_e {
                    Some(e) => HostTensor::of(e.val())
                        .values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| **v != 0.0)
                        .map(|(j, _)| j)
                        .collect(),
                    None => (0..layer.r_max()).collect(),
                })
                .collect(),
        ),
        _ => None,
    };
    let rank = match &kept {
        Some(k) => k.iter().map(Vec::len).max().unwrap_or(0).max(1),
        None => checked_rank(&cfg.method, rank)?,
    };
    let alpha = cfg.adapter.alpha;
    let (lora_alpha, use_rslora) = match cfg.adapter.scale {
        ScalePolicy::AlphaOverSqrtRank => (alpha, true),
        ScalePolicy::AlphaOverRank | ScalePolicy::Learned => (alpha, false),
    };
    let peft_scale = if use_rslora {
        lora_alpha / (rank as f64).sqrt()
    } else {
        lora_alpha / rank as f64
    };
    let mut tensors = BTreeMap::new();
    for (l, (path, layer)) in adapters.iter().enumerate() {
        let (d_in, d_out) = (layer.d_input(), layer.d_output());
        let (a, b) = match &kept {
            Some(kept) => adalora_factors(layer, &kept[l], rank, peft_scale),
            None => {
                let a = HostTensor::of(layer.lora_a.val().slice([0..rank, 0..d_in]));
                let mut b = HostTensor::of(layer.lora_b.val().slice([0..d_out, 0..rank]));
                // PEFT applies `peft_scale`; the run applies `s(rank)` (learned, or equal).
                let fold = (layer.scale_at(rank) / peft_scale) as f32;
                if (fold - 1.0).abs() > f32::EPSILON {
                    b.values.iter_mut().for_each(|v| *v *= fold);
                }
                (a, b)
            }
        };
        let prefix = peft_prefix(path);
        tensors.insert(format!("{prefix}.lora_A.weight"), a);
        tensors.insert(format!("{prefix}.lora_B.weight"), b);
    }
    let mut config = json!({
        "peft_type": "LORA",
        // Whisper: no task type (PEFT's seq2seq wrapper would pass `input_ids` to it).
        "task_type": if speech { None } else { Some("CAUSAL_LM") },
        "base_model_name_or_path": info.model.display().to_string(),
        "r": rank,
        "lora_alpha": lora_alpha,
        "use_rslora": use_rslora,
        "target_modules": peft_targets(&cfg.adapter.targets, speech),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": false,
    });
    if let Some(extra) = extra {
        config[FLEXI_KEY] = extra;
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let w = out.join("adapter_model.safetensors");
    std::fs::write(&w, to_safetensors(&tensors)?).map_err(io(&w))?;
    let c = out.join("adapter_config.json");
    let text = serde_json::to_vec_pretty(&config).map_err(|e| TrainError::Model(e.to_string()))?;
    std::fs::write(&c, text).map_err(io(&c))?;
    Ok(PeftExport {
        rank,
        lora_alpha,
        use_rslora,
        layers: adapters.len(),
    })
}

/// PEFT's `target_modules` of a run: its targets sorted (Whisper's `o_proj` written as its
/// name there, `out_proj`), so that an imported adapter exports to the same bytes.
fn peft_targets(targets: &[String], speech: bool) -> Vec<String> {
    let mut out: Vec<String> = targets
        .iter()
        .map(|t| match (speech, t.as_str()) {
            (true, "o_proj") => "out_proj".to_string(),
            _ => t.clone(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// An AdaLoRA layer's kept components as plain LoRA factors of rank `rank`:
/// `A' [rank, in]` = the kept rows of `A`, `B' [out, rank]` = the kept columns of `B` times
/// their `E` and `s(r_max) / peft_scale`, zero beyond the kept count.
fn adalora_factors<B: Backend>(
    layer: &flexi_burn::FlexiLinear<B>,
    kept: &[usize],
    rank: usize,
    peft_scale: f64,
) -> (HostTensor, HostTensor) {
    let (d_in, d_out, r_max) = (layer.d_input(), layer.d_output(), layer.r_max());
    let a = HostTensor::of(layer.lora_a.val());
    let b = HostTensor::of(layer.lora_b.val());
    let e = layer
        .lora_e
        .as_ref()
        .map(|e| HostTensor::of(e.val()).values)
        .unwrap_or_else(|| vec![1.0; r_max]);
    // The forward pass at r_max: s(r_max) * B diag(E) A.
    let fold = layer.scale_at(r_max) / peft_scale;
    let mut a2 = vec![0f32; rank * d_in];
    let mut b2 = vec![0f32; d_out * rank];
    for (i, &j) in kept.iter().enumerate() {
        a2[i * d_in..(i + 1) * d_in].copy_from_slice(&a.values[j * d_in..(j + 1) * d_in]);
        let col = (e[j] as f64 * fold) as f32;
        for o in 0..d_out {
            b2[o * rank + i] = b.values[o * r_max + j] * col;
        }
    }
    (
        HostTensor {
            shape: vec![rank, d_in],
            values: a2,
        },
        HostTensor {
            shape: vec![d_out, rank],
            values: b2,
        },
    )
}

/// What [`merge_hf`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// The merged rank.
    pub rank: usize,
    /// Projection weights replaced by `W0 + s(r) B A`.
    pub replaced: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
}

/// Writes a full Hugging Face checkpoint of `run` at `rank` into `out`: every file of the base
/// directory (config, tokenizer, index), and its safetensors with each adapted projection's
/// weight replaced by `W0 + s(r) B[:, :r] A[:r]` in the tensor's own dtype (f32, f16, bf16).
/// Default rank: the method's inference rank (AdaLoRA: its kept triplets at `r_max`).
pub fn merge_hf<B: Backend>(run: &FlexiRun<B>, rank: Option<usize>, out: &Path) -> Result<Merged> {
    let bad = |message: String| TrainError::Config {
        key: "merge".into(),
        message,
    };
    let info = run
        .info
        .as_ref()
        .ok_or_else(|| bad("a base model has nothing to merge".into()))?;
    let adapters = match &run.model {
        RunModel::Text { model, .. } => model.adapters(),
        RunModel::Speech { model, .. } => model.adapters(),
    };
    let cfg = &info.config;
    let base = &info.model;
    let has_safetensors = std::fs::read_dir(base).is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
    });
    if !base.join("config.json").is_file() || !has_safetensors {
        return Err(bad(format!(
            "{} is not a Hugging Face directory with safetensors weights (merge writes the \
             base's own files; a .gguf or CTranslate2 base has none)",
            base.display()
        )));
    }
    if cfg.method == Method::Full {
        return Err(bad(
            "full fine-tuning: merging is for adapters (the run's checkpoint holds every \
             trained weight)"
                .into(),
        ));
    }
    let rank = checked_rank(&cfg.method, rank)?;
    // The merged weights by HF name, `[out, in]` f32.
    let mut merged: BTreeMap<String, HostTensor> = adapters
        .into_iter()
        .map(|(path, layer)| {
            let module = path.strip_suffix(".Adapted").unwrap_or(&path);
            (
                format!("model.{module}.weight"),
                HostTensor::of(layer.merged_weight(rank)),
            )
        })
        .collect();
    std::fs::create_dir_all(out).map_err(io(out))?;
    let (mut replaced, mut copied) = (0, 0);
    for entry in std::fs::read_dir(base).map_err(io(base))? {
        let entry = entry.map_err(io(base))?;
        let src = entry.path();
        if !src.is_file() {
            continue;
        }
        let dst = out.join(entry.file_name());
        if src.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            std::fs::copy(&src, &dst).map_err(io(&dst))?;
            continue;
        }
        let bytes = std::fs::read(&src).map_err(io(&src))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
                path: src.clone(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
        let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, view) in st.tensors() {
            let data = match merged.remove(&name) {
                Some(m) => {
                    if m.shape != view.shape() {
                        return Err(TrainError::Checkpoint {
                            path: src.clone(),
                            message: format!(
                                "tensor {name} has shape {:?}, the merged weight {:?}",
                                view.shape(),
                                m.shape
                            ),
                        });
                    }
                    replaced += 1;
                    models::format::checkpoint::encode_f32(&m.values, view.dtype()).ok_or_else(
                        || TrainError::Checkpoint {
                            path: src.clone(),
                            message: format!(
                                "tensor {name}: dtype {:?} is not f32, f16 or bf16",
                                view.dtype()
                            ),
                        },
                    )?
                }
                None => {
                    copied += 1;
                    view.data().to_vec()
                }
            };
            tensors.push((name, view.dtype(), view.shape().to_vec(), data));
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, dtype, shape, data)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (n.clone(), v))
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| TrainError::Model(format!("building {}: {e}", dst.display())))?;
        let metadata = st_metadata(&bytes);
        let written = safetensors::serialize(views, metadata)
            .map_err(|e| TrainError::Model(format!("serialising {}: {e}", dst.display())))?;
        std::fs::write(&dst, written).map_err(io(&dst))?;
    }
    if let Some(name) = merged.keys().next() {
        return Err(TrainError::Checkpoint {
            path: base.clone(),
            message: format!("the base checkpoint has no tensor {name} to merge into"),
        });
    }
    Ok(Merged {
        rank,
        replaced,
        copied,
    })
}

/// The `__metadata__` of a safetensors file (e.g. `{"format": "pt"}`, which transformers
/// expects), kept in the merged copy.
fn st_metadata(bytes: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    safetensors::SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
}

/// The key of the Flexi-LoRA block in `adapter_config.json` (PEFT ignores unknown keys).
pub const FLEXI_KEY: &str = "flexi_lora";

/// Writes a Flexi-LoRA run as one directory that is both a PEFT LoRA adapter at `r_max` (the
/// whole nested adapter: every smaller rank is its prefix) and, for this library, a routed
/// adapter: `adapter_config.json` gains a `flexi_lora` block (scale policy, alpha, class -> rank
/// map, prompt cut) and `router/` holds the router with its input definition. Reload it with
/// [`crate::run::FlexiRun::from_flexi_adapter`].
pub fn export_flexi<B: Backend>(run: &FlexiRun<B>, out: &Path) -> Result<PeftExport> {
    let bad = |message: String| TrainError::Config {
        key: "export".into(),
        message,
    };
    let info = run
        .info
        .as_ref()
        .ok_or_else(|| bad("a base model has no adapter to export".into()))?;
    let cfg = &info.config;
    let class_ranks = cfg
        .method
        .class_ranks()?
        .ok_or_else(|| bad("the flexi format needs a Flexi-LoRA run".into()))?;
    let crate::run::RunRanks::Router(router) = &run.ranks else {
        return Err(bad("the run has no router".into()));
    };
    if cfg.adapter.scale == ScalePolicy::Learned {
        return Err(bad(
            "a learned per-rank scale cannot be written as PEFT's lora_alpha for every rank \
             (not implemented yet)"
                .into(),
        ));
    }
    let block = json!({
        "format_version": 1,
        "r_max": cfg.method.r_max()?,
        "alpha": cfg.adapter.alpha,
        "scale": cfg.adapter.scale,
        "class_ranks": class_ranks.to_string(),
        "router": "router",
        "max_len": cfg.max_len,
    });
    let e = write_peft(run, None, out, Some(block))?;
    infer::router::save_router(&router.router, &router.meta, &out.join("router"))?;
    Ok(e)
}
