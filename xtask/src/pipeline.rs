//! The Flexi-LoRA pipeline as workflows (SPEC 2.2):
//!
//! ```text
//! cargo xtask label  --model M --data TRAIN --out runs/labels      # base model scores -> easy/hard
//! cargo xtask router --model M --data TRAIN --labels runs/labels/router_train.jsonl --ranks 2,8 --out runs/router
//! cargo xtask train  --model M --data TRAIN --method flexi --ranks 2,8 --router runs/router --out runs/flexi
//! cargo xtask eval   --run runs/flexi --data TEST [--data TEST2 ...]
//! ```
//!
//! `--model` is a Hugging Face directory or a `.gguf` file. Every command takes `--backend`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use datasets::batch::{PadSide, collate};
use datasets::labels::{LabelRule, balanced_split, count, label_scores, read_jsonl, write_jsonl};
use datasets::{Example, ReadOptions, read_all};
use flexi_burn::backend::{self, BackendJob, BackendKind};
use infer::{EvalReport, EvalSettings, LmText, RankPolicy, evaluate};
use models::llama::{AdapterConfig, Llama};
use serde::{Deserialize, Serialize};
use train::lm::{CausalLm, LmBatch, load_for_training};
use train::router::{
    RouterMeta, RouterTraining, load_router, pooled_embeddings, route, save_router, train_router,
};
use train::{Method, TrainConfig, Trainer};

/// Options shared by the pipeline commands.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Model: a Hugging Face directory or a `.gguf` file.
    #[arg(long)]
    pub model: PathBuf,
    /// Backend: flex (CPU), wgpu or cuda.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Do not apply the model's chat template to prompts.
    #[arg(long)]
    pub no_chat: bool,
    /// Use only the first N examples of each data file.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Longest prompt + answer in tokens.
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Longest generated answer in tokens.
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 8)]
    pub eval_batch: usize,
}

impl Common {
    fn backend(&self) -> Result<BackendKind> {
        Ok(self.backend.parse()?)
    }

    fn text(&self) -> Result<LmText> {
        LmText::load(&self.model, !self.no_chat)
            .with_context(|| format!("loading the tokenizer of {}", self.model.display()))
    }

    /// The base model, without adapters.
    fn base_model<B: burn::tensor::backend::Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Llama<B>> {
        models::auto::load_llama_any::<B>(&self.model, &AdapterConfig::none(), device)
            .with_context(|| format!("loading {}", self.model.display()))
    }

    fn settings(&self) -> EvalSettings {
        EvalSettings {
            batch_size: self.eval_batch,
            max_new_tokens: self.max_new_tokens,
            max_len: self.max_len,
            progress: true,
        }
    }
}

