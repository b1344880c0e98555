//! The Flexi-LoRA pipeline as workflows (SPEC 2.2):
//!
//! ```text
//! cargo xtask label  --model M --data TRAIN --out runs/labels      # base model scores -> easy/hard
//! cargo xtask router --model M --data TRAIN --labels runs/labels/router_train.jsonl --ranks 2,8 --out runs/router
//! cargo xtask train  --model M --data TRAIN --method flexi --ranks 2,8 --router runs/router --out runs/flexi
//! cargo xtask eval   --run runs/flexi --data TEST [--data TEST2 ...]
//! ```
//!
//! `--model` is a Hugging Face directory or a `.gguf` file (text), or a Whisper directory,
//! Hugging Face or CTranslate2 (speech, with LibriSpeech-layout data). Every command takes
//! `--backend`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use datasets::labels::read_jsonl;
use datasets::{Example, Task};
use flexi_burn::backend::{self, BackendJob, BackendKind};
use infer::{EvalReport, EvalSettings};
use serde::Serialize;
use train::workflow::{self, BaseModel, FitSpec, RouterSpec};
use train::{DataParallel, FlexiRun, Method, NodeSetup, RunLock, TrainConfig};

pub use train::RunInfo;

/// Options shared by the pipeline commands.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Model: a Hugging Face directory or a `.gguf` file (Llama), or a Whisper directory
    /// (Hugging Face or CTranslate2).
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
    /// Longest prompt + answer in tokens (training and the router's features; generation in
    /// `label` widens it to fit `--max-new-tokens` after a prompt of up to 256 tokens).
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Longest generated answer in tokens (default: what fits the task, see
    /// `infer::default_max_new_tokens`: 256 for math reasoning, 32 for QA).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 8)]
    pub eval_batch: usize,
}

impl Common {
    fn backend(&self) -> Result<BackendKind> {
        Ok(self.backend.parse()?)
    }

    /// The base model with its tokenizer (and prompts, for text).
    fn base<B: burn::tensor::backend::Backend>(&self, device: &B::Device) -> Result<BaseModel<B>> {
        BaseModel::load(&self.model, !self.no_chat, device)
            .with_context(|| format!("loading {}", self.model.display()))
    }

    /// Generation settings for examples of `task`.
    fn settings(&self, task: Task) -> EvalSettings {
        let max_new_tokens = self
            .max_new_tokens
            .unwrap_or_else(|| infer::default_max_new_tokens(task));
        EvalSettings {
            batch_size: self.eval_batch,
            max_new_tokens,
            max_len: generation_len(self.max_len, max_new_tokens),
            progress: true,
        }
    }
}

/// Reads a data file (format detected), keeping the first `limit` examples.
pub fn read_examples(path: &Path, limit: Option<usize>) -> Result<Vec<Example>> {
    Ok(workflow::read_examples(path, limit)?)
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
    pub(crate) common: Common,
    /// Training data file.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Output directory (`scores.jsonl`, `labels.jsonl`, `router_train.jsonl`).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Easy/hard threshold (QA: F1 >= t easy, default 0.5; math: correct = easy; speech:
    /// WER <= t easy, default the median WER of the set).
    #[arg(long)]
    pub(crate) threshold: Option<f64>,
    /// Seed of the balanced split.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Score with a trained run (a reference adapter, SPEC 2.2) instead of the base model: the
    /// run's model at its own inference ranks. It must be a run on `--model` (the router that
    /// learns from these labels reads that model's embeddings).
    #[arg(long)]
    pub(crate) reference_run: Option<PathBuf>,
    /// What scores an example: `metric` (the task metric of the base model's or reference
    /// run's generation, SPEC 2.2) or `answer-nll` (ours: the base model's cross-entropy of
    /// the reference answer, teacher-forced as in training, easy at most `--threshold`,
    /// default the median; for a model at the floor of the task metric). Text only.
    #[arg(long, default_value = "metric")]
    pub(crate) score: String,
}

struct LabelJob(LabelArgs);

