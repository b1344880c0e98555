//! `cargo xtask plan`: the peak memory of a training step predicted from its configuration
//! ([`train::memory`]), and whether (and at which batch) it fits the machine.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use models::llama::LlamaConfig;
use train::TrainConfig;
use train::memory::{MemoryPlan, PlanInput, plan};

/// `cargo xtask plan`.
#[derive(Args, Clone, Debug)]
pub struct PlanArgs {
    /// Model shape: smollm2-135m, llama-3.2-1b, llama-3.2-3b or llama-3.1-8b.
    #[arg(long, default_value = "smollm2-135m", conflicts_with = "model")]
    shape: String,
    /// A real checkpoint's configuration instead (HF directory or .gguf file; no weight is
    /// read).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training configuration file (TOML or JSON), as `train --config`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Method: full, lora, dylora, dylora_plus, adalora, flexi (overrides the config file).
    #[arg(long)]
    method: Option<String>,
    /// Rank of lora; r_max of dylora / dylora_plus; target_r of adalora.
    #[arg(long)]
    rank: Option<usize>,
    /// Flexi-LoRA class -> rank map, e.g. 2,8.
    #[arg(long)]
    ranks: Option<String>,
    /// `key=value` overrides of the configuration, as `train --set`.
    #[arg(long = "set")]
    set: Vec<String>,
    /// Sequences per batch (overrides the configuration's `batch_size`).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (default: the configuration's `max_len`).
    #[arg(long)]
    seq: Option<usize>,
    /// Fraction of each sequence that carries a label.
    #[arg(long, default_value_t = 0.5)]
    answer_frac: f64,
    /// Plan for `train --checkpoint-activations [layers|balanced]` (the bare flag: layers).
    #[arg(long, num_args = 0..=1, default_missing_value = "layers", value_name = "layers|balanced")]
    checkpoint_activations: Option<train::ActivationCheckpointing>,
    /// Shards computed at once (default: the trainer's, every core of this machine); each
    /// holds a copy of the trainable parameters' gradients.
    #[arg(long)]
    shards: Option<usize>,
    /// Plan for `train --precision`: f32, or the matrices stored in bf16 / f16 (frozen, or
    /// trained on f32 masters under full fine-tuning; overrides the configuration).
    #[arg(long)]
    precision: Option<flexi_burn::Precision>,
    /// Memory available, GiB (default: this machine's `MemTotal`).
    #[arg(long)]
    memory_gib: Option<f64>,
    /// Write the plan as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// This machine's memory in GiB (`MemTotal` of /proc/meminfo), if readable.
fn mem_total_gib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / (1024.0 * 1024.0))
}

fn row(out: &mut String, name: &str, mib: f64) {
    out.push_str(&format!("| {name} | {mib:.0} |\n"));
}

/// The plan as a Markdown table (`precision`: the weights' storage, for the row names).
pub fn plan_table(p: &MemoryPlan, precision: flexi_burn::Precision) -> String {
    let mut out = String::from("| component | MiB |\n|---|---:|\n");
    row(&mut out, "runtime", p.runtime_mib);
    let weights = match precision {
        flexi_burn::Precision::F32 => "weights (f32)".to_string(),
        half => format!("weights ({half} matrices, f32 norms)"),
    };
    row(&mut out, &weights, p.weights_mib);
    if p.half_transient_mib > 0.0 {
        row(
            &mut out,
            "bf16 matmul operands in f32 (flex)",
            p.half_transient_mib,
        );
    }
    row(
        &mut out,
        if p.masters_mib > 0.0 {
            "optimizer state + gradients + f32 masters"
        } else {
            "optimizer state + gradients"
        },
        p.trainable_state_mib,
    );
    row(&mut out, "activations (decoder layers)", p.activations_mib);
    row(&mut out, "LM head (answer positions)", p.lm_head_mib);
    out.push_str(&format!("| **peak** | **{:.0}** |\n", p.total_mib));
    out
}

pub fn run(a: PlanArgs) -> Result<()> {
    let model: LlamaConfig = match &a.model {
        Some(path) => models::auto::llama_config_any(path)
            .with_context(|| format!("reading the configuration of {}", path.display()))?,
        None => LlamaConfig::preset(&a.shape).with_context(|| {
            format!(
                "unknown --shape {:?}: expected smollm2-135m, llama-3.2-1b, llama-3.2-3b or llama-3.1-8b",
                a.shape
            )
        })?,
    };
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    if let Some(m) = &a.method {
        cfg.method = crate::pipeline::method_from_flags(m, a.rank, a.ranks.as_deref())?;
    }
    let mut cfg = cfg.with_overrides(&a.set)?;
    if let Some(p) = a.precision {
        cfg.precision = p;
    }
    if let Some(b) = a.batch {
        if b == 0 {
            bail!("--batch must be at least 1");
        }
        cfg.batch_size = b;
        cfg.grad_accum = 1;
    }
    let seq = a.seq.unwrap_or(cfg.max_len);
    fn input<'a>(
        model: &'a LlamaConfig,
        train: &'a TrainConfig,
        seq: usize,
        a: &PlanArgs,
    ) -> PlanInput<'a> {
        PlanInput {
            model,
            train,
            seq,
            answer_frac: a.answer_frac,
            checkpointing: a.checkpoint_activations.unwrap_or_default(),
            shards: a
                .shards
                .unwrap_or_else(|| train::trainer::default_shards(true)),
        }
    }
    let p = plan(&input(&model, &cfg, seq, &a))?;
    let memory = a.memory_gib.or_else(mem_total_gib);
    println!(
        "training step of {} on {} ({} parameters, {} trainable), micro-batch {} x {} tokens{}, {}",
        cfg.method.label(),
        a.model
            .as_ref()
            .map_or(a.shape.clone(), |m| m.display().to_string()),
        p.params,
        p.trainable,
        cfg.batch_size / cfg.grad_accum.max(1),
        seq,
        match a.checkpoint_activations.unwrap_or_default() {
            train::ActivationCheckpointing::Off => "",
            train::ActivationCheckpointing::Layers => ", per-layer recomputation",
            train::ActivationCheckpointing::Balanced => ", balanced activation checkpointing",
        },
        match (cfg.precision, cfg.method == train::Method::Full) {
            (flexi_burn::Precision::F32, _) => "f32".to_string(),
            (half, false) => format!("mixed precision ({half} frozen matrices)"),
            (half, true) => format!("mixed precision ({half} matrices on f32 masters)"),
        }
    );
    print!("{}", plan_table(&p, cfg.precision));
    if let Some(gib) = memory {
        let budget = gib * 1024.0;
        // The largest micro-batch at this sequence length that fits.
        let mut best = 0;
        let mut probe = cfg.clone();
        probe.grad_accum = 1;
        for b in 1..=4096 {
            probe.batch_size = b;
            if plan(&input(&model, &probe, seq, &a))?.total_mib > budget {
                break;
            }
            best = b;
        }
        println!(
            "{} in {gib:.1} GiB; the largest micro-batch of {seq} tokens that fits: {}",
            if p.total_mib <= budget {
                "fits"
            } else {
                "does NOT fit"
            },
            if best == 0 {
                "none (not even one sequence)".to_string()
            } else {
                best.to_string()
            }
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&p)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
