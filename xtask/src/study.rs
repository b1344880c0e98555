//! `cargo xtask study --config studies/math.toml`: one declarative comparison of methods over
//! seeds (model, data files and fixed random subsets, methods and their settings, seeds), run
//! as label -> router -> train -> eval for every method and seed, and summarised with mean +-
//! std over seeds and paired statistics (McNemar's exact test and a paired bootstrap interval
//! of the accuracy difference, per problem) for the comparisons the study names.
//!
//! **Resumable**: every step leaves its output in the study directory and is skipped when that
//! output exists (data subsets, labels, routers, runs, evaluations, `results/*.json`); a run
//! killed mid-training continues from its last checkpoint. The configuration is stored in the
//! directory (`study.json`) and a different one is refused, so a resumed study is the study
//! that was started. `cargo xtask report --study DIR` turns the results into a Markdown report
//! with plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use infer::stats::{McNemar, PairedDiff, mcnemar, mean_std, paired_bootstrap};
use serde::{Deserialize, Serialize};
use train::{Method, TrainConfig};

use crate::pipeline::{self, Common, EvalArgs, EvalSummary, LabelArgs, RouterArgs, TrainArgs};

/// `study` options.
#[derive(Args, Clone, Debug)]
pub struct StudyArgs {
    /// The study file (TOML), e.g. `studies/math.toml`.
    #[arg(long)]
    pub config: PathBuf,
    /// Study directory (default: the file's `out`, relative to the working directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the plan and what is already done, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only these of the study's seeds in this call (comma-separated), e.g. to run
    /// seeds side by side in two processes on the same study directory once its labels
    /// and base evaluation exist. The summary covers every finished run either way.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Run only these of the study's methods in this call, in this order (comma-separated
    /// names), e.g. the comparison that matters first when time is short.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
}

/// One data file of a study, and how many of its examples to use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The file (any format `datasets` reads), relative to the study file.
    pub path: PathBuf,
    /// A fixed random subset of this many examples (all when absent).
    #[serde(default)]
    pub n: Option<usize>,
}

/// One method of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    /// Name in tables and directories (`lora-8`, `flexi-2-8`, `base`).
    pub name: String,
    /// The method; absent: the base model (rank 0, not trained).
    #[serde(default)]
    pub method: Option<Method>,
    /// `key=value` overrides of the study's training settings for this method.
    #[serde(default)]
    pub set: Vec<String>,
}

/// The router every Flexi-LoRA method of a study trains (one per seed and class -> rank map).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSettings {
    /// Hidden width (0: linear).
    pub hidden: usize,
    /// Epochs.
    pub epochs: usize,
    /// Logit noise std in training.
    pub noise_std: f64,
    /// Longest prompt the router reads, in tokens.
    pub max_len: usize,
    /// What it pools: `embedding` (the paper's), `middle`, `last` or `layer:L` (the frozen
    /// base model's hidden states; see `cargo xtask router --text-feature`).
    pub feature: String,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            hidden: 64,
            epochs: 50,
            noise_std: 1.0,
            max_len: 256,
            feature: "embedding".into(),
        }
    }
}

