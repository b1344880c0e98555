//! The Flexi-LoRA workflow (SPEC 2.2) as library calls, for any Burn application:
//!
//! ```text
//! label   base model scores every training example -> easy/hard labels, a balanced set
//! router  router inputs of the labelled examples -> a trained, saved router
//! fit     fine-tune with any method (Flexi-LoRA: ranks from the router) -> a run directory
//! ```
//!
//! and then [`crate::run::FlexiRun::load`] + `evaluate` / `generate` / `transcribe` in any
//! other program. Text (a Llama over prompts) and speech (a Whisper over utterances) take the
//! same steps: [`BaseModel`] is either, and the router reads the matching
//! [`infer::router::RouterInput`]. `cargo xtask label | router | train | eval` are thin command
//! lines over these functions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use datasets::batch::{PadSide, collate};
use datasets::labels::{
    LabelRule, LabeledSample, balanced_split, count, label_scores, write_jsonl,
};
use datasets::{Example, ReadOptions, read_all};
use flexi_burn::ClassRankMap;
use infer::router::{
    AudioFeature, AudioInput, RouterInput, RouterMeta, RouterTraining, TextInput, TrainedRouter,
    save_router,
};
use infer::speech::load_utterances;
use infer::{
    EvalReport, EvalSettings, LmText, RankPolicy, check_unique_ids, evaluate, evaluate_speech,
};
use models::llama::{AdapterConfig, Llama};
use models::whisper::{Whisper, WhisperAdapter, WhisperTokenizer};

use crate::asr::{AsrBatch, Seq2Seq, load_whisper_for_training, transcribe_prompt};
use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::lm::{CausalLm, LmBatch, load_for_training};
use crate::peft::init_from_adapter;
use crate::router::{accuracy, stratified_split, train_router};
use crate::run::RunInfo;
use crate::trainer::{TrainSummary, Trainer};

/// Reads a data file (format detected), keeping the first `limit` examples; ids must be
/// unique and the file non-empty.
pub fn read_examples(path: &Path, limit: Option<usize>) -> Result<Vec<Example>> {
    // The reader's own error names the file (and line): a missing or malformed file is not
    // reported as an empty training set.
    let data = read_all(path, &ReadOptions::default()).map_err(infer::InferError::from)?;
    let mut ex = data.examples;
    if let Some(n) = limit {
        ex.truncate(n);
    }
    if ex.is_empty() {
        return Err(TrainError::EmptyData(format!(
            "{}: no examples",
            path.display()
        )));
    }
    check_unique_ids(&ex, &path.display().to_string())?;
    Ok(ex)
}

/// A base Llama with its text side (tokenizer, prompts), loaded once for labelling and
/// routing.
pub struct TextModel<B: Backend> {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The model, without adapters.
    pub model: Llama<B>,
    /// Its tokenizer and prompts.
    pub text: LmText,
}

impl<B: Backend> TextModel<B> {
    /// Loads a HF directory or `.gguf` file; `chat` applies the model's chat template.
    pub fn load(path: &Path, chat: bool, device: &B::Device) -> Result<Self> {
        let model = models::auto::load_llama_any::<B>(path, &AdapterConfig::none(), device)
            .map_err(|e| TrainError::Model(format!("{}: {e}", path.display())))?;
        let text = LmText::load(path, chat)?;
        text.check_vocab(model.config.vocab_size)?;
        Ok(Self {
            path: path.to_path_buf(),
            model,
            text,
        })
    }

    /// The input definition of a router over this model with prompts cut to `max_len`.
    pub fn router_input(&self, max_len: usize) -> RouterInput {
        RouterInput::Text(TextInput::new(
            self.path.display().to_string(),
            &self.model,
            &self.text,
            max_len,
        ))
    }
}

/// A base Whisper with its tokenizer, loaded once for labelling and routing.
pub struct SpeechModel<B: Backend> {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The model, without adapters.
    pub model: Whisper<B>,
    /// Its tokenizer.
    pub tokenizer: WhisperTokenizer,
}