impl BackendJob for LabelJob {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        // One writer per output directory, held until the labels are written.
        let _lock = RunLock::acquire(&a.out)?;
        let examples = read_examples(&a.data, a.common.limit)?;
        let settings = a.common.settings(examples[0].task);
        let (labels, scorer) = match (a.score.as_str(), &a.reference_run) {
            ("metric", _) => match &a.reference_run {
                None => {
                    let base = a.common.base::<B::InnerBackend>(&device)?;
                    let labels = workflow::label(&base, &examples, &settings, a.threshold, a.seed)?;
                    (labels, "base model".to_string())
                }
                Some(dir) => {
                    let run = FlexiRun::<B::InnerBackend>::load(dir, &device)
                        .with_context(|| format!("loading the reference run {}", dir.display()))?;
                    let info = run.info.as_ref().context("a reference run has run.json")?;
                    let same =
                        |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                    if same(&info.model) != same(&a.common.model) {
                        bail!(
                            "{}: the reference run was trained on {}, not on --model {}; its labels \
                         would not match the embeddings the router reads",
                            dir.join("run.json").display(),
                            info.model.display(),
                            a.common.model.display()
                        );
                    }
                    let method = run.method();
                    let report = run
                        .evaluate(&examples, &settings, "reference")
                        .with_context(|| format!("scoring {} with {}", a.data.display(), method))?;
                    let labels =
                        workflow::labels_from_report(report, &examples, a.threshold, a.seed)?;
                    (
                        labels,
                        format!("reference run {} ({method})", dir.display()),
                    )
                }
            },
            ("answer-nll", Some(_)) => bail!(
                "--score answer-nll scores with the base model; --reference-run goes with \
                 --score metric"
            ),
            ("answer-nll", None) => {
                let base = a.common.base::<B::InnerBackend>(&device)?;
                let text = base.as_text().context(
                    "--score answer-nll needs a text model (a Llama); speech labels use WER",
                )?;
                let labels = workflow::label_by_answer_nll(
                    text,
                    &examples,
                    a.common.max_len,
                    a.common.eval_batch,
                    a.threshold,
                    a.seed,
                )?;
                (labels, "base model, answer cross-entropy".to_string())
            }
            (other, _) => bail!("--score {other:?}: expected metric or answer-nll"),
        };
        print_report(&scorer, &labels.report);
        labels.write(&a.out)?;
        let c = labels.counts();
        println!(
            "labels (threshold {:.4}): {} easy, {} hard -> {} in the balanced router set ({})",
            labels.rule.threshold(),
            c.easy,
            c.hard,
            labels.balanced.len(),
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
    pub(crate) common: Common,
    /// Training data file (the prompts of the labelled ids).
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Labels JSONL (`{id, score, label}`), e.g. `router_train.jsonl` from `label`.
    #[arg(long)]
    pub(crate) labels: PathBuf,
    /// Class -> rank map: easy,hard.
    #[arg(long, default_value = "2,8")]
    pub(crate) ranks: String,
    /// Hidden width (0: linear router).
    #[arg(long, default_value_t = 64)]
    pub(crate) hidden: usize,
    /// Logit noise std in training.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) noise_std: f64,
    /// Epochs.
    #[arg(long, default_value_t = 50)]
    pub(crate) epochs: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// What an audio router pools (Whisper models): log_mel, conv_stem or encoder.
    #[arg(long, default_value = "encoder")]
    pub(crate) audio_feature: String,
    /// What a text router pools (Llama models): `embedding` (the frozen token embedding, the
    /// paper's router), or the frozen base model's hidden states after `middle` (half its
    /// layers), `last` (all, final-normed) or `layer:L` decoder layers.
    #[arg(long, default_value = "embedding")]
    pub(crate) text_feature: String,
    /// Fraction of each class held out to measure the router's accuracy on unseen inputs
    /// (the router then trains on the rest).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) holdout: f64,
    /// Standardise the router's input features: on or off (default: on for audio, off for
    /// text).
    #[arg(long)]
    pub(crate) standardize: Option<String>,
    /// Output directory (`router.safetensors`, `router.json`).
    #[arg(long)]
    pub(crate) out: PathBuf,
}

struct RouterJob(RouterArgs);

impl BackendJob for RouterJob {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let _lock = RunLock::acquire(&a.out)?;
        let base = a.common.base::<B::InnerBackend>(&device)?;
        let text_layer = match (&base, a.text_feature.as_str()) {
            (_, "embedding") => None,
            (workflow::BaseModel::Text(t), f) => {
                let n = t.model.config.num_hidden_layers;
                Some(match f {
                    "middle" => n / 2,
                    "last" => n,
                    other => match other.strip_prefix("layer:").map(str::parse::<usize>) {
                        Some(Ok(l)) if l <= n => l,
                        _ => bail!(
                            "--text-feature {other:?}: expected embedding, middle, last or \
                             layer:L with L <= {n} (the model's layers)"
                        ),
                    },
                })
            }
            (_, other) => bail!("--text-feature {other:?} is for text models"),
        };
        let spec = RouterSpec {
            text_layer,
            class_ranks: a.ranks.parse()?,
            training: train::router::RouterTraining {
                hidden: (a.hidden > 0).then_some(a.hidden),
                noise_std: a.noise_std,
                epochs: a.epochs,
                seed: a.seed,
                holdout: a.holdout,
                standardize: match a.standardize.as_deref() {
                    None => None,
                    Some("on") => Some(true),
                    Some("off") => Some(false),
                    Some(other) => bail!("--standardize {other:?}: expected on or off"),
                },
                ..Default::default()
            },
            max_len: a.common.max_len,
            audio_feature: a.audio_feature.parse()?,
        };
        let examples = read_examples(&a.data, None)?;
        let labels = read_jsonl(&a.labels)
            .with_context(|| format!("reading labels {}", a.labels.display()))?;
        let fitted = workflow::fit_router::<B>(&base, &examples, &labels, &spec, &device)
            .with_context(|| {
                format!(
                    "training a router on {} with labels {}",
                    a.data.display(),
                    a.labels.display()
                )
            })?;
        fitted.save(&a.out)?;
        let held = fitted
            .meta
            .heldout_accuracy
            .map(|h| format!(", held-out accuracy {:.1} %", 100.0 * h))
            .unwrap_or_default();
        let input = match &fitted.meta.input {
            infer::RouterInput::Text(_) => "text".to_string(),
            infer::RouterInput::Audio(i) => format!("audio {}", i.feature),
        };
        println!(
            "router ({input}): {} examples, training accuracy {:.1} %{held}, class->rank {} -> {}",
            fitted.examples,
            100.0 * fitted.meta.train_accuracy,
            spec.class_ranks,
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
    pub(crate) common: Common,
    /// Training data file.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Method: full, lora, dylora, dylora_plus, adalora, flexi (overrides the config file).
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Rank of lora; r_max of dylora / dylora_plus; target_r of adalora.
    #[arg(long)]
    pub(crate) rank: Option<usize>,
    /// Flexi-LoRA class -> rank map, e.g. 2,8.
    #[arg(long)]
    pub(crate) ranks: Option<String>,
    /// Router directory (Flexi-LoRA).
    #[arg(long)]
    pub(crate) router: Option<PathBuf>,
    /// Training configuration file (TOML or JSON).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// `key=value` overrides of the configuration (repeatable), e.g. `--set lr=1e-4`.
    #[arg(long = "set")]
    pub(crate) set: Vec<String>,
    /// Output directory (checkpoints, metrics.jsonl, run.json).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Continue from the newest checkpoint in `--out`.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Storage type of the frozen base weights: f32 (default), bf16 or f16 (mixed precision:
    /// adapters, gradients and optimizer state stay f32; f16 scales the loss). Same as
    /// `--set precision=...`.
    #[arg(long)]
    pub(crate) precision: Option<flexi_burn::Precision>,
    /// Start the adapter from a PEFT LoRA / AdaLoRA adapter directory (e.g. one `import`ed or
    /// `export`ed, or made by PEFT): its modules fill the first components of the method's
    /// adapter (scales folded in, so step 0 computes that adapter); further components start
    /// as usual. LoRA-family methods with r_max >= the adapter's ranks.
    #[arg(long)]
    pub(crate) resume_from_adapter: Option<PathBuf>,
    /// Accept a half-precision adapter (`--resume-from-adapter`) on an f32 base.
    #[arg(long)]
    pub(crate) allow_upcast: bool,
    /// Activation checkpointing: `layers` (the default when the flag is given without a
    /// value; Llama and Whisper) keeps only each layer's input and recomputes the layer in the
    /// backward pass, as transformers' gradient checkpointing does (about one more forward
    /// pass of compute, a fraction of the activation memory); `balanced` uses Burn's
    /// `BalancedCheckpointing` (outputs of memory-bound operations recomputed; every model;
    /// pays only for long sequences). Same gradients either way.
    #[arg(long, num_args = 0..=1, default_missing_value = "layers", value_name = "layers|balanced")]
    pub(crate) checkpoint_activations: Option<train::ActivationCheckpointing>,
    /// Shards of each batch computed at once on the CPU (default: every core, divided among
    /// data-parallel peers). Each shard holds a whole copy of the trainable gradients: fewer
    /// shards lower full fine-tuning's peak (`plan --shards`), at the cost of idle cores.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) shards: Option<u64>,
    #[command(flatten)]
    pub(crate) parallel: ParallelArgs,
    /// No progress bar or summary lines (callers that print their own).
    #[arg(skip)]
    pub(crate) quiet: bool,
}

/// Data-parallel training (`train --devices N`, and several machines with `--nodes`): the
/// flags, or the environment variables a launcher sets (as torchrun users expect).
#[derive(Args, Clone, Debug)]
pub struct ParallelArgs {
    /// Data-parallel peers on this machine: devices 0..N of the backend (GPUs), or N CPU peers
    /// on flex. Each takes its slice of every global batch; gradients are summed with
    /// burn-collective; peer 0 writes the run directory.
    #[arg(long, env = "FLEXI_DEVICES", default_value_t = 1)]
    devices: usize,
    /// Machines in a multi-node run (each runs the same command with its `--node-rank`).
    #[arg(long, env = "FLEXI_NNODES")]
    nodes: Option<usize>,
    /// This machine's index in a multi-node run (0 writes the run directory).
    #[arg(long, env = "FLEXI_NODE_RANK")]
    node_rank: Option<usize>,
    /// The global orchestrator every machine meets at (`cargo xtask orchestrator` on one of
    /// them), e.g. `ws://10.0.0.1:3000`.
    #[arg(long, env = "FLEXI_ORCHESTRATOR")]
    orchestrator: Option<String>,
    /// This machine's address as the others reach it, e.g. `ws://10.0.0.2:3001`; its port
    /// serves the tensors this machine sends.
    #[arg(long, env = "FLEXI_NODE_ADDRESS")]
    node_address: Option<String>,
    /// Seconds a peer waits for the others in one collective operation before the run ends
    /// with an error (a peer died or cannot be reached).
    #[arg(long, env = "FLEXI_PEER_TIMEOUT", default_value_t = 300)]
    peer_timeout: u64,
}

impl Default for ParallelArgs {
    fn default() -> Self {
        Self {
            devices: 1,
            nodes: None,
            node_rank: None,
            orchestrator: None,
            node_address: None,
            peer_timeout: 300,
        }
    }
}

impl ParallelArgs {
    /// One `DataParallel` per local peer; empty for a single-process run.
    fn peers(&self) -> Result<Vec<DataParallel>> {
        let timeout = std::time::Duration::from_secs(self.peer_timeout.max(1));
        let n = self.devices;
        if n == 0 {
            bail!("--devices must be at least 1");
        }
        let peers = match (&self.nodes, &self.node_rank, &self.orchestrator) {
            (None, None, None) if n == 1 => return Ok(Vec::new()),
            (None, None, None) => (0..n)
                .map(|i| DataParallel::local(i, n))
                .collect::<train::Result<Vec<_>>>()?,
            (Some(nodes), Some(node_rank), Some(orchestrator)) => {
                let node_address = self
                    .node_address
                    .clone()
                    .context("a multi-node run needs --node-address (ws://HOST:PORT)")?;
                let data_port = node_address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
                    .with_context(|| {
                        format!("--node-address {node_address:?} has no port (ws://HOST:PORT)")
                    })?;
                let setup = NodeSetup {
                    nodes: *nodes,
                    node_rank: *node_rank,
                    peers_per_node: n,
                    orchestrator: orchestrator.clone(),
                    node_address,
                    data_port,
                };
                (0..n)
                    .map(|i| DataParallel::multi_node(i, &setup))
                    .collect::<train::Result<Vec<_>>>()?
            }
            _ => bail!(
                "a multi-node run needs all of --nodes, --node-rank and --orchestrator \
                 (or FLEXI_NNODES, FLEXI_NODE_RANK, FLEXI_ORCHESTRATOR)"
            ),
        };
        Ok(peers.into_iter().map(|p| p.with_timeout(timeout)).collect())
    }
}

/// The method `--method NAME [--rank R] [--ranks A,B]` names (the flags of `train` and `plan`).
pub fn method_from_flags(m: &str, r: Option<usize>, ranks: Option<&str>) -> Result<Method> {
    Ok(match m {
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
            class_ranks: ranks.unwrap_or("2,8").to_string(),
        },
        other => bail!(
            "unknown method {other:?}: expected full, lora, dylora, dylora_plus, adalora or flexi"
        ),
    })
}

/// Builds the training configuration from the file, the flags and the overrides.
pub fn train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    if let Some(m) = &args.method {
        cfg.method = method_from_flags(m, args.rank, args.ranks.as_deref())?;
    }
    let mut cfg = cfg.with_overrides(&args.set)?;
    if let Some(p) = args.precision {
        cfg.precision = p;
        cfg.validate()?;
    }
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
        let on_cpu = a.common.backend()? == BackendKind::Flex;
        let peers = a.parallel.peers()?;
        let spec = FitSpec {
            init_adapter: a.resume_from_adapter.clone(),
            allow_upcast: a.allow_upcast,
            model: a.common.model.clone(),
            config: cfg,
            router: a.router.clone(),
            chat: !a.common.no_chat,
            out: a.out.clone(),
            resume: a.resume,
            progress: !a.quiet,
            // CPU peers share the cores.
            shards: a.shards.map(|n| n as usize).unwrap_or_else(|| {
                (train::trainer::default_shards(on_cpu) / peers.len().max(1)).max(1)
            }),
            parallel: None,
            recompute_layers: a.recompute_layers(),
        };
        let fitted = if peers.is_empty() {
            workflow::fit::<B>(&spec, &examples, device)
                .with_context(|| format!("training on {}", a.data.display()))?
        } else {
            fit_peers::<B>(&spec, examples.clone(), peers, &device)
                .with_context(|| format!("data-parallel training on {}", a.data.display()))?
        };
        let info = fitted.info;
        if a.quiet {
            return Ok(info);
        }
        println!(
            "train {}{}: {} examples, {} batches, {} trainable parameters",
            info.config.method.label(),
            if info.speech { " (speech)" } else { "" },
            examples.len(),
            fitted.batches,
            fitted.trainable
        );
        println!(
            "trained {} steps in {:.0} s: loss {:.4} -> {:.4}; checkpoint {}",
            fitted.summary.losses.len(),
            fitted.summary.seconds,
            info.first_loss,
            info.last_loss,
            fitted
                .summary
                .checkpoint
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        Ok(info)
    }
}

