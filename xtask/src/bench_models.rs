//! Whole-model benchmarks: `cargo xtask bench train|decode|prefill|whisper`.
//!
//! Each invocation runs **one case in its own process**, so the peak resident set it reports
//! (`VmHWM`) belongs to that case alone. `tools/bench_torch.py` runs the same cases with
//! PyTorch + PEFT + transformers, and `tools/bench.sh` runs both side by side and prints the
//! ratios (`tools/bench_table.py`); see BENCHMARKS.md. The semantics of every case are the
//! same on both sides:
//!
//! - `train --method lora|flexi|dylora|dylora_plus|adalora|full`: optimizer steps of the real
//!   [`train::Trainer`] (forward, loss on the answer tokens, backward, global-norm clip 1.0,
//!   AdamW lr 1e-4) on a batch of `--batch` x `--seq` random tokens without padding, the first
//!   `1 - --answer-frac` of every row a prompt (label -100) and the rest the answer. Flexi's
//!   router ranks alternate over `--ranks` within the batch (a mixed batch). tok/s counts
//!   every token of the batch.
//! - `decode --batch N`: greedy generation with the KV cache of exactly `--new-tokens` tokens
//!   after a `--prompt-len` prompt (no eos), LoRA-8 on q,k,v,o unmerged at rank 8; tok/s
//!   counts generated tokens of all samples, the prefill included in the time.
//! - `prefill --seq 512`: one cached forward of a prompt, logits of its last position only.
//! - `whisper`: Whisper tiny.en's encoder on 30 s of (random) log-mel, then `--new-tokens`
//!   greedy tokens with the cache (no eos, no suppression).
//!
//! Weights are random (`models::llama::Checkpoint::random`) for a `--shape` preset, or a real
//! checkpoint with `--model` (HF directory or `.gguf`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use clap::Args;
use flexi_burn::SampleRanks;
use flexi_burn::backend::{self, BackendJob};
use models::llama::{
    AdapterConfig, Checkpoint, GenerationConfig, Llama, LlamaConfig, PaddedBatch, Target,
    build_llama_in, generate,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use train::lm::{CausalLm, IGNORE_INDEX, LmBatch};
use train::{Method, TrainConfig, Trainer};

/// Options every model case shares.
#[derive(Args, Clone, Debug, Serialize)]
pub struct CommonBench {
    /// Backend: flex (CPU), wgpu or cuda, or ndarray (Burn's other CPU backend, for comparison);
    /// all but flex need their cargo feature.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Model shape with random weights: smollm2-135m, llama-3.2-1b, llama-3.2-3b.
    #[arg(long, default_value = "smollm2-135m")]
    shape: String,
    /// A real checkpoint instead of random weights (HF directory or .gguf file).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Timed iterations.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seed of the random weights and tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads of the CPU backend (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `bench train`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct TrainBench {
    #[command(flatten)]
    common: CommonBench,
    /// lora, flexi, dylora, dylora_plus, adalora or full.
    #[arg(long, default_value = "lora")]
    method: String,
    /// LoRA rank (lora), r_max (dylora, dylora_plus), target rank (adalora).
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Flexi-LoRA's ranks, alternating over the samples of the batch.
    #[arg(long, default_value = "2,8", value_delimiter = ',')]
    ranks: Vec<usize>,
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Fraction of each row that is answer (carries a label).
    #[arg(long, default_value_t = 0.5)]
    answer_frac: f64,
    /// Shards per batch computed on parallel threads (default: `--threads`, else the
    /// trainer's default for the backend, every core on flex).
    #[arg(long)]
    shards: Option<usize>,
    /// Activation checkpointing as `train --checkpoint-activations`: `layers` (per-layer
    /// recomputation, the default of the bare flag) or `balanced` (Burn's strategy).
    #[arg(long, num_args = 0..=1, default_missing_value = "layers", value_name = "layers|balanced")]
    checkpoint_activations: Option<train::ActivationCheckpointing>,
    /// Storage type of the frozen weights: f32, bf16 or f16 (mixed precision; see
    /// `train --precision`).
    #[arg(long, default_value = "f32")]
    precision: flexi_burn::Precision,
}

/// `bench decode`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct DecodeBench {
    #[command(flatten)]
    common: CommonBench,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Prompt tokens per sequence.
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    /// Tokens generated per sequence.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// LoRA rank of the (unmerged) adapter on q,k,v,o; 0 for the base model.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Storage type of the frozen weights: f32, bf16 or f16 (see `generate --precision`).
    #[arg(long, default_value = "f32")]
    precision: flexi_burn::Precision,
}