impl<B: Backend> SpeechModel<B> {
    /// Loads a Whisper directory (Hugging Face or CTranslate2).
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let model = models::ct2::load_whisper_any::<B>(path, &WhisperAdapter::none(), device)
            .map_err(|e| TrainError::Model(format!("{}: {e}", path.display())))?;
        let tokenizer = WhisperTokenizer::from_dir(path)
            .map_err(|e| TrainError::Model(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            model,
            tokenizer,
        })
    }

    /// The input definition of a router over `feature` of this model.
    pub fn router_input(&self, feature: AudioFeature) -> RouterInput {
        RouterInput::Audio(AudioInput::new(
            self.path.display().to_string(),
            &self.model,
            feature,
        ))
    }
}

/// A base model of either kind: what `label` scores and the router reads.
pub enum BaseModel<B: Backend> {
    /// A Llama over prompts.
    Text(Box<TextModel<B>>),
    /// A Whisper over utterances.
    Speech(Box<SpeechModel<B>>),
}

impl<B: Backend> BaseModel<B> {
    /// Loads a Whisper directory (detected by its files) or a Llama (HF directory or `.gguf`
    /// file; `chat` applies its chat template).
    pub fn load(path: &Path, chat: bool, device: &B::Device) -> Result<Self> {
        Ok(if models::auto::is_whisper(path) {
            BaseModel::Speech(Box::new(SpeechModel::load(path, device)?))
        } else {
            BaseModel::Text(Box::new(TextModel::load(path, chat, device)?))
        })
    }

    /// The text model, if this is one.
    pub fn as_text(&self) -> Option<&TextModel<B>> {
        match self {
            BaseModel::Text(t) => Some(t.as_ref()),
            BaseModel::Speech(_) => None,
        }
    }

    /// The speech model, if this is one.
    pub fn as_speech(&self) -> Option<&SpeechModel<B>> {
        match self {
            BaseModel::Speech(s) => Some(s.as_ref()),
            BaseModel::Text(_) => None,
        }
    }

    /// The base model (rank 0) on every example: generated answers or transcripts, scored.
    pub fn evaluate(
        &self,
        examples: &[Example],
        settings: &EvalSettings,
        title: &str,
    ) -> Result<EvalReport> {
        Ok(match self {
            BaseModel::Text(t) => evaluate(
                &t.model,
                &t.text,
                examples,
                &RankPolicy::Base,
                settings,
                title,
            )?,
            BaseModel::Speech(s) => evaluate_speech(
                &s.model,
                &s.tokenizer,
                examples,
                &RankPolicy::Base,
                settings.batch_size,
                title,
            )?,
        })
    }

    /// The input definition of a router over this model as `spec` asks.
    pub fn router_input(&self, spec: &RouterSpec) -> RouterInput {
        match self {
            BaseModel::Text(t) => match t.router_input(spec.max_len) {
                RouterInput::Text(input) => RouterInput::Text(input.with_layer(spec.text_layer)),
                other => other,
            },
            BaseModel::Speech(s) => s.router_input(spec.audio_feature),
        }
    }

    /// The router's input vector of every example under `input` (which must be of this
    /// model's kind).
    pub fn router_features(
        &self,
        input: &RouterInput,
        examples: &[&Example],
        dir: &Path,
    ) -> Result<Vec<Vec<f32>>> {
        Ok(match self {
            BaseModel::Text(t) => input.text(dir)?.features(&t.model, &t.text, examples)?,
            BaseModel::Speech(s) => input
                .audio(dir)?
                .features(&s.model, &load_utterances(examples)?)?,
        })
    }
}

impl<B: Backend> From<TextModel<B>> for BaseModel<B> {
    fn from(t: TextModel<B>) -> Self {
        BaseModel::Text(Box::new(t))
    }
}

impl<B: Backend> From<SpeechModel<B>> for BaseModel<B> {
    fn from(s: SpeechModel<B>) -> Self {
        BaseModel::Speech(Box::new(s))
    }
}