/// Runs one thread per local peer, each on its device (the backend's device `i`; every CPU
/// peer on flex), and returns peer 0's result. The first peer to fail ends the run with its
/// error at once: the others, waiting for it in a collective call, are not joined (the
/// process exits with the error).
fn fit_peers<B: AutodiffBackend>(
    spec: &FitSpec,
    examples: Vec<Example>,
    peers: Vec<DataParallel>,
    device: &B::Device,
) -> Result<workflow::Fitted> {
    use burn::tensor::backend::DeviceOps;
    let examples = std::sync::Arc::new(examples);
    let (tx, rx) = std::sync::mpsc::channel();
    let local = peers.len();
    let first_rank = peers[0].rank;
    for (i, peer) in peers.into_iter().enumerate() {
        let mut id = device.id();
        id.index_id = i as u16;
        let device = <B::Device as burn::tensor::backend::Device>::from_id(id);
        let spec = FitSpec {
            progress: spec.progress && peer.is_leader(),
            parallel: Some(peer.clone()),
            ..spec.clone()
        };
        let (tx, examples) = (tx.clone(), examples.clone());
        std::thread::Builder::new()
            .name(format!("peer-{}", peer.rank))
            .spawn(move || {
                let result = workflow::fit::<B>(&spec, &examples, device);
                let _ = tx.send((peer.rank, result));
            })
            .context("starting a peer thread")?;
    }
    drop(tx);
    // Peer 0 (on other machines: this machine's first peer) is the one whose result counts.
    let mut first = None;
    for _ in 0..local {
        let (rank, result) = rx
            .recv()
            .context("a peer thread ended without a result (it panicked)")?;
        match result {
            Ok(fitted) if rank == first_rank => first = Some(fitted),
            Ok(_) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("peer {rank} failed"))),
        }
    }
    first.context("the first peer did not finish")
}