/// A study file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Name (default directory `runs/study-<name>`).
    pub name: String,
    /// Base model: a path (relative to the study file) or `smollm2` (fetched from PyPI).
    pub model: String,
    /// Default study directory, relative to the working directory.
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// Backend.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Training seeds: every method is trained once per seed.
    pub seeds: Vec<u64>,
    /// Seed of the fixed data subsets and of the labels' balanced split (the same for every
    /// training seed).
    #[serde(default)]
    pub subset_seed: u64,
    /// Training data.
    pub train: DataSpec,
    /// Test sets.
    pub test: Vec<DataSpec>,
    /// Apply the model's chat template.
    #[serde(default = "yes")]
    pub chat: bool,
    /// Longest prompt + answer in training.
    pub max_len: usize,
    /// Longest generated answer (labels and evaluation); default: what fits the task.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Prompts per generation batch.
    #[serde(default = "default_eval_batch")]
    pub eval_batch: usize,
    /// What scores a training example for the router's labels: `metric` (default, SPEC 2.2:
    /// the base model's generation scored with the task metric) or `answer-nll` (ours: the
    /// base model's cross-entropy of the reference answer, split at the median), as
    /// `label --score`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_score: Option<String>,
    /// Training settings shared by every method (a `TrainConfig` table; the method and seed
    /// come from the method and the study's seeds).
    #[serde(default)]
    pub training: serde_json::Value,
    /// The router of Flexi-LoRA methods.
    #[serde(default)]
    pub router: RouterSettings,
    /// Methods, in table order.
    pub methods: Vec<MethodSpec>,
    /// Paired comparisons `[a, b]` by method name (e.g. `["flexi-2-8", "lora-8"]`).
    #[serde(default)]
    pub compare: Vec<[String; 2]>,
    /// Bootstrap resamples of the paired comparisons.
    #[serde(default = "default_resamples")]
    pub bootstrap: usize,
}

fn default_backend() -> String {
    "flex".into()
}
fn yes() -> bool {
    true
}
fn default_eval_batch() -> usize {
    8
}
fn default_resamples() -> usize {
    2000
}

impl StudyConfig {
    /// Reads a study file (TOML); paths in it are made relative to its directory.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut c: StudyConfig = toml::from_str(&text)
            .with_context(|| format!("parsing the study {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut c.train.path);
        c.test.iter_mut().for_each(|t| fix(&mut t.path));
        if c.model != "smollm2" && Path::new(&c.model).is_relative() {
            c.model = dir.join(&c.model).display().to_string();
        }
        c.validate()
            .with_context(|| format!("in the study {}", path.display()))?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        if let Some(s) = &self.label_score
            && s != "metric"
            && s != "answer-nll"
        {
            bail!("label_score: {s:?}: expected metric or answer-nll");
        }
        if self.seeds.is_empty() {
            bail!("seeds: give at least one");
        }
        if self.methods.is_empty() {
            bail!("methods: give at least one");
        }
        let mut names = std::collections::BTreeSet::new();
        for m in &self.methods {
            if !names.insert(m.name.as_str()) {
                bail!("methods: the name {:?} appears twice", m.name);
            }
            if m.name.is_empty() || m.name.contains(['/', '\\']) {
                bail!("methods: {:?} is not a directory name", m.name);
            }
            self.train_config(m, self.seeds[0])
                .with_context(|| format!("methods.{}", m.name))?;
        }
        for [a, b] in &self.compare {
            for n in [a, b] {
                if !names.contains(n.as_str()) {
                    bail!("compare: {n:?} is not one of the methods");
                }
            }
        }
        Ok(())
    }

    /// The training configuration of `m` at `seed`.
    pub fn train_config(&self, m: &MethodSpec, seed: u64) -> Result<TrainConfig> {
        let base = if self.training.is_null() {
            serde_json::json!({})
        } else {
            self.training.clone()
        };
        let mut cfg = TrainConfig::from_value(base, "training")?.with_overrides(&m.set)?;
        if let Some(method) = &m.method {
            cfg.method = method.clone();
        }
        cfg.seed = seed;
        cfg.max_len = self.max_len;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// What one trained (or base) method scored at one seed: `results/<method>-s<seed>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The study's method name.
    pub method: String,
    /// The method's own label (`lora-8`, `flexi-2-8`, `base`).
    pub label: String,
    /// The training seed.
    pub seed: u64,
    /// Main metric per test set (accuracy %, F1 %), by set name.
    pub sets: BTreeMap<String, f64>,
    /// Average over the sets.
    pub average: f64,
    /// Mean rank per input.
    pub mean_rank: f64,
    /// Activated LoRA parameters per input.
    pub activated_params: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Generations cut at the limit.
    pub truncated: usize,
    /// Per-problem score (`set/id` -> 0..1), for paired statistics.
    pub problems: BTreeMap<String, f64>,
    /// Training loss per optimizer step.
    pub loss: Vec<(usize, f64)>,
    /// Wall time and speed: measured, so not reproducible.
    pub timing: Timing,
}

/// The timing part of a [`RunResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Training wall time (s).
    pub train_seconds: f64,
    /// Median training tokens per second over the steps (0: not trained).
    pub tokens_per_s: f64,
}

/// One method's row of the summary: mean and std over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// Name.
    pub method: String,
    /// Seeds done.
    pub seeds: usize,
    /// Per set: (mean, std) of the main metric.
    pub sets: BTreeMap<String, (f64, f64)>,
    /// (mean, std) of the average.
    pub average: (f64, f64),
    /// Mean rank (mean over seeds).
    pub mean_rank: f64,
    /// Activated LoRA parameters per input (mean over seeds).
    pub activated_params: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Generations cut at the limit (mean over seeds).
    pub truncated: f64,
    /// Training time (s) and tokens/s, mean over seeds.
    pub train_seconds: f64,
    /// Tokens per second, mean over seeds.
    pub tokens_per_s: f64,
}