// ------------------------------------------------------------------------------- label

/// What [`label`] produces.
#[derive(Debug)]
pub struct Labels {
    /// The base model's evaluation of the training examples.
    pub report: EvalReport,
    /// Every example's score and label.
    pub labels: Vec<LabeledSample>,
    /// The balanced easy/hard subset the router trains on.
    pub balanced: Vec<LabeledSample>,
    /// The rule used (its threshold: the given one, or the task's default).
    pub rule: LabelRule,
}

impl Labels {
    /// Writes `labels.jsonl`, `router_train.jsonl` and `base_eval.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        // Each file is replaced whole or not at all (a full disk keeps the previous one).
        let data = |e: datasets::DataError| TrainError::Infer(e.into());
        write_jsonl(dir.join("labels.jsonl"), &self.labels).map_err(data)?;
        write_jsonl(dir.join("router_train.jsonl"), &self.balanced).map_err(data)?;
        let json = serde_json::to_vec_pretty(&self.report)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        crate::checkpoint::write_atomic(&dir.join("base_eval.json"), &json)
    }

    /// Easy and hard counts of all labels.
    pub fn counts(&self) -> datasets::labels::LabelCounts {
        count(&self.labels)
    }
}

/// Scores the base model on every example and labels each easy or hard (QA: F1 >= threshold;
/// math: correct; speech: WER <= threshold, by default the median WER: see
/// [`LabelRule::for_task`]), then draws a balanced subset with `seed`.
pub fn label<B: Backend>(
    base: &BaseModel<B>,
    examples: &[Example],
    settings: &EvalSettings,
    threshold: Option<f64>,
    seed: u64,
) -> Result<Labels> {
    if examples.is_empty() {
        return Err(TrainError::EmptyData("no example to label".into()));
    }
    let report = base.evaluate(examples, settings, "base")?;
    labels_from_report(report, examples, threshold, seed)
}

/// Labels from any model's evaluation of `examples` (SPEC 2.2: the base model, as [`label`]
/// does, or a reference adapter: a trained run's [`crate::FlexiRun::evaluate`] report), with
/// the task's rule and a balanced subset drawn with `seed`.
pub fn labels_from_report(
    report: EvalReport,
    examples: &[Example],
    threshold: Option<f64>,
    seed: u64,
) -> Result<Labels> {
    if examples.is_empty() {
        return Err(TrainError::EmptyData("no example to label".into()));
    }
    let scores: Vec<f64> = report.predictions.iter().map(|p| p.score).collect();
    let rule = LabelRule::for_task(examples[0].task, threshold, &scores);
    let data = |e: datasets::DataError| TrainError::EmptyData(e.to_string());
    let labels = label_scores(
        report.predictions.iter().map(|p| (p.id.clone(), p.score)),
        rule,
    )
    .map_err(data)?;
    let balanced = balanced_split(&labels, seed).map_err(data)?;
    Ok(Labels {
        report,
        labels,
        balanced,
        rule,
    })
}