/// Reads a data file (format detected), keeping the first `limit` examples.
pub fn read_examples(path: &Path, limit: Option<usize>) -> Result<Vec<Example>> {
    let data = read_all(path, &ReadOptions::default())
        .with_context(|| format!("reading {}", path.display()))?;
    let mut ex = data.examples;
    if let Some(n) = limit {
        ex.truncate(n);
    }
    if ex.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(ex)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------- label

/// `label`: score the base model on every training example and write difficulty labels.
#[derive(Args, Clone, Debug)]
pub struct LabelArgs {
    #[command(flatten)]
    common: Common,
    /// Training data file.
    #[arg(long)]
    data: PathBuf,
    /// Output directory (`scores.jsonl`, `labels.jsonl`, `router_train.jsonl`).
    #[arg(long)]
    out: PathBuf,
    /// Easy/hard threshold (QA: F1 >= t easy; speech: WER <= t easy; math: correct = easy).
    #[arg(long)]
    threshold: Option<f64>,
    /// Seed of the balanced split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

struct LabelJob(LabelArgs);

impl BackendJob for LabelJob {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let examples = read_examples(&a.data, a.common.limit)?;
        let text = a.common.text()?;
        let model = a.common.base_model::<B::InnerBackend>(&device)?;
        let report = evaluate(
            &model,
            &text,
            &examples,
            &RankPolicy::Base,
            &a.common.settings(),
            "base",
        )?;
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        print_report("base model", &report);
        let rule = LabelRule::for_task(examples[0].task, a.threshold);
        let labelled = label_scores(
            report.predictions.iter().map(|p| (p.id.clone(), p.score)),
            rule,
        )?;
        write_jsonl(a.out.join("labels.jsonl"), &labelled)?;
        let balanced = balanced_split(&labelled, a.seed)?;
        write_jsonl(a.out.join("router_train.jsonl"), &balanced)?;
        write_json(&a.out.join("base_eval.json"), &report)?;
        let c = count(&labelled);
        println!(
            "labels: {} easy, {} hard -> {} in the balanced router set ({})",
            c.easy,
            c.hard,
            balanced.len(),
            a.out.join("router_train.jsonl").display()
        );
        Ok(())
    }
}

/// Runs `label`.
pub fn run_label(args: LabelArgs) -> Result<()> {
    backend::run(args.common.backend()?, LabelJob(args))?
}

// ---------------------------------------------------------------- router

/// `router`: train the difficulty router on balanced labels.
#[derive(Args, Clone, Debug)]
pub struct RouterArgs {
    #[command(flatten)]
    common: Common,
    /// Training data file (the prompts of the labelled ids).
    #[arg(long)]
    data: PathBuf,
    /// Labels JSONL (`{id, score, label}`), e.g. `router_train.jsonl` from `label`.
    #[arg(long)]
    labels: PathBuf,
    /// Class -> rank map: easy,hard.
    #[arg(long, default_value = "2,8")]
    ranks: String,
    /// Hidden width (0: linear router).
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Logit noise std in training.
    #[arg(long, default_value_t = 1.0)]
    noise_std: f64,
    /// Epochs.
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory (`router.safetensors`, `router.json`).
    #[arg(long)]
    out: PathBuf,
}

struct RouterJob(RouterArgs);

/// Pooled prompt embeddings of examples with the model's frozen embedding.
fn features<B: burn::tensor::backend::Backend>(
    model: &models::llama::Llama<B>,
    text: &LmText,
    examples: &[&Example],
    max_len: usize,
) -> Result<Vec<Vec<f32>>> {
    let prompts: Vec<Vec<u32>> = examples
        .iter()
        .map(|e| text.encode_prompt(e, max_len, 1))
        .collect::<infer::Result<_>>()?;
    Ok(pooled_embeddings(model, &prompts, 16))
}

impl BackendJob for RouterJob {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let map: flexi_burn::ClassRankMap = a.ranks.parse()?;
        let examples = read_examples(&a.data, None)?;
        let by_id: HashMap<&str, &Example> = examples.iter().map(|e| (e.id.as_str(), e)).collect();
        let labels = read_jsonl(&a.labels)?;
        let mut chosen = Vec::with_capacity(labels.len());
        let mut classes = Vec::with_capacity(labels.len());
        for l in &labels {
            let ex = by_id.get(l.id.as_str()).with_context(|| {
                format!(
                    "{}: label id {} is not in {}",
                    a.labels.display(),
                    l.id,
                    a.data.display()
                )
            })?;
            chosen.push(*ex);
            classes.push(l.label.class());
        }
        let text = a.common.text()?;
        let model = a.common.base_model::<B::InnerBackend>(&device)?;
        let feats = features(&model, &text, &chosen, a.common.max_len)?;
        let training = RouterTraining {
            hidden: (a.hidden > 0).then_some(a.hidden),
            noise_std: a.noise_std,
            epochs: a.epochs,
            seed: a.seed,
            ..Default::default()
        };
        let (router, acc) =
            train_router::<B>(&feats, &classes, map.num_classes(), &training, &device)?;
        let meta = RouterMeta {
            d_model: feats[0].len(),
            num_classes: map.num_classes(),
            hidden: training.hidden,
            class_ranks: map.to_string(),
            train_accuracy: acc,
            training,
        };
        save_router(&router, &meta, &a.out)?;
        println!(
            "router: {} examples, training accuracy {:.1} %, class->rank {} -> {}",
            chosen.len(),
            100.0 * acc,
            map,
            a.out.display()
        );
        Ok(())
    }
}

/// Runs `router`.
pub fn run_router(args: RouterArgs) -> Result<()> {
    backend::run(args.common.backend()?, RouterJob(args))?
}

// ---------------------------------------------------------------- train