/// A paired comparison of two methods on the same problems.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// First method.
    pub a: String,
    /// Second method.
    pub b: String,
    /// McNemar per seed (right = score >= 0.5).
    pub per_seed: Vec<(u64, McNemar)>,
    /// McNemar over every (seed, problem) pair.
    pub pooled: McNemar,
    /// Difference of accuracy in points (a - b), per problem averaged over seeds, with a
    /// paired bootstrap 95 % interval over problems.
    pub diff: PairedDiff,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The study's name.
    pub name: String,
    /// Test sets and their sizes.
    pub sets: BTreeMap<String, usize>,
    /// One row per method, in the study's order.
    pub methods: Vec<MethodSummary>,
    /// The paired comparisons.
    pub comparisons: Vec<Comparison>,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value)?;
    train::checkpoint::write_atomic(path, &json)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a JSON file of the study directory.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The study's directories and files.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    fn train(&self) -> PathBuf {
        self.data().join("train.jsonl")
    }
    fn labels(&self) -> PathBuf {
        self.root.join("labels")
    }
    fn seed(&self, seed: u64) -> PathBuf {
        self.root.join(format!("seed-{seed}"))
    }
    fn router(&self, seed: u64, ranks: &str) -> PathBuf {
        self.seed(seed)
            .join(format!("router-{}", ranks.replace(',', "-")))
    }
    fn run(&self, seed: u64, method: &str) -> PathBuf {
        self.seed(seed).join(method)
    }
    fn result(&self, seed: u64, method: &str) -> PathBuf {
        self.root
            .join("results")
            .join(format!("{method}-s{seed}.json"))
    }
}

/// Writes the fixed subsets once; returns the test files in order.
fn write_subsets(c: &StudyConfig, l: &Layout) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(l.data())
        .with_context(|| format!("creating {}", l.data().display()))?;
    let subset = |spec: &DataSpec, out: &Path, salt: u64| -> Result<()> {
        if out.exists() {
            return Ok(());
        }
        let all = train::workflow::read_examples(&spec.path, None)?;
        let picked = match spec.n {
            Some(n) => datasets::subset::sample(&all, n, c.subset_seed ^ salt),
            None => all.clone(),
        };
        datasets::subset::write_examples(out, &picked)?;
        println!(
            "study: {} of {} examples of {} -> {}",
            picked.len(),
            all.len(),
            spec.path.display(),
            out.display()
        );
        Ok(())
    };
    subset(&c.train, &l.train(), 0)?;
    let mut tests = Vec::new();
    for (i, t) in c.test.iter().enumerate() {
        let stem = t
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = l.data().join(format!("test-{i}-{stem}.jsonl"));
        subset(t, &out, 1 + i as u64)?;
        tests.push(out);
    }
    Ok(tests)
}