/// Each example's mean cross-entropy (nats per answer token) under `base`, teacher-forced on
/// the training prompt and reference answer exactly as training encodes them (`max_len`,
/// the chat template): the loss training would start from, per example. A difficulty score
/// that does not need the model to solve the task **(ours)**: where the base model is at the
/// floor of the task metric (SmolLM2-135M solves about 1 % of GSM8K), "correct = easy" leaves
/// one class nearly empty, while the answer's likelihood still orders the examples.
/// Examples run `batch` at a time, left-padded; a row's value does not depend on its batch.
pub fn answer_nll<B: Backend>(
    base: &TextModel<B>,
    examples: &[Example],
    max_len: usize,
    batch: usize,
) -> Result<Vec<f64>> {
    let text = &base.text;
    let mut encoded = Vec::with_capacity(examples.len());
    for ex in examples {
        encoded.push(text.encode_train(ex, max_len)?);
    }
    let model = |e: models::llama::LlamaError| TrainError::Model(e.to_string());
    let mut out = Vec::with_capacity(examples.len());
    for (chunk, exs) in encoded
        .chunks(batch.max(1))
        .zip(examples.chunks(batch.max(1)))
    {
        let refs: Vec<_> = chunk.iter().collect();
        let b = LmBatch::from_collated(&collate(&refs, text.pad_id(), PadSide::Left));
        let ranks = flexi_burn::SampleRanks::uniform(b.len(), 0);
        let hidden = base.model.hidden(&b.batch, &ranks).map_err(model)?;
        let [n, s, d] = hidden.dims();
        for (i, ex) in exs.iter().enumerate().take(n) {
            let labels = &b.labels[i * s..(i + 1) * s];
            if labels[1..].iter().all(|l| *l == crate::lm::IGNORE_INDEX) {
                return Err(TrainError::EmptyData(format!(
                    "example {:?}: no answer token within max_len {max_len}",
                    ex.id
                )));
            }
            let row = hidden.clone().slice([i..i + 1, 0..s, 0..d]);
            let loss = models::llama::causal_lm_loss_from_hidden(
                &base.model,
                row,
                labels,
                crate::lm::IGNORE_INDEX,
            )
            .map_err(model)?;
            out.push(loss.into_scalar().elem::<f64>());
        }
    }
    Ok(out)
}

/// Labels from [`answer_nll`] **(ours)**: easy when the base model's answer cross-entropy is
/// at most `threshold` (default: the median, so both classes hold about half of the
/// examples), then a balanced subset drawn with `seed`. The report's scores are the
/// cross-entropies (nothing is generated).
pub fn label_by_answer_nll<B: Backend>(
    base: &TextModel<B>,
    examples: &[Example],
    max_len: usize,
    batch: usize,
    threshold: Option<f64>,
    seed: u64,
) -> Result<Labels> {
    if examples.is_empty() {
        return Err(TrainError::EmptyData("no example to label".into()));
    }
    let nll = answer_nll(base, examples, max_len, batch)?;
    let rule = LabelRule::AtMost(threshold.unwrap_or_else(|| datasets::labels::median(&nll)));
    let data = |e: datasets::DataError| TrainError::EmptyData(e.to_string());
    let labels = label_scores(
        examples.iter().zip(&nll).map(|(e, s)| (e.id.clone(), *s)),
        rule,
    )
    .map_err(data)?;
    let balanced = balanced_split(&labels, seed).map_err(data)?;
    let report = EvalReport {
        tables: Vec::new(),
        mean_rank: 0.0,
        activated_params: 0.0,
        predictions: examples
            .iter()
            .zip(&nll)
            .map(|(e, s)| infer::Prediction {
                id: e.id.clone(),
                source: e.source.clone(),
                rank: 0,
                prediction: String::new(),
                score: *s,
                truncated: false,
            })
            .collect(),
        truncated: 0,
        max_new_tokens: 0,
    };
    Ok(Labels {
        report,
        labels,
        balanced,
        rule,
    })
}

// ------------------------------------------------------------------------------ router

/// How to train a router.
#[derive(Clone, Debug)]
pub struct RouterSpec {
    /// Class -> rank map.
    pub class_ranks: ClassRankMap,
    /// Depth, noise, epochs, seed.
    pub training: RouterTraining,
    /// Prompts are cut to this many tokens (text; recorded in the router's input definition).
    pub max_len: usize,
    /// What an audio router pools (speech).
    pub audio_feature: AudioFeature,
    /// What a text router pools: `None` the token embedding (the paper's), `Some(l)` the
    /// base model's hidden states after its first `l` decoder layers.
    pub text_layer: Option<usize>,
}

/// A router trained by [`fit_router`].
pub struct FittedRouter<B: Backend> {
    /// The router, frozen.
    pub router: flexi_burn::Router<B>,
    /// Its description (input definition, class map, accuracy).
    pub meta: RouterMeta,
    /// Labelled examples it was trained on.
    pub examples: usize,
}