/// `bench prefill`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct PrefillBench {
    #[command(flatten)]
    common: CommonBench,
    /// Prompt tokens.
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// LoRA rank of the (unmerged) adapter on q,k,v,o; 0 for the base model.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Storage type of the frozen weights: f32, bf16 or f16 (see `generate --precision`).
    #[arg(long, default_value = "f32")]
    precision: flexi_burn::Precision,
}

/// `bench whisper`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct WhisperBench {
    #[command(flatten)]
    common: CommonBench,
    /// Tokens generated after the decoder prompt.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
}

/// One case's result; the same fields as `tools/bench_torch.py` writes.
#[derive(Clone, Debug, Serialize)]
pub struct ModelResult {
    side: &'static str,
    case: String,
    params: serde_json::Value,
    ms: Vec<f64>,
    ms_median: f64,
    tokens: usize,
    tok_s: f64,
    peak_rss_mb: f64,
    threads: usize,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// The settings of a case as JSON, flat like the Python side's `params`.
fn case_params(case: &str, params: &impl Serialize) -> serde_json::Value {
    let mut v = serde_json::to_value(params).unwrap_or_default();
    // Flatten `common` into the top level, as the Python side writes its arguments.
    if let Some(obj) = v.as_object_mut()
        && let Some(serde_json::Value::Object(common)) = obj.remove("common")
    {
        obj.extend(common);
        obj.remove("json");
        obj.insert("case".into(), case.into());
    }
    v
}

fn set_threads(common: &CommonBench) {
    if let Some(n) = common.threads {
        // SAFETY: called at the start of a single-threaded command, before the backend's
        // thread pool exists (it reads RAYON_NUM_THREADS once, when it is built).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

fn threads(common: &CommonBench) -> usize {
    common.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Peak resident set of this process in MiB (`VmHWM` of /proc/self/status; 0 where the
/// file does not exist).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets this process's peak resident set to its current one (Linux: `5` into
/// /proc/self/clear_refs); false where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn finish(
    common: &CommonBench,
    case: String,
    params: serde_json::Value,
    ms: Vec<f64>,
    tokens: usize,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let ms_median = super::bench::median(&ms);
    let result = ModelResult {
        side: "flexi-burn",
        case,
        params,
        tok_s: tokens as f64 / (ms_median / 1e3),
        ms_median,
        ms,
        tokens,
        peak_rss_mb: peak_rss_mb(),
        threads: threads(common),
        extra,
    };
    let extra: String = result
        .extra
        .iter()
        .map(|(k, v)| format!(", {k} {v}"))
        .collect();
    println!(
        "{}: {:.1} ms median over {} iterations, {:.1} tok/s, peak RSS {:.0} MiB{extra}",
        result.case,
        result.ms_median,
        result.ms.len(),
        result.tok_s,
        result.peak_rss_mb
    );
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn check_common(c: &CommonBench) -> Result<()> {
    if c.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if c.model.is_none() && LlamaConfig::preset(&c.shape).is_none() {
        bail!(
            "unknown --shape {:?}: expected smollm2-135m, llama-3.2-1b or llama-3.2-3b",
            c.shape
        );
    }
    Ok(())
}

/// Marks a case run with half-precision weights: `+bf16` / `+f16` after its name (f32 adds
/// nothing, so f32 cases keep the names PyTorch's side writes).
fn push_precision(case: &mut String, precision: flexi_burn::Precision) {
    if precision != flexi_burn::Precision::F32 {
        case.push_str(&format!("+{precision}"));
    }
}

/// The Llama of a case: random weights of `--shape`, or `--model`, with `adapter`, the
/// frozen matrices stored in `precision`'s type as they are built.
fn llama_in<B: Backend>(
    common: &CommonBench,
    adapter: &AdapterConfig,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<Llama<B>> {
    match &common.model {
        Some(path) => models::auto::load_llama_any_in::<B>(path, adapter, precision, device)
            .with_context(|| format!("loading {}", path.display())),
        None => {
            let config = LlamaConfig::preset(&common.shape).context("checked shape")?;
            let mut ckpt = Checkpoint::random(common.seed);
            build_llama_in(&config, &mut ckpt, adapter, precision, device)
                .context("building the model")
        }
    }
}

fn qkvo(rank: usize) -> AdapterConfig {
    if rank == 0 {
        return AdapterConfig::none();
    }
    AdapterConfig::new(vec![Target::Q, Target::K, Target::V, Target::O], rank, 16.0)
}

fn random_ids(rng: &mut StdRng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

// ------------------------------------------------------------------------------------ train

pub fn run_train(a: TrainBench) -> Result<()> {
    check_common(&a.common)?;
    set_threads(&a.common);
    if a.batch == 0 || a.seq < 2 {
        bail!("--batch must be at least 1 and --seq at least 2");
    }
    if !(a.answer_frac > 0.0 && a.answer_frac <= 1.0) {
        bail!("--answer-frac must be in (0, 1]");
    }
    let method = match a.method.as_str() {
        "lora" => Method::Lora { rank: a.rank },
        "flexi" => {
            let r: Vec<String> = a.ranks.iter().map(|r| r.to_string()).collect();
            Method::Flexi {
                class_ranks: format!("({})", r.join(",")),
            }
        }
        "dylora" => Method::Dylora {
            r_max: a.rank,
            frozen: false,
            eval_rank: a.rank.div_ceil(2),
        },
        "dylora_plus" => Method::DyloraPlus { r_max: a.rank },
        "adalora" => Method::Adalora(train::adalora::AdaLoraConfig {
            target_r: a.rank,
            init_r: a.rank + a.rank / 2,
            ..Default::default()
        }),
        "full" => Method::Full,
        other => bail!(
            "unknown --method {other:?}: expected lora, flexi, dylora, dylora_plus, adalora or full"
        ),
    };
    let mut case = match &method {
        Method::Flexi { .. } => format!("train-{}", method.label()),
        _ => format!("train-{}", a.method),
    };
    match a.checkpoint_activations {
        Some(train::ActivationCheckpointing::Layers) => case.push_str("+ckpt"),
        Some(train::ActivationCheckpointing::Balanced) => case.push_str("+balanced"),
        _ => {}
    }
    push_precision(&mut case, a.precision);
    let params = case_params(&case, &a);
    let steps = a.common.warmup + a.common.iters;
    let cfg = TrainConfig {
        method,
        lr: 1e-4,
        warmup_steps: 0,
        weight_decay: 0.0,
        max_steps: steps,
        batch_size: a.batch,
        grad_clip: 1.0,
        max_len: a.seq,
        seed: a.common.seed,
        save_every: 0,
        precision: a.precision,
        ..Default::default()
    };
    cfg.validate().context("benchmark training configuration")?;
    let kind = a.common.backend.parse()?;
    crate::alloc::for_precision(cfg.precision);
    let job = TrainJob(a.clone(), cfg);
    let (ms, loss, step_peak) =
        if a.checkpoint_activations == Some(train::ActivationCheckpointing::Balanced) {
            backend::run_checkpointed(kind, job)??
        } else {
            backend::run(kind, job)??
        };
    let mut extra = serde_json::Map::new();
    extra.insert("last_loss".into(), loss.into());
    if let Some(mb) = step_peak {
        extra.insert("train_peak_rss_mb".into(), mb.into());
    }
    finish(&a.common, case, params, ms, a.batch * a.seq, extra)
}

struct TrainJob(TrainBench, TrainConfig);

impl BackendJob for TrainJob {
    type Output = Result<(Vec<f64>, f64, Option<f64>)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (a, cfg) = (self.0, self.1);
        let adapter = train::lm::adapter_for(&cfg)?;
        let model = llama_in::<B>(&a.common, &adapter, cfg.precision, &device)?;
        let model = train::params::seeded_adapter_init(model, cfg.seed);
        let model = train::params::stable_param_ids(model, cfg.method == Method::Full);
        let vocab = model.config.vocab_size;

        let mut rng = StdRng::seed_from_u64(a.common.seed);
        let prompt = ((a.seq as f64) * (1.0 - a.answer_frac)).round() as usize;
        let ids: Vec<Vec<u32>> = (0..a.batch)
            .map(|_| random_ids(&mut rng, a.seq, vocab))
            .collect();
        let labels = ids
            .iter()
            .flat_map(|row| {
                row.iter().enumerate().map(
                    move |(t, &id)| {
                        if t < prompt { IGNORE_INDEX } else { id as i64 }
                    },
                )
            })
            .collect();
        let routed = cfg
            .method
            .class_ranks()?
            .map(|_| (0..a.batch).map(|i| a.ranks[i % a.ranks.len()]).collect());
        let batch = LmBatch {
            batch: PaddedBatch {
                mask: vec![vec![true; a.seq]; a.batch],
                ids,
            },
            labels,
            example_ids: (0..a.batch).map(|i| format!("bench-{i}")).collect(),
            routed,
        };
        let out = std::env::temp_dir().join(format!("flexi-bench-train-{}", std::process::id()));
        let trainer = Trainer::<B> {
            config: &cfg,
            out: out.clone(),
            device,
            progress: true,
            stop_at: None,
            save_checkpoints: false,
            // `--threads` bounds the shards too (one shard per worker).
            shards: a.shards.or(a.common.threads).unwrap_or_else(|| {
                a.common
                    .backend
                    .parse()
                    .map_or(1, |k: flexi_burn::BackendKind| {
                        train::trainer::default_shards(k == flexi_burn::BackendKind::Flex)
                    })
            }),
            parallel: None,
            recompute_layers: a.checkpoint_activations
                == Some(train::ActivationCheckpointing::Layers),
        };
        // The peak of the training steps alone: the model is built (the random weights'
        // host copy, and under mixed precision the f32 tensors before their cast, are gone).
        let reset = reset_peak_rss();
        let (_, summary) = trainer.fit(&CausalLm, model, &[batch], false)?;
        let step_peak = reset.then(peak_rss_mb);
        let _ = std::fs::remove_dir_all(&out);
        let ms = summary.step_seconds[a.common.warmup..]
            .iter()
            .map(|s| s * 1e3)
            .collect();
        Ok((
            ms,
            summary.losses.last().copied().unwrap_or(f64::NAN),
            step_peak,
        ))
    }
}

// --------------------------------------------------------------------------- decode, prefill

pub fn run_decode(a: DecodeBench) -> Result<()> {
    check_common(&a.common)?;
    set_threads(&a.common);
    if a.batch == 0 || a.prompt_len == 0 || a.new_tokens == 0 {
        bail!("--batch, --prompt-len and --new-tokens must be at least 1");
    }
    let mut case = "decode".to_string();
    push_precision(&mut case, a.precision);
    let params = case_params(&case, &a);
    let kind = a.common.backend.parse()?;
    let (ms, step_ms) = backend::run(kind, DecodeJob(a.clone()))??;
    let mut extra = serde_json::Map::new();
    extra.insert("step_ms_median".into(), step_ms.into());
    finish(&a.common, case, params, ms, a.batch * a.new_tokens, extra)
}

struct DecodeJob(DecodeBench);

impl BackendJob for DecodeJob {
    type Output = Result<(Vec<f64>, f64)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let model = llama_in::<B::InnerBackend>(&a.common, &qkvo(a.rank), a.precision, &device)?;
        let vocab = model.config.vocab_size;
        let mut rng = StdRng::seed_from_u64(a.common.seed);
        let prompts: Vec<Vec<u32>> = (0..a.batch)
            .map(|_| random_ids(&mut rng, a.prompt_len, vocab))
            .collect();
        let ranks = SampleRanks::uniform(a.batch, a.rank);
        // No eos: exactly `new_tokens` per sample.
        let config = GenerationConfig::greedy(a.new_tokens, Vec::new());
        let mut run_once = || -> Result<()> {
            let g = generate(&model, &prompts, &ranks, &config)?;
            if g.tokens.iter().any(|t| t.len() != a.new_tokens) {
                bail!("generation stopped early");
            }
            Ok(())
        };
        let ms = super::bench::time("decode", "", a.common.warmup, a.common.iters, &mut run_once)?;
        // Prefill alone, to separate the per-token step time.
        let prefill = super::bench::time("decode", "prefill", 0, a.common.iters, || {
            prefill_once(&model, &prompts, &ranks)
        })?;
        let step_ms = (super::bench::median(&ms) - super::bench::median(&prefill))
            / (a.new_tokens.max(2) - 1) as f64;
        Ok((ms, step_ms))
    }
}

/// One cached forward of the prompts, logits of the last position (what `generate` does
/// first).
fn prefill_once<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    ranks: &SampleRanks,
) -> Result<()> {
    let batch = PaddedBatch::left_pad(prompts, 0);
    let mut cache = model.new_cache();
    let logits = model.forward_last(
        &batch,
        &batch.mask,
        &batch.positions(),
        Some(&mut cache),
        ranks,
    )?;
    let _ = logits.slice([0..1, 0..1]).into_data();
    Ok(())
}

pub fn run_prefill(a: PrefillBench) -> Result<()> {
    check_common(&a.common)?;
    set_threads(&a.common);
    if a.seq == 0 {
        bail!("--seq must be at least 1");
    }
    let mut case = "prefill".to_string();
    push_precision(&mut case, a.precision);
    let mut params = case_params(&case, &a);
    params["batch"] = 1.into();
    let kind = a.common.backend.parse()?;
    let ms = backend::run(kind, PrefillJob(a.clone()))??;
    finish(&a.common, case, params, ms, a.seq, Default::default())
}

struct PrefillJob(PrefillBench);

impl BackendJob for PrefillJob {
    type Output = Result<Vec<f64>>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let model = llama_in::<B::InnerBackend>(&a.common, &qkvo(a.rank), a.precision, &device)?;
        let mut rng = StdRng::seed_from_u64(a.common.seed);
        let prompts = vec![random_ids(&mut rng, a.seq, model.config.vocab_size)];
        let ranks = SampleRanks::uniform(1, a.rank);
        super::bench::time("prefill", "", a.common.warmup, a.common.iters, || {
            prefill_once(&model, &prompts, &ranks)
        })
    }
}

// ---------------------------------------------------------------------------------- whisper

/// Whisper tiny.en's configuration (openai/whisper-tiny.en `config.json`).
fn whisper_tiny_en() -> Result<models::whisper::WhisperConfig> {
    let v = serde_json::json!({
        "model_type": "whisper", "vocab_size": 51864, "num_mel_bins": 80, "d_model": 384,
        "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
        "decoder_layers": 4, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536,
        "max_source_positions": 1500, "max_target_positions": 448,
        "decoder_start_token_id": 50257, "eos_token_id": 50256, "pad_token_id": 50256,
        "activation_function": "gelu", "scale_embedding": false
    });
    Ok(models::whisper::WhisperConfig::from_json(
        &v,
        None,
        std::path::Path::new("<whisper tiny.en preset>"),
    )?)
}

pub fn run_whisper(a: WhisperBench) -> Result<()> {
    set_threads(&a.common);
    if a.common.iters == 0 || a.new_tokens == 0 {
        bail!("--iters and --new-tokens must be at least 1");
    }
    let case = "whisper".to_string();
    let mut params = case_params(&case, &a);
    // Whisper has its own shape; the Llama `--shape` does not apply.
    if let Some(obj) = params.as_object_mut() {
        obj.remove("shape");
        let shape = match &a.common.model {
            Some(dir) => dir.display().to_string(),
            None => "tiny.en".into(),
        };
        obj.insert("whisper_shape".into(), shape.into());
    }
    let kind = a.common.backend.parse()?;
    let (ms, encode_ms) = backend::run(kind, WhisperJob(a.clone()))??;
    let mut extra = serde_json::Map::new();
    extra.insert("encode_ms_median".into(), encode_ms.into());
    finish(&a.common, case, params, ms, a.new_tokens, extra)
}

struct WhisperJob(WhisperBench);

impl BackendJob for WhisperJob {
    type Output = Result<(Vec<f64>, f64)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        use models::whisper::{GreedyConfig, WhisperAdapter, build_whisper};
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let a = self.0;
        let model = match &a.common.model {
            Some(dir) => {
                models::ct2::load_whisper_any::<I<B>>(dir, &WhisperAdapter::none(), &device)
                    .with_context(|| format!("loading {}", dir.display()))?
            }
            None => {
                let config = whisper_tiny_en()?;
                let mut ckpt = Checkpoint::random(a.common.seed);
                build_whisper::<I<B>>(&config, &mut ckpt, &WhisperAdapter::none(), &device)?
            }
        };
        let c = &model.config;
        I::<B>::seed(&device, a.common.seed);
        let mel = Tensor::<I<B>, 3>::random(
            [1, c.num_mel_bins, 3000],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let ranks = SampleRanks::uniform(1, 0);
        let prompts = vec![vec![
            c.decoder_start_token_id,
            c.decoder_start_token_id + 105,
        ]];
        let greedy = GreedyConfig {
            max_new_tokens: a.new_tokens,
            suppress_tokens: Vec::new(),
            begin_suppress_tokens: Vec::new(),
            eos_token_id: u32::MAX, // never produced: exactly `new_tokens` tokens
            use_cache: true,
        };
        let mut encode = Vec::new();
        let ms = super::bench::time("whisper", "", a.common.warmup, a.common.iters, || {
            let t0 = Instant::now();
            let enc = model.encode(mel.clone(), &ranks)?;
            let _ = enc.clone().slice([0..1, 0..1, 0..1]).into_data();
            encode.push(t0.elapsed().as_secs_f64() * 1e3);
            let ids = models::whisper::greedy_decode(&model, &enc, &prompts, &ranks, &greedy)?;
            if ids[0].len() != a.new_tokens {
                bail!("decoding stopped after {} tokens", ids[0].len());
            }
            Ok(())
        })?;
        let encode = &encode[a.common.warmup..];
        Ok((ms, super::bench::median(encode)))
    }
}