/// `orchestrator`: burn-collective's global orchestrator.
#[derive(Args, Clone, Debug)]
pub struct OrchestratorArgs {
    /// Port to listen on (the machines' `--orchestrator ws://THIS_HOST:PORT`).
    #[arg(long, default_value_t = 3000)]
    port: u16,
}

/// Runs the orchestrator until the process is interrupted.
pub fn run_orchestrator(args: OrchestratorArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the orchestrator's runtime")?;
    println!("orchestrator listening on port {}", args.port);
    runtime.block_on(burn_collective::start_global_orchestrator(args.port));
    Ok(())
}

impl TrainArgs {
    /// `--checkpoint-activations layers`.
    pub(crate) fn recompute_layers(&self) -> bool {
        self.checkpoint_activations == Some(train::ActivationCheckpointing::Layers)
    }
}

/// Runs `train`.
pub fn run_train(args: TrainArgs) -> Result<()> {
    let cfg = train_config(&args)?;
    train_with(args, cfg).map(|_| ())
}

/// Trains with an explicit configuration (used by the demo).
pub fn train_with(args: TrainArgs, cfg: TrainConfig) -> Result<RunInfo> {
    let kind = args.common.backend()?;
    crate::alloc::for_precision(cfg.precision);
    if args.checkpoint_activations == Some(train::ActivationCheckpointing::Balanced) {
        backend::run_checkpointed(kind, TrainJob(args, cfg))?
    } else {
        backend::run(kind, TrainJob(args, cfg))?
    }
}