impl<B: Backend> FittedRouter<B> {
    /// Writes `router.safetensors` and `router.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        Ok(save_router(&self.router, &self.meta, dir)?)
    }
}

/// Trains a router on `labels` (by example id; every id must be in `examples`) over the router
/// inputs of `base` (text or audio). The router trains on the autodiff backend `B` and is
/// returned frozen. With `spec.training.holdout > 0` that fraction of each class is held out
/// and the router's accuracy on it is recorded ([`RouterMeta::heldout_accuracy`]).
pub fn fit_router<B: AutodiffBackend>(
    base: &BaseModel<B::InnerBackend>,
    examples: &[Example],
    labels: &[LabeledSample],
    spec: &RouterSpec,
    device: &B::Device,
) -> Result<FittedRouter<B::InnerBackend>> {
    check_unique_ids(examples, "router data")?;
    let h = spec.training.holdout;
    if !(0.0..1.0).contains(&h) {
        return Err(TrainError::Config {
            key: "router.holdout".into(),
            message: format!("{h}: expected a fraction in [0, 1)"),
        });
    }
    let by_id: HashMap<&str, &Example> = examples.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut chosen = Vec::with_capacity(labels.len());
    let mut classes = Vec::with_capacity(labels.len());
    let mut seen = std::collections::HashSet::new();
    for l in labels {
        let ex = by_id.get(l.id.as_str()).ok_or_else(|| {
            TrainError::EmptyData(format!("label id {} is not in the router data", l.id))
        })?;
        if !seen.insert(l.id.as_str()) {
            return Err(infer::InferError::DuplicateId {
                origin: "router labels".into(),
                id: l.id.clone(),
            }
            .into());
        }
        chosen.push(*ex);
        classes.push(l.label.class());
    }
    let input = base.router_input(spec);
    let feats = base.router_features(&input, &chosen, Path::new("(the router being trained)"))?;
    let (train_idx, held_idx) = stratified_split(&classes, h, spec.training.seed);
    let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
        idx.iter().map(|&i| (feats[i].clone(), classes[i])).unzip()
    };
    let (train_feats, train_classes) = pick(&train_idx);
    // Audio features standardised by default, text ones not (see RouterTraining::standardize).
    let training = RouterTraining {
        standardize: Some(
            spec.training
                .standardize
                .unwrap_or(matches!(input, RouterInput::Audio(_))),
        ),
        ..spec.training.clone()
    };
    let (router, acc) = train_router::<B>(
        &train_feats,
        &train_classes,
        spec.class_ranks.num_classes(),
        &training,
        device,
    )?;
    let router = router.valid();
    let heldout_accuracy = (!held_idx.is_empty()).then(|| {
        let (f, c) = pick(&held_idx);
        accuracy(&router, &f, &c, device)
    });
    Ok(FittedRouter {
        router,
        meta: RouterMeta {
            input,
            num_classes: spec.class_ranks.num_classes(),
            class_ranks: spec.class_ranks.to_string(),
            train_accuracy: acc,
            heldout_accuracy,
            training,
        },
        examples: train_idx.len(),
    })
}

// --------------------------------------------------------------------------------- fit