fn common(c: &StudyConfig, model: &Path) -> Common {
    Common {
        model: model.to_path_buf(),
        backend: c.backend.clone(),
        no_chat: !c.chat,
        limit: None,
        max_len: c.max_len,
        max_new_tokens: c.max_new_tokens,
        eval_batch: c.eval_batch,
    }
}

/// The loss curve and the median tokens/s of a run's `metrics.jsonl`.
fn curve(run: &Path) -> (Vec<(usize, f64)>, f64) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let mut loss = Vec::new();
    let mut speed = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(s), Some(l)) = (v["step"].as_u64(), v["loss"].as_f64()) {
            loss.push((s as usize, l));
        }
        if let Some(t) = v["tokens_per_s"].as_f64() {
            speed.push(t);
        }
    }
    speed.sort_by(f64::total_cmp);
    // 0 when no step was logged (JSON has no NaN).
    let median = speed.get(speed.len() / 2).copied().unwrap_or(0.0);
    (loss, median)
}

fn result_of(
    m: &MethodSpec,
    seed: u64,
    eval: &EvalSummary,
    trainable: usize,
    run: Option<(&Path, f64)>,
) -> RunResult {
    let mut sets = BTreeMap::new();
    let mut problems = BTreeMap::new();
    let mut truncated = 0;
    for r in &eval.reports {
        let name = r
            .predictions
            .first()
            .map(|p| p.source.clone())
            .unwrap_or_default();
        sets.insert(name.clone(), r.main_metric());
        truncated += r.truncated;
        for p in &r.predictions {
            problems.insert(format!("{name}/{}", p.id), p.score);
        }
    }
    let (loss, tokens_per_s) = run.map_or((Vec::new(), 0.0), |(dir, _)| curve(dir));
    RunResult {
        method: m.name.clone(),
        label: eval.method.clone(),
        seed,
        sets,
        average: eval.average,
        mean_rank: eval.mean_rank,
        activated_params: eval.activated_params,
        trainable_params: trainable,
        truncated,
        problems,
        loss,
        timing: Timing {
            train_seconds: run.map_or(0.0, |(_, s)| s),
            tokens_per_s,
        },
    }
}

/// Runs (or resumes) the study.
pub fn run(a: StudyArgs) -> Result<()> {
    let c = StudyConfig::read(&a.config)?;
    let root = a
        .out
        .clone()
        .or(c.out.clone())
        .unwrap_or_else(|| PathBuf::from(format!("runs/study-{}", c.name)));
    if let Some(s) = a.seeds.iter().find(|s| !c.seeds.contains(s)) {
        bail!(
            "--seeds {s}: {} has seeds {:?}; --seeds picks among them",
            a.config.display(),
            c.seeds
        );
    }
    if let Some(m) = a
        .methods
        .iter()
        .find(|m| !c.methods.iter().any(|x| &x.name == *m))
    {
        let names: Vec<&str> = c.methods.iter().map(|m| m.name.as_str()).collect();
        bail!(
            "--methods {m}: {} has methods {names:?}; --methods picks among them",
            a.config.display()
        );
    }
    run_study(&c, &root, a.dry_run, &a.seeds, &a.methods)
}