// ---------------------------------------------------------------- eval

/// `eval`: evaluate a trained run (or the base model) on one or more data files.
#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// A `train` output directory (its `run.json` and newest checkpoint).
    #[arg(long)]
    pub(crate) run: Option<PathBuf>,
    /// Model, for `--base` (a run knows its own).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Evaluate the base model (rank 0) instead of a run.
    #[arg(long)]
    pub(crate) base: bool,
    /// Evaluation data files.
    #[arg(long = "data", required = true)]
    pub(crate) data: Vec<PathBuf>,
    /// Use only the first N examples of each file.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Backend.
    #[arg(long, default_value = "flex")]
    pub(crate) backend: String,
    /// Longest generated answer (default: what fits each file's task, see
    /// `infer::default_max_new_tokens`: 256 for math reasoning, 32 for QA). Answers cut at the
    /// limit are counted in every report.
    #[arg(long)]
    pub(crate) max_new_tokens: Option<usize>,
    /// Longest prompt + answer in tokens (default: the run's `max_len`, 256 for `--base`,
    /// widened to fit `--max-new-tokens` after a prompt of up to 256 tokens).
    #[arg(long)]
    pub(crate) max_len: Option<usize>,
    /// Prompts per batch.
    #[arg(long, default_value_t = 8)]
    pub(crate) eval_batch: usize,
    /// Storage type of the frozen base weights (f32, bf16, f16; default: the run's training
    /// precision, f32 for `--base`).
    #[arg(long)]
    pub(crate) precision: Option<flexi_burn::Precision>,
    /// Where to write `eval.json` (default: the run directory).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// No progress bar or report tables (callers that print their own).
    #[arg(skip)]
    pub(crate) quiet: bool,
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
    /// Storage type of the frozen weights during evaluation (absent: f32).
    #[serde(skip_serializing_if = "is_f32")]
    pub precision: flexi_burn::Precision,
}