/// One fine-tuning run.
#[derive(Clone, Debug)]
pub struct FitSpec {
    /// Base model: HF directory, `.gguf` file, or a Whisper directory (HF or CTranslate2).
    pub model: PathBuf,
    /// Method and hyper-parameters.
    pub config: TrainConfig,
    /// The router (Flexi-LoRA).
    pub router: Option<PathBuf>,
    /// Apply the model's chat template to prompts (text).
    pub chat: bool,
    /// The run directory.
    pub out: PathBuf,
    /// Continue from the newest checkpoint in `out`.
    pub resume: bool,
    /// Start the adapter from a PEFT adapter directory ([`crate::peft::init_from_adapter`]):
    /// its modules fill the first components of ours, the rest start as usual.
    pub init_adapter: Option<PathBuf>,
    /// Accept a half-precision `init_adapter` on an f32 base.
    pub allow_upcast: bool,
    /// Progress bar.
    pub progress: bool,
    /// Data-parallel shards per step on this device
    /// ([`crate::trainer::default_shards`]: every core on the CPU, 1 on a GPU).
    pub shards: usize,
    /// Data-parallel training: this call is one peer of several ([`crate::parallel`]); peer
    /// 0 writes the run directory. `None`: this process trains alone.
    pub parallel: Option<crate::parallel::DataParallel>,
    /// Per-layer recomputation ([`Trainer::recompute_layers`]; Llama and Whisper).
    pub recompute_layers: bool,
}

/// What [`fit`] did.
#[derive(Debug)]
pub struct Fitted {
    /// The run's description (also written to `out/run.json`).
    pub info: RunInfo,
    /// Losses, times, the last checkpoint.
    pub summary: TrainSummary,
    /// Batches per epoch.
    pub batches: usize,
    /// Trainable parameters.
    pub trainable: usize,
}

