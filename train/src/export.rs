//! Exporting a trained run as a PEFT LoRA adapter (`adapter_config.json` +
//! `adapter_model.safetensors`), the layout PEFT, transformers, vLLM and llama.cpp serve.
//!
//! A nested-rank adapter is exported at one rank `r`: `lora_A = A[:r]` (`[r, in]`), `lora_B =
//! B[:, :r]` (`[out, r]`). PEFT scales the update by `lora_alpha / r` (`lora_alpha / sqrt(r)`
//! with `use_rslora`); the run's own scale `s(r)` is matched exactly: `alpha / r` and rsLoRA's
//! `alpha / sqrt(r)` through `lora_alpha` and `use_rslora`, a learned per-rank scale by
//! folding `s(r) / (alpha / r)` into `lora_B`.
//!
//! Covered: Llama runs of LoRA, DyLoRA (default: its eval rank), DyLoRA+ and Flexi-LoRA
//! (default: `r_max`). Not yet: AdaLoRA (PEFT's `lora_E` layout), full fine-tuning (a merged
//! checkpoint instead) and Whisper targets.

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

/// Writes `run` as a PEFT LoRA adapter of rank `rank` (default: the method's inference rank)
/// into `out`.
pub fn export_peft<B: Backend>(
    run: &FlexiRun<B>,
    rank: Option<usize>,
    out: &Path,
) -> Result<PeftExport> {
    let unsupported = |what: &str| TrainError::Config {
        key: "export".into(),
        message: format!("PEFT export of {what} is not implemented yet (issue 15)"),
    };
    let info = run.info.as_ref().ok_or_else(|| TrainError::Config {
        key: "run".into(),
        message: "a base model has no adapter to export".into(),
    })?;
    let RunModel::Text { model, .. } = &run.model else {
        return Err(unsupported("Whisper runs"));
    };
    let cfg = &info.config;
    let natural = match &cfg.method {
        Method::Lora { rank } => *rank,
        Method::Dylora { eval_rank, .. } => *eval_rank,
        Method::DyloraPlus { r_max } => *r_max,
        Method::Flexi { .. } => cfg.method.r_max()?,
        Method::Adalora(_) => return Err(unsupported("AdaLoRA runs")),
        Method::Full => {
            return Err(TrainError::Config {
                key: "export".into(),
                message: "full fine-tuning has no adapter; merge the weights instead".into(),
            });
        }
    };
    let rank = rank.unwrap_or(natural);
    let r_max = cfg.method.r_max()?;
    if rank == 0 || rank > r_max {
        return Err(TrainError::Config {
            key: "rank".into(),
            message: format!("rank {rank} is outside 1..={r_max} (the run's r_max)"),
        });
    }
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
    let adapters = model.adapters();
    for (path, layer) in &adapters {
        let (d_in, d_out) = (layer.d_input(), layer.d_output());
        let a = HostTensor::of(layer.lora_a.val().slice([0..rank, 0..d_in]));
        let mut b = HostTensor::of(layer.lora_b.val().slice([0..d_out, 0..rank]));
        // PEFT applies `peft_scale`; the run applies `s(rank)` (learned, or equal).
        let fold = (layer.scale_at(rank) / peft_scale) as f32;
        if (fold - 1.0).abs() > f32::EPSILON {
            b.values.iter_mut().for_each(|v| *v *= fold);
        }
        let prefix = peft_prefix(path);
        tensors.insert(format!("{prefix}.lora_A.weight"), a);
        tensors.insert(format!("{prefix}.lora_B.weight"), b);
    }
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": info.model.display().to_string(),
        "r": rank,
        "lora_alpha": lora_alpha,
        "use_rslora": use_rslora,
        "target_modules": cfg.adapter.targets,
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
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |e| TrainError::Io { path, source: e }
    };
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