fn is_f32(p: &flexi_burn::Precision) -> bool {
    *p == flexi_burn::Precision::F32
}

struct EvalJob(EvalArgs);

impl BackendJob for EvalJob {
    type Output = Result<EvalSummary>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<EvalSummary> {
        let a = self.0;
        // The directory `eval.json` goes to (the run's, by default) is held for the whole
        // evaluation: a run that is still training there is refused, not read half-written.
        // (A missing run directory is not created: loading it reports it.)
        let target = match (&a.out, &a.run) {
            (Some(out), _) => Some(out),
            (None, Some(run)) if run.is_dir() => Some(run),
            _ => None,
        };
        let _lock = target.map(|dir| RunLock::acquire(dir)).transpose()?;
        // Inference on the plain backend: the run's model, adapter and rank policy (router
        // included), or the base model at rank 0.
        let run: FlexiRun<B::InnerBackend> = match (&a.run, a.base) {
            // The base model read in the evaluation's precision (a run trained in bf16 and
            // evaluated in f32 gets the checkpoint's f32 weights, not widened bf16 ones).
            (Some(dir), false) => FlexiRun::load_in(dir, a.precision, &device)
                .with_context(|| format!("loading the run {}", dir.display()))?,
            (None, true) => {
                let model = a.model.as_deref().context("--base needs --model")?;
                FlexiRun::base(model, true, 256, &device)
                    .with_context(|| format!("loading {}", model.display()))?
            }
            _ => bail!("give either --run DIR or --base --model PATH"),
        };
        let precision = a.precision.unwrap_or_else(|| run.trained_precision());
        let run = run.with_precision(precision);
        let method = run.method();
        let mut reports = Vec::new();
        for path in &a.data {
            let examples = read_examples(path, a.limit)?;
            let name = examples[0].source.clone();
            let max_new_tokens = a
                .max_new_tokens
                .unwrap_or_else(|| infer::default_max_new_tokens(examples[0].task));
            let settings = EvalSettings {
                batch_size: a.eval_batch,
                max_new_tokens,
                max_len: a
                    .max_len
                    .unwrap_or_else(|| generation_len(run.max_len, max_new_tokens)),
                progress: !a.quiet,
            };
            let report = run
                .evaluate(&examples, &settings, &name)
                .with_context(|| format!("evaluating on {}", path.display()))?;
            if !a.quiet {
                print_report(&format!("{method} on {}", path.display()), &report);
            }
            reports.push(report);
        }
        finish_eval(&a, method, reports, precision)
    }
}