/// Fine-tunes `spec.model` on `examples` with `spec.config`'s method and writes the run
/// directory (checkpoints, `metrics.jsonl`, `run.json`). Flexi-LoRA routes every example with
/// the frozen router first; each example carries its rank into its batch. The run holds
/// `spec.out`'s [`crate::RunLock`] throughout: when another run holds it, this returns
/// [`TrainError::Locked`] at once.
pub fn fit<B: AutodiffBackend>(
    spec: &FitSpec,
    examples: &[Example],
    device: B::Device,
) -> Result<Fitted> {
    if examples.is_empty() {
        return Err(TrainError::EmptyData("no training examples".into()));
    }
    check_unique_ids(examples, "training data")?;
    let cfg = &spec.config;
    if matches!(cfg.method, Method::Flexi { .. }) && spec.router.is_none() {
        return Err(TrainError::Config {
            key: "router".into(),
            message: "Flexi-LoRA needs a trained router (`cargo xtask router`)".into(),
        });
    }
    // One run per directory: a second `fit` on `spec.out` (this process or another) is
    // refused here, before anything is written, and the lock holds until the run is done.
    let leader = spec.parallel.as_ref().is_none_or(|p| p.is_leader());
    let _lock = if leader {
        Some(crate::lock::RunLock::acquire(&spec.out)?)
    } else {
        None
    };
    let speech = models::auto::is_whisper(&spec.model);
    let router = match (&cfg.method, &spec.router) {
        (Method::Flexi { .. }, Some(dir)) => {
            let router = TrainedRouter::<B::InnerBackend>::load(dir, &device)?;
            let want = cfg.method.class_ranks()?.unwrap_or(router.map.clone());
            if want != router.map {
                return Err(TrainError::Config {
                    key: "method.class_ranks".into(),
                    message: format!(
                        "the router in {} maps classes to {}, the method asks for {want}",
                        dir.display(),
                        router.map
                    ),
                });
            }
            Some(router)
        }
        _ => None,
    };
    let trainer = Trainer::<B> {
        config: cfg,
        out: spec.out.clone(),
        device: device.clone(),
        progress: spec.progress,
        stop_at: None,
        save_checkpoints: true,
        shards: spec.shards,
        parallel: spec.parallel.clone(),
        recompute_layers: spec.recompute_layers,
    };
    let (summary, batches, params, chat) = if speech {
        let mut model = load_whisper_for_training::<B>(&spec.model, cfg, &device)?;
        if let Some(dir) = &spec.init_adapter {
            init_from_adapter(&mut model, &cfg.method, dir, &spec.model, spec.allow_upcast)?;
        }
        // Router ranks per utterance (Flexi-LoRA), from the frozen router over the model to
        // train at rank 0, which is its base: no second copy of the model is loaded.
        let routed: Vec<Option<usize>> = match &router {
            Some(router) => {
                let refs: Vec<&Example> = examples.iter().collect();
                let ranks = router.route_audio(&model.valid(), &load_utterances(&refs)?)?;
                ranks.into_iter().map(Some).collect()
            }
            None => vec![None; examples.len()],
        };
        let tok = models::whisper::WhisperTokenizer::from_dir(&spec.model)
            .map_err(|e| TrainError::Model(format!("{}: {e}", spec.model.display())))?;
        let prompt = transcribe_prompt(&model.config, &tok)?;
        let n_mels = model.config.num_mel_bins;
        let mut batches = Vec::new();
        for (chunk, ranks) in examples
            .chunks(cfg.batch_size)
            .zip(routed.chunks(cfg.batch_size))
        {
            let items: Vec<(String, &Path, String)> = chunk
                .iter()
                .map(|e| Ok((e.id.clone(), infer::speech::audio_of(e)?, e.target.clone())))
                .collect::<Result<_>>()?;
            let mut batch = AsrBatch::from_files(&items, &tok, &prompt, n_mels)?;
            batch.routed = ranks.iter().copied().collect();
            batches.push(batch);
        }
        let params = flexi_burn::ParamCount::of(&model);
        let (_, summary) = trainer.fit(&Seq2Seq, model, &batches, spec.resume)?;
        (summary, batches.len(), params, false)
    } else {
        let text = LmText::load(&spec.model, spec.chat)?;
        let mut model = load_for_training::<B>(&spec.model, cfg, &device)?;
        text.check_vocab(model.config.vocab_size)?;
        if let Some(dir) = &spec.init_adapter {
            init_from_adapter(&mut model, &cfg.method, dir, &spec.model, spec.allow_upcast)?;
        }
        // Router ranks per example (Flexi-LoRA), from the frozen router. The router reads the
        // frozen token embedding, which the model to train shares with its base: no second
        // copy of the model is loaded.
        let routed: Vec<Option<usize>> = match &router {
            Some(router) => {
                let refs: Vec<&Example> = examples.iter().collect();
                let ranks = router.route(&model.valid(), &text, &refs)?;
                ranks.into_iter().map(Some).collect()
            }
            None => vec![None; examples.len()],
        };
        // Each example carries its own rank into its batch.
        let mut encoded = Vec::with_capacity(examples.len());
        for (ex, rank) in examples.iter().zip(routed) {
            encoded.push((text.encode_train(ex, cfg.max_len)?, rank));
        }
        let batches: Vec<LmBatch> = encoded
            .chunks(cfg.batch_size)
            .map(|chunk| {
                let refs: Vec<_> = chunk.iter().map(|(e, _)| e).collect();
                let mut b = LmBatch::from_collated(&collate(&refs, text.pad_id(), PadSide::Left));
                b.routed = chunk.iter().map(|(_, r)| *r).collect();
                b
            })
            .collect();
        let params = flexi_burn::ParamCount::of(&model);
        let (_, summary) = trainer.fit(&CausalLm, model, &batches, spec.resume)?;
        (summary, batches.len(), params, text.chat)
    };
    let info = RunInfo {
        model: spec.model.clone(),
        config: cfg.clone(),
        router: spec.router.clone(),
        chat,
        examples: examples.len(),
        seconds: summary.seconds,
        first_loss: summary.losses.first().copied().unwrap_or(f64::NAN),
        last_loss: summary.losses.last().copied().unwrap_or(f64::NAN),
        speech,
        trainable_params: params.trainable,
        // The base model's own parameters: all of them for full fine-tuning, the frozen ones
        // otherwise (the adapters are the trainable ones).
        base_params: if cfg.method == Method::Full {
            params.total
        } else {
            params.total - params.trainable
        },
        adapter_from: spec.init_adapter.clone(),
    };
    if leader {
        info.write(&spec.out)?;
    }
    Ok(Fitted {
        trainable: info.trainable_params,
        info,
        summary,
        batches,
    })
}