/// Runs (or resumes) study `c` in `root`: every seed, or only those in `only` when it is
/// not empty; every method, or only those named in `methods` (in that order) when it is not
/// empty.
pub fn run_study(
    c: &StudyConfig,
    root: &Path,
    dry_run: bool,
    only: &[u64],
    methods: &[String],
) -> Result<()> {
    let l = Layout {
        root: root.to_path_buf(),
    };
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let stored = root.join("study.json");
    if stored.exists() {
        let before: StudyConfig = read_json(&stored)?;
        if &before != c {
            bail!(
                "{} holds a study started with another configuration ({}); use another --out \
                 or the same study file",
                root.display(),
                stored.display()
            );
        }
    } else if !dry_run {
        write_json(&stored, c)?;
    }
    let total = c.methods.len() * c.seeds.len();
    let done = c
        .seeds
        .iter()
        .flat_map(|s| {
            c.methods
                .iter()
                .map(|m| l.result(*s, &m.name))
                .collect::<Vec<_>>()
        })
        .filter(|p| p.exists())
        .count();
    println!(
        "study {}: {} methods x {} seeds, {done} of {total} runs done -> {}",
        c.name,
        c.methods.len(),
        c.seeds.len(),
        root.display()
    );
    if dry_run {
        return Ok(());
    }
    let model = match c.model.as_str() {
        "smollm2" => crate::models_cmd::smollm2()?,
        m => PathBuf::from(m),
    };
    let tests = write_subsets(c, &l)?;
    std::fs::create_dir_all(root.join("results"))?;
    // Stop after this many runs finished in this call (tests of resuming).
    let stop_after: Option<usize> = std::env::var("FLEXI_STUDY_STOP_AFTER")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut finished_here = 0usize;
    let needs_router = c
        .methods
        .iter()
        .any(|m| matches!(m.method, Some(Method::Flexi { .. })));
    let labels = l.labels();
    if needs_router && !labels.join("router_train.jsonl").exists() {
        let mut args = LabelArgs::new(common(c, &model), l.train(), labels.clone(), c.subset_seed);
        args.common.eval_batch = c.eval_batch;
        if let Some(score) = &c.label_score {
            args.score = score.clone();
        }
        pipeline::run_label(args).context("labelling the training set")?;
    }
    for &seed in c
        .seeds
        .iter()
        .filter(|s| only.is_empty() || only.contains(s))
    {
        let chosen: Vec<&MethodSpec> = if methods.is_empty() {
            c.methods.iter().collect()
        } else {
            methods
                .iter()
                .filter_map(|n| c.methods.iter().find(|m| &m.name == n))
                .collect()
        };
        for m in chosen {
            let result = l.result(seed, &m.name);
            if result.exists() {
                continue;
            }
            let eval_args = |run: Option<&Path>, out: &Path| EvalArgs {
                run: run.map(Path::to_path_buf),
                model: run.is_none().then(|| model.clone()),
                base: run.is_none(),
                data: tests.clone(),
                limit: None,
                backend: c.backend.clone(),
                max_new_tokens: c.max_new_tokens,
                max_len: None,
                eval_batch: c.eval_batch,
                precision: None,
                out: Some(out.to_path_buf()),
                quiet: false,
            };
            let r = match &m.method {
                None => {
                    // The base model is greedy and seed-free: evaluated once, its result
                    // reused for every seed.
                    let earlier = c
                        .seeds
                        .iter()
                        .map(|s| l.result(*s, &m.name))
                        .find(|p| p.exists());
                    match earlier {
                        Some(p) => RunResult {
                            seed,
                            ..read_json::<RunResult>(&p)?
                        },
                        None => {
                            println!("study: evaluating the base model");
                            let eval = pipeline::eval(eval_args(None, &root.join("base")))?;
                            result_of(m, seed, &eval, 0, None)
                        }
                    }
                }
                Some(method) => {
                    let cfg = c.train_config(m, seed)?;
                    let run = l.run(seed, &m.name);
                    let router = match method {
                        Method::Flexi { class_ranks } => {
                            let dir = l.router(seed, class_ranks);
                            if !dir.join("router.json").exists() {
                                let mut args = RouterArgs::new(
                                    common(c, &model),
                                    l.train(),
                                    labels.join("router_train.jsonl"),
                                    class_ranks.clone(),
                                    dir.clone(),
                                    seed,
                                );
                                args.hidden = c.router.hidden;
                                args.epochs = c.router.epochs;
                                args.noise_std = c.router.noise_std;
                                args.common.max_len = c.router.max_len;
                                args.text_feature = c.router.feature.clone();
                                pipeline::run_router(args)
                                    .with_context(|| format!("router {class_ranks} seed {seed}"))?;
                            }
                            Some(dir)
                        }
                        _ => None,
                    };
                    let info = match train::RunInfo::read(&run) {
                        Ok(info) => info,
                        Err(_) => {
                            println!("study: training {} (seed {seed})", m.name);
                            let mut args =
                                TrainArgs::new(common(c, &model), l.train(), router, run.clone());
                            // A run killed mid-training continues from its last checkpoint.
                            args.resume = run.join("checkpoints").join("latest").exists();
                            pipeline::train_with(args, cfg)
                                .with_context(|| format!("training {} seed {seed}", m.name))?
                        }
                    };
                    println!("study: evaluating {} (seed {seed})", m.name);
                    let eval = pipeline::eval(eval_args(Some(&run), &run))?;
                    result_of(
                        m,
                        seed,
                        &eval,
                        info.trainable_params,
                        Some((&run, info.seconds)),
                    )
                }
            };
            write_json(&result, &r)?;
            println!(
                "study: {} seed {seed}: average {:.2}, mean rank {:.2}",
                m.name, r.average, r.mean_rank
            );
            finished_here += 1;
            if stop_after.is_some_and(|n| finished_here >= n) {
                bail!("stopped after {finished_here} run(s) (FLEXI_STUDY_STOP_AFTER)");
            }
        }
    }
    let summary = summarize(c, root)?;
    write_json(&root.join("summary.json"), &summary)?;
    let md = summary_markdown(&summary);
    std::fs::write(root.join("summary.md"), &md)
        .with_context(|| format!("writing {}", root.join("summary.md").display()))?;
    println!("\n{md}");
    Ok(())
}