/// Combines the per-file reports (mean rank and activated parameters per input over all
/// inputs, average of the main metric over files) and writes `eval.json`.
fn finish_eval(
    a: &EvalArgs,
    method: String,
    reports: Vec<EvalReport>,
    precision: flexi_burn::Precision,
) -> Result<EvalSummary> {
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
        average: reports.iter().map(EvalReport::main_metric).sum::<f64>() / reports.len() as f64,
        reports,
        precision,
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

/// Room a generating command leaves for the prompt when it widens a run's `max_len`.
const PROMPT_ROOM: usize = 256;

/// The sequence length for generating `max_new_tokens` after a prompt: the configured length,
/// widened when it leaves less than [`PROMPT_ROOM`] tokens for the prompt.
fn generation_len(max_len: usize, max_new_tokens: usize) -> usize {
    max_len.max(max_new_tokens + PROMPT_ROOM)
}

fn print_report(title: &str, r: &EvalReport) {
    println!("\n{title}");
    for t in &r.tables {
        println!("{t}");
    }
    if r.max_new_tokens > 0 {
        println!(
            "truncated generations (no stop token within max_new_tokens = {}): {} of {}",
            r.max_new_tokens,
            r.truncated,
            r.predictions.len()
        );
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
            reference_run: None,
            score: "metric".into(),
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
            audio_feature: "encoder".into(),
            text_feature: "embedding".into(),
            holdout: 0.0,
            standardize: None,
            out,
        }
    }
}

impl RouterArgs {
    /// Pools `feature` for an audio router.
    pub fn with_audio_feature(mut self, feature: &str) -> Self {
        self.audio_feature = feature.to_string();
        self
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
            precision: None,
            resume_from_adapter: None,
            allow_upcast: false,
            checkpoint_activations: None,
            shards: None,
            parallel: ParallelArgs::default(),
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
            max_new_tokens: Some(40),
            max_len: None,
            eval_batch: 8,
            precision: None,
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
        self.max_new_tokens = Some(n);
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

// ---------------------------------------------------------------- export

/// `export`: write a trained run as a PEFT adapter.
#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// A `train` output directory.
    #[arg(long)]
    run: PathBuf,
    /// Output format: `peft` (a PEFT LoRA adapter at one rank) or `flexi` (a Flexi-LoRA run:
    /// the PEFT adapter at r_max plus its router and a `flexi_lora` block).
    #[arg(long, default_value = "peft")]
    format: String,
    /// Rank to export (default: LoRA's rank, DyLoRA's eval rank, r_max for DyLoRA+ / Flexi).
    #[arg(long)]
    rank: Option<usize>,
    /// Output directory (`adapter_config.json`, `adapter_model.safetensors`).
    #[arg(long)]
    out: PathBuf,
}

struct ExportJob(ExportArgs);

impl BackendJob for ExportJob {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let run: FlexiRun<B::InnerBackend> = FlexiRun::load(&a.run, &device)
            .with_context(|| format!("loading the run {}", a.run.display()))?;
        let e = match a.format.as_str() {
            "peft" => train::export::export_peft(&run, a.rank, &a.out),
            "flexi" if a.rank.is_none() => train::export::export_flexi(&run, &a.out),
            "flexi" => bail!("--format flexi exports the whole nested adapter (no --rank)"),
            other => bail!("unknown export format {other:?}: expected peft or flexi"),
        }
        .with_context(|| format!("exporting {} as {}", a.run.display(), a.format))?;
        println!(
            "PEFT LoRA adapter: r = {}, lora_alpha = {}, use_rslora = {}, {} layers -> {}",
            e.rank,
            e.lora_alpha,
            e.use_rslora,
            e.layers,
            a.out.display()
        );
        Ok(())
    }
}