/// `train`: fine-tune with one method.
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    common: Common,
    /// Training data file.
    #[arg(long)]
    data: PathBuf,
    /// Method: full, lora, dylora, dylora_plus, adalora, flexi (overrides the config file).
    #[arg(long)]
    method: Option<String>,
    /// Rank of lora; r_max of dylora / dylora_plus; target_r of adalora.
    #[arg(long)]
    rank: Option<usize>,
    /// Flexi-LoRA class -> rank map, e.g. 2,8.
    #[arg(long)]
    ranks: Option<String>,
    /// Router directory (Flexi-LoRA).
    #[arg(long)]
    router: Option<PathBuf>,
    /// Training configuration file (TOML or JSON).
    #[arg(long)]
    config: Option<PathBuf>,
    /// `key=value` overrides of the configuration (repeatable), e.g. `--set lr=1e-4`.
    #[arg(long = "set")]
    set: Vec<String>,
    /// Output directory (checkpoints, metrics.jsonl, run.json).
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in `--out`.
    #[arg(long)]
    resume: bool,
    /// No progress bar or summary lines (callers that print their own).
    #[arg(skip)]
    quiet: bool,
}

/// What `train` leaves for `eval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// The model path.
    pub model: PathBuf,
    /// The configuration.
    pub config: TrainConfig,
    /// The router, for Flexi-LoRA.
    pub router: Option<PathBuf>,
    /// Whether prompts used the chat template.
    pub chat: bool,
    /// Training examples.
    pub examples: usize,
    /// Wall time of training in seconds.
    pub seconds: f64,
    /// First and last step losses.
    pub first_loss: f64,
    /// Last step loss.
    pub last_loss: f64,
    /// A speech (Whisper) run.
    #[serde(default)]
    pub speech: bool,
}

impl RunInfo {
    fn new(
        a: &TrainArgs,
        config: TrainConfig,
        chat: bool,
        examples: usize,
        summary: &train::TrainSummary,
        speech: bool,
    ) -> Self {
        Self {
            model: a.common.model.clone(),
            config,
            router: a.router.clone(),
            chat,
            examples,
            seconds: summary.seconds,
            first_loss: summary.losses.first().copied().unwrap_or(f64::NAN),
            last_loss: summary.losses.last().copied().unwrap_or(f64::NAN),
            speech,
        }
    }
}

/// Builds the training configuration from the file, the flags and the overrides.
pub fn train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    if let Some(m) = &args.method {
        let r = args.rank;
        cfg.method = match m.as_str() {
            "full" => Method::Full,
            "lora" => Method::Lora {
                rank: r.unwrap_or(8),
            },
            "dylora" => {
                let r_max = r.unwrap_or(8);
                Method::Dylora {
                    r_max,
                    frozen: false,
                    eval_rank: r_max,
                }
            }
            "dylora_plus" | "dylora+" => Method::DyloraPlus {
                r_max: r.unwrap_or(8),
            },
            "adalora" => Method::Adalora(train::adalora::AdaLoraConfig {
                target_r: r.unwrap_or(8),
                init_r: r.unwrap_or(8) * 3 / 2,
                ..Default::default()
            }),
            "flexi" => Method::Flexi {
                class_ranks: args.ranks.clone().unwrap_or_else(|| "2,8".into()),
            },
            other => bail!(
                "unknown method {other:?}: expected full, lora, dylora, dylora_plus, adalora or flexi"
            ),
        };
    }
    let cfg = cfg.with_overrides(&args.set)?;
    if matches!(cfg.method, Method::Flexi { .. }) && args.router.is_none() {
        bail!("--method flexi needs --router DIR (train one with `cargo xtask router`)");
    }
    Ok(cfg)
}

struct TrainJob(TrainArgs, TrainConfig);