/// Reads every `results/*.json` of the study (in the study's order).
pub fn results(c: &StudyConfig, root: &Path) -> Result<Vec<RunResult>> {
    let l = Layout {
        root: root.to_path_buf(),
    };
    let mut out = Vec::new();
    for m in &c.methods {
        for &s in &c.seeds {
            let p = l.result(s, &m.name);
            if p.exists() {
                out.push(read_json(&p)?);
            }
        }
    }
    Ok(out)
}

/// Mean +- std over seeds per method and the paired comparisons.
pub fn summarize(c: &StudyConfig, root: &Path) -> Result<Summary> {
    let all = results(c, root)?;
    let mut sets = BTreeMap::new();
    if let Some(r) = all.first() {
        for name in r.sets.keys() {
            let n = r
                .problems
                .keys()
                .filter(|k| k.starts_with(&format!("{name}/")))
                .count();
            sets.insert(name.clone(), n);
        }
    }
    let mut methods = Vec::new();
    for m in &c.methods {
        let rs: Vec<&RunResult> = all.iter().filter(|r| r.method == m.name).collect();
        if rs.is_empty() {
            continue;
        }
        let avg =
            |f: &dyn Fn(&RunResult) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64;
        let per_set = sets
            .keys()
            .map(|s| {
                let xs: Vec<f64> = rs.iter().filter_map(|r| r.sets.get(s).copied()).collect();
                (s.clone(), mean_std(&xs))
            })
            .collect();
        methods.push(MethodSummary {
            method: m.name.clone(),
            seeds: rs.len(),
            sets: per_set,
            average: mean_std(&rs.iter().map(|r| r.average).collect::<Vec<_>>()),
            mean_rank: avg(&|r| r.mean_rank),
            activated_params: avg(&|r| r.activated_params),
            trainable_params: rs[0].trainable_params,
            truncated: avg(&|r| r.truncated as f64),
            train_seconds: avg(&|r| r.timing.train_seconds),
            tokens_per_s: avg(&|r| r.timing.tokens_per_s),
        });
    }
    let mut comparisons = Vec::new();
    for [a, b] in &c.compare {
        let by_seed = |name: &str| -> BTreeMap<u64, &RunResult> {
            all.iter()
                .filter(|r| r.method == name)
                .map(|r| (r.seed, r))
                .collect()
        };
        let (ra, rb) = (by_seed(a), by_seed(b));
        let seeds: Vec<u64> = ra.keys().filter(|s| rb.contains_key(s)).copied().collect();
        if seeds.is_empty() {
            continue;
        }
        let problems: Vec<&String> = ra[&seeds[0]].problems.keys().collect();
        let right = |r: &RunResult| -> Vec<bool> {
            problems
                .iter()
                .map(|p| r.problems.get(*p).copied().unwrap_or(0.0) >= 0.5)
                .collect()
        };
        let mut per_seed = Vec::new();
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        for s in &seeds {
            let (xa, xb) = (right(ra[s]), right(rb[s]));
            per_seed.push((*s, mcnemar(&xa, &xb)));
            pa.extend(xa);
            pb.extend(xb);
        }
        // Per problem: the score averaged over seeds, in points.
        let mean_score = |rs: &BTreeMap<u64, &RunResult>| -> Vec<f64> {
            problems
                .iter()
                .map(|p| {
                    100.0
                        * seeds
                            .iter()
                            .map(|s| rs[s].problems.get(*p).copied().unwrap_or(0.0))
                            .sum::<f64>()
                        / seeds.len() as f64
                })
                .collect()
        };
        comparisons.push(Comparison {
            a: a.clone(),
            b: b.clone(),
            per_seed,
            pooled: mcnemar(&pa, &pb),
            diff: paired_bootstrap(
                &mean_score(&ra),
                &mean_score(&rb),
                c.bootstrap,
                0.95,
                c.subset_seed,
            ),
        });
    }
    Ok(Summary {
        name: c.name.clone(),
        sets,
        methods,
        comparisons,
    })
}