/// Runs `export` (on the CPU: it only reads and writes tensors).
pub fn run_export(args: ExportArgs) -> Result<()> {
    backend::run(BackendKind::Flex, ExportJob(args))?
}

/// `merge`: a trained run as a full Hugging Face checkpoint with the adapter folded in.
#[derive(Args, Clone, Debug)]
pub struct MergeArgs {
    /// A `train` output directory whose base model is a Hugging Face directory.
    #[arg(long)]
    run: PathBuf,
    /// Rank to merge (default: LoRA's rank, DyLoRA's eval rank, r_max otherwise).
    #[arg(long)]
    rank: Option<usize>,
    /// Output directory (the base's files with merged weights).
    #[arg(long)]
    out: PathBuf,
}

struct MergeJob(MergeArgs);

impl BackendJob for MergeJob {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        // The base weights in full precision whatever the run trained in: merging into
        // bf16/f16-rounded copies would change the checkpoint it writes.
        let run: FlexiRun<B::InnerBackend> =
            FlexiRun::load_in(&a.run, Some(flexi_burn::Precision::F32), &device)
                .with_context(|| format!("loading the run {}", a.run.display()))?;
        let m = train::export::merge_hf(&run, a.rank, &a.out)
            .with_context(|| format!("merging {}", a.run.display()))?;
        println!(
            "merged at rank {}: {} projection weights replaced, {} tensors copied -> {}",
            m.rank,
            m.replaced,
            m.copied,
            a.out.display()
        );
        Ok(())
    }
}

/// Runs `merge` (on the CPU).
pub fn run_merge(args: MergeArgs) -> Result<()> {
    backend::run(BackendKind::Flex, MergeJob(args))?
}

/// `import`: a PEFT LoRA or AdaLoRA adapter onto a base model, as a run directory.
#[derive(Args, Clone, Debug)]
pub struct ImportArgs {
    /// The PEFT adapter directory (`adapter_config.json`, `adapter_model.safetensors`).
    #[arg(long)]
    adapter: PathBuf,
    /// The base model it adapts: a Hugging Face directory or `.gguf` file (Llama), or a
    /// Whisper directory (Hugging Face or CTranslate2).
    #[arg(long)]
    model: PathBuf,
    /// The run directory to write (must not hold a run yet).
    #[arg(long)]
    out: PathBuf,
    /// Do not apply the model's chat template to prompts.
    #[arg(long)]
    no_chat: bool,
    /// Longest prompt + answer in tokens for the run.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Accept a half-precision adapter on an f32 base (converted exactly).
    #[arg(long)]
    allow_upcast: bool,
}

struct ImportJob(ImportArgs);

impl BackendJob for ImportJob {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let spec = train::peft::ImportSpec {
            model: a.model.clone(),
            adapter: a.adapter.clone(),
            out: a.out.clone(),
            chat: !a.no_chat,
            max_len: a.max_len,
            allow_upcast: a.allow_upcast,
        };
        let i = train::peft::import_peft::<B>(&spec, device).with_context(|| {
            format!(
                "importing {} onto {}",
                a.adapter.display(),
                a.model.display()
            )
        })?;
        println!(
            "imported {} module(s) as a LoRA-{} run ({} adapted layer(s) it does not target left \
             at zero) -> {}",
            i.applied.modules,
            i.rank,
            i.applied.untouched,
            a.out.display()
        );
        Ok(())
    }
}

/// Runs `import` on the CPU.
pub fn run_import(args: ImportArgs) -> Result<()> {
    backend::run(BackendKind::Flex, ImportJob(args))?
}