impl BackendJob for TrainJob {
    type Output = Result<RunInfo>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<RunInfo> {
        let (a, cfg) = (self.0, self.1);
        let examples = read_examples(&a.data, a.common.limit)?;
        if crate::speech::is_whisper(&a.common.model) {
            let summary = crate::speech::train::<B>(
                &a.common.model,
                &examples,
                &cfg,
                &a.out,
                a.resume,
                train::trainer::default_shards(a.common.backend()?),
                device,
            )?;
            let info = RunInfo::new(&a, cfg, false, examples.len(), &summary, true);
            write_json(&a.out.join("run.json"), &info)?;
            println!(
                "trained {} steps in {:.0} s: loss {:.4} -> {:.4}",
                summary.losses.len(),
                summary.seconds,
                info.first_loss,
                info.last_loss
            );
            return Ok(info);
        }
        let text = a.common.text()?;
        let mut encoded = Vec::with_capacity(examples.len());
        for ex in &examples {
            encoded.push(text.encode_train(ex, cfg.max_len)?);
        }
        let model = load_for_training::<B>(&a.common.model, &cfg, &device)?;
        // Router ranks per example (Flexi-LoRA), from the frozen router.
        let routed: Option<Vec<usize>> = match (&cfg.method, &a.router) {
            (Method::Flexi { .. }, Some(dir)) => {
                let (router, map, _) = load_router::<B>(dir, &device)?;
                let want = cfg.method.class_ranks()?.unwrap_or(map.clone());
                if want != map {
                    bail!(
                        "the router in {} maps classes to {map}, the method asks for {want}",
                        dir.display()
                    );
                }
                // The router reads the frozen token embedding, which the model to train
                // shares with its base: no second copy of the model is loaded.
                let refs: Vec<&Example> = examples.iter().collect();
                let feats = features(&model.valid(), &text, &refs, cfg.max_len)?;
                Some(route(&router, &map, &feats, &device)?)
            }
            _ => None,
        };
        let batches: Vec<LmBatch> = encoded
            .chunks(cfg.batch_size)
            .enumerate()
            .map(|(bi, chunk)| {
                let refs: Vec<_> = chunk.iter().collect();
                let mut b = LmBatch::from_collated(&collate(&refs, text.pad_id(), PadSide::Left));
                b.routed = routed
                    .as_ref()
                    .map(|r| r[bi * cfg.batch_size..bi * cfg.batch_size + chunk.len()].to_vec());
                b
            })
            .collect();
        if !a.quiet {
            println!(
                "train {}: {} examples, {} batches, {} trainable parameters",
                cfg.method.label(),
                examples.len(),
                batches.len(),
                flexi_burn::ParamCount::of(&model).trainable
            );
        }
        let trainer = Trainer::<B> {
            config: &cfg,
            out: a.out.clone(),
            device,
            progress: !a.quiet,
            stop_at: None,
            save_checkpoints: true,
            shards: train::trainer::default_shards(a.common.backend()?),
        };
        let (_, summary) = trainer.fit(&CausalLm, model, &batches, a.resume)?;
        let info = RunInfo::new(&a, cfg, text.chat, examples.len(), &summary, false);
        write_json(&a.out.join("run.json"), &info)?;
        if a.quiet {
            return Ok(info);
        }
        println!(
            "trained {} steps in {:.0} s: loss {:.4} -> {:.4}; checkpoint {}",
            summary.losses.len(),
            summary.seconds,
            info.first_loss,
            info.last_loss,
            summary
                .checkpoint
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        Ok(info)
    }
}

/// Runs `train`.
pub fn run_train(args: TrainArgs) -> Result<()> {
    let cfg = train_config(&args)?;
    backend::run(args.common.backend()?, TrainJob(args, cfg))?.map(|_| ())
}

/// Trains with an explicit configuration (used by the demo).
pub fn train_with(args: TrainArgs, cfg: TrainConfig) -> Result<RunInfo> {
    backend::run(args.common.backend()?, TrainJob(args, cfg))?
}

// ---------------------------------------------------------------- eval

/// `eval`: evaluate a trained run (or the base model) on one or more data files.
#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// A `train` output directory (its `run.json` and newest checkpoint).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Model, for `--base` (a run knows its own).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Evaluate the base model (rank 0) instead of a run.
    #[arg(long)]
    base: bool,
    /// Evaluation data files.
    #[arg(long = "data", required = true)]
    data: Vec<PathBuf>,
    /// Use only the first N examples of each file.
    #[arg(long)]
    limit: Option<usize>,
    /// Backend.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Longest generated answer.
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    /// Prompts per batch.
    #[arg(long, default_value_t = 8)]
    eval_batch: usize,
    /// Where to write `eval.json` (default: the run directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar or report tables (callers that print their own).
    #[arg(skip)]
    quiet: bool,
}

/// The result of `eval` on every file.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSummary {
    /// Method label.
    pub method: String,
    /// One report per data file.
    pub reports: Vec<EvalReport>,
    /// Mean rank over all inputs.
    pub mean_rank: f64,
    /// Average activated LoRA parameters per input.
    pub activated_params: f64,
    /// Average of the main metric over the files.
    pub average: f64,
}

struct EvalJob(EvalArgs);