/// The summary as Markdown tables.
pub fn summary_markdown(s: &Summary) -> String {
    let mut md = format!("## Study `{}`\n\n", s.name);
    let sets: Vec<&String> = s.sets.keys().collect();
    md += "| method | seeds |";
    for set in &sets {
        md += &format!(" {set} (n={}) |", s.sets[*set]);
    }
    md += " average | mean rank | activated LoRA params / input | trainable params | truncated | train s | tok/s |\n|---|---:|";
    md += &"---:|".repeat(sets.len() + 7);
    md += "\n";
    for m in &s.methods {
        md += &format!("| {} | {} |", m.method, m.seeds);
        for set in &sets {
            let (mean, std) = m.sets.get(*set).copied().unwrap_or((f64::NAN, f64::NAN));
            md += &format!(" {mean:.2} ± {std:.2} |");
        }
        md += &format!(
            " {:.2} ± {:.2} | {:.2} | {:.0} | {} | {:.1} | {:.0} | {:.0} |\n",
            m.average.0,
            m.average.1,
            m.mean_rank,
            m.activated_params,
            m.trainable_params,
            m.truncated,
            m.train_seconds,
            m.tokens_per_s
        );
    }
    if !s.comparisons.is_empty() {
        md += "\n| comparison | accuracy difference (points, 95 % bootstrap CI) | only A right / only B right (pooled) | McNemar p (pooled) | McNemar p per seed |\n|---|---:|---:|---:|---|\n";
        for c in &s.comparisons {
            let per: Vec<String> = c
                .per_seed
                .iter()
                .map(|(seed, t)| format!("s{seed}: {:.3}", t.p_value))
                .collect();
            md += &format!(
                "| {} vs {} | {:+.2} [{:+.2}, {:+.2}] | {} / {} | {:.3} | {} |\n",
                c.a,
                c.b,
                c.diff.diff,
                c.diff.lo,
                c.diff.hi,
                c.pooled.only_a,
                c.pooled.only_b,
                c.pooled.p_value,
                per.join(", ")
            );
        }
    }
    md
}