/// How a run picks its inference ranks (router ranks need each file's prompts).
enum Ranking<B: AutodiffBackend> {
    Base,
    Schedule(flexi_burn::RankSchedule, u64),
    Router(Box<flexi_burn::Router<B>>, flexi_burn::ClassRankMap),
}

impl BackendJob for EvalJob {
    type Output = Result<EvalSummary>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<EvalSummary> {
        let a = self.0;
        let (model_path, info) = match (&a.run, a.base) {
            (Some(run), false) => {
                let p = run.join("run.json");
                let info: RunInfo = serde_json::from_slice(
                    &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("{}: not a run description", p.display()))?;
                (info.model.clone(), Some(info))
            }
            (None, true) => (a.model.clone().context("--base needs --model")?, None),
            _ => bail!("give either --run DIR or --base --model PATH"),
        };
        if info
            .as_ref()
            .map_or_else(|| crate::speech::is_whisper(&model_path), |i| i.speech)
        {
            return eval_speech::<B>(&a, &model_path, info.as_ref(), device);
        }
        let text = LmText::load(&model_path, info.as_ref().is_none_or(|i| i.chat))?;
        let settings = EvalSettings {
            batch_size: a.eval_batch,
            max_new_tokens: a.max_new_tokens,
            max_len: info.as_ref().map_or(256, |i| i.config.max_len),
            progress: !a.quiet,
        };
        // The model: base, or the run's adapter from its newest checkpoint.
        let (model, method, ranking) = match &info {
            None => (
                models::auto::load_llama_any::<B::InnerBackend>(
                    &model_path,
                    &AdapterConfig::none(),
                    &device,
                )?,
                "base".to_string(),
                Ranking::Base,
            ),
            Some(info) => {
                let run = a.run.clone().context("run directory")?;
                let model = load_for_training::<B>(&model_path, &info.config, &device)?;
                let ckpt = train::checkpoint::Checkpoints::new(&run, 2)
                    .latest()?
                    .with_context(|| format!("{}: no checkpoint", run.display()))?;
                let w = ckpt.join("weights.safetensors");
                let model =
                    train::params::load_tensors(model, &train::params::read_safetensors(&w)?, &w)?;
                let method = info.config.method.clone();
                let ranking = match (&method, &info.router) {
                    (Method::Flexi { .. }, Some(dir)) => {
                        let (router, map, _) = load_router::<B>(dir, &device)?;
                        Ranking::Router(Box::new(router), map)
                    }
                    (Method::Full, _) => Ranking::Base,
                    _ => Ranking::Schedule(
                        method.schedule().context("method without ranks")?,
                        info.config.seed,
                    ),
                };
                (model.valid(), method.label(), ranking)
            }
        };
        let mut reports = Vec::new();
        for path in &a.data {
            let examples = read_examples(path, a.limit)?;
            let policy = match &ranking {
                Ranking::Base => RankPolicy::Base,
                Ranking::Schedule(schedule, seed) => RankPolicy::Schedule {
                    schedule: schedule.clone(),
                    seed: *seed,
                },
                // The router reads the frozen token embedding, which the adapted model shares
                // with its base.
                Ranking::Router(router, map) => {
                    let refs: Vec<&Example> = examples.iter().collect();
                    let feats = features(&model, &text, &refs, settings.max_len)?;
                    let ranks = route(router, map, &feats, &device)?;
                    RankPolicy::PerExample(
                        examples.iter().map(|e| e.id.clone()).zip(ranks).collect(),
                    )
                }
            };
            let name = examples[0].source.clone();
            let report = evaluate(&model, &text, &examples, &policy, &settings, &name)?;
            if !a.quiet {
                print_report(&format!("{method} on {}", path.display()), &report);
            }
            reports.push(report);
        }
        finish_eval(&a, method, reports)
    }
}

/// `eval` of a Whisper run (or base model) on LibriSpeech-layout data.
fn eval_speech<B: AutodiffBackend>(
    a: &EvalArgs,
    model_path: &Path,
    info: Option<&RunInfo>,
    device: B::Device,
) -> Result<EvalSummary> {
    let method = info.map_or_else(|| "base".to_string(), |i| i.config.method.label());
    let mut reports = Vec::new();
    for path in &a.data {
        let examples = read_examples(path, a.limit)?;
        let run = match (info, &a.run) {
            (Some(i), Some(dir)) => Some((dir.as_path(), &i.config)),
            _ => None,
        };
        let report =
            crate::speech::eval::<B>(model_path, run, &examples, a.eval_batch, device.clone())?;
        print_report(&format!("{method} on {}", path.display()), &report);
        reports.push(report);
    }
    finish_eval(a, method, reports)
}

/// Combines the per-file reports (mean rank and activated parameters per input over all
/// inputs, average of the main metric over files) and writes `eval.json`.
fn finish_eval(a: &EvalArgs, method: String, reports: Vec<EvalReport>) -> Result<EvalSummary> {
    let inputs: usize = reports.iter().map(|r| r.predictions.len()).sum();
    let per_input = |f: fn(&EvalReport) -> f64| {
        reports
            .iter()
            .map(|r| f(r) * r.predictions.len() as f64)
            .sum::<f64>()
            / inputs.max(1) as f64
    };
    let summary = EvalSummary {
        method,
        mean_rank: per_input(|r| r.mean_rank),
        activated_params: per_input(|r| r.activated_params),
        average: reports.iter().map(main_metric).sum::<f64>() / reports.len() as f64,
        reports,
    };
    let out = a
        .out
        .clone()
        .or(a.run.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write_json(&out.join("eval.json"), &summary)?;
    Ok(summary)
}

/// The first metric of the report's first table's average row (accuracy, F1 or WER).
pub fn main_metric(r: &EvalReport) -> f64 {
    r.tables
        .first()
        .and_then(|t| t.average.as_ref().or(t.rows.last()))
        .and_then(|row| row.values.first().copied())
        .unwrap_or(f64::NAN)
}

fn print_report(title: &str, r: &EvalReport) {
    println!("\n{title}");
    for t in &r.tables {
        println!("{t}");
    }
    println!(
        "mean rank {:.2}, average activated LoRA parameters per input {:.0}",
        r.mean_rank, r.activated_params
    );
}

/// Runs `eval`.
pub fn run_eval(args: EvalArgs) -> Result<()> {
    eval(args).map(|_| ())
}

/// Runs `eval` and returns its summary.
pub fn eval(args: EvalArgs) -> Result<EvalSummary> {
    let kind: BackendKind = args.backend.parse()?;
    backend::run(kind, EvalJob(args))?
}

// ---------------------------------------------------------------- constructors for the demo

impl LabelArgs {
    /// Labels `data` into `out`.
    pub fn new(common: Common, data: PathBuf, out: PathBuf, seed: u64) -> Self {
        Self {
            common,
            data,
            out,
            threshold: None,
            seed,
        }
    }
}

impl RouterArgs {
    /// A router with the default depth and noise.
    pub fn new(
        common: Common,
        data: PathBuf,
        labels: PathBuf,
        ranks: String,
        out: PathBuf,
        seed: u64,
    ) -> Self {
        Self {
            common,
            data,
            labels,
            ranks,
            hidden: 64,
            noise_std: 1.0,
            epochs: 50,
            seed,
            out,
        }
    }
}

impl TrainArgs {
    /// A run on `data` into `out` (the method comes with the configuration).
    pub fn new(common: Common, data: PathBuf, router: Option<PathBuf>, out: PathBuf) -> Self {
        Self {
            common,
            data,
            method: None,
            rank: None,
            ranks: None,
            router,
            config: None,
            set: Vec::new(),
            out,
            resume: false,
            quiet: false,
        }
    }

    /// Without progress bars and summary lines.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }
}

impl EvalArgs {
    /// The base model on `data`, results into `out`.
    pub fn base(model: &Path, data: &Path, backend: &str, out: &Path) -> Self {
        Self {
            run: None,
            model: Some(model.to_path_buf()),
            base: true,
            data: vec![data.to_path_buf()],
            limit: None,
            backend: backend.into(),
            max_new_tokens: 40,
            eval_batch: 8,
            out: Some(out.to_path_buf()),
            quiet: false,
        }
    }

    /// Writes `eval.json` into `out` instead.
    pub fn with_out(mut self, out: &Path) -> Self {
        self.out = Some(out.to_path_buf());
        self
    }

    /// Generates at most `n` answer tokens.
    pub fn with_max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }

    /// Without progress bars and report tables.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// A trained run on `data`.
    pub fn run(run: &Path, data: &Path, backend: &str) -> Self {
        Self {
            run: Some(run.to_path_buf()),
            base: false,
            model: None,
            ..Self::base(Path::new(""), data, backend, run)
        }
    }
}
