//! A trained run on disk and loading it for inference.
//!
//! `train` leaves a run directory: `run.json` ([`RunInfo`]: the base model, the training
//! configuration, the router, the chat flag), `metrics.jsonl` and checkpoints
//! (`checkpoint-*/weights.safetensors`: the trainable tensors). [`FlexiRun::load`] turns such
//! a directory back into a model on any plain backend together with the run's own rank policy
//! (the method's inference schedule, or its router), ready to generate, transcribe and
//! evaluate.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use datasets::Example;
use infer::router::TrainedRouter;
use infer::{EvalReport, EvalSettings, LmText, RankPolicy, evaluate, evaluate_speech};
use models::llama::{GenerationConfig, Llama, generate};
use models::whisper::{Whisper, WhisperTokenizer};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoints;
use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::params::{load_tensors, read_safetensors};

/// What `train` leaves for inference (`run.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// The base model path.
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
    /// First step loss.
    pub first_loss: f64,
    /// Last step loss.
    pub last_loss: f64,
    /// A speech (Whisper) run.
    #[serde(default)]
    pub speech: bool,
    /// Trainable parameters (the adapters, or every weight for full fine-tuning).
    #[serde(default)]
    pub trainable_params: usize,
    /// Parameters of the base model.
    #[serde(default)]
    pub base_params: usize,
    /// The PEFT adapter the run was imported from or started from (`import`,
    /// `train --resume-from-adapter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_from: Option<PathBuf>,
}

impl RunInfo {
    /// Trainable parameters as a percentage of the base model's (NaN when not recorded).
    pub fn trainable_percent(&self) -> f64 {
        if self.base_params == 0 {
            return f64::NAN;
        }
        100.0 * self.trainable_params as f64 / self.base_params as f64
    }
}

impl RunInfo {
    /// The file name inside a run directory.
    pub const FILE: &'static str = "run.json";

    /// Reads `dir/run.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(Self::FILE);
        let bytes = std::fs::read(&p).map_err(|e| TrainError::Io {
            path: p.clone(),
            source: e,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
            path: p,
            message: format!("not a run description: {e}"),
        })
    }

    /// Writes `dir/run.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(Self::FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| TrainError::Model(e.to_string()))?;
        crate::checkpoint::write_atomic(&p, &json)
    }
}

/// The model of a run: a Llama with its text side, or a Whisper with its tokenizer.
pub enum RunModel<B: Backend> {
    /// Text generation.
    Text {
        /// The model (adapter loaded).
        model: Box<Llama<B>>,
        /// Tokenizer and prompts.
        text: Box<LmText>,
    },
    /// Speech recognition.
    Speech {
        /// The model (adapter loaded).
        model: Box<Whisper<B>>,
        /// Its tokenizer.
        tokenizer: Box<WhisperTokenizer>,
    },
}

/// How a run picks each input's rank at inference.
#[derive(Debug)]
pub enum RunRanks<B: Backend> {
    /// The base model (rank 0), also full fine-tuning.
    Base,
    /// The method's inference schedule, seeded with the run's seed.
    Schedule(flexi_burn::RankSchedule, u64),
    /// Flexi-LoRA: the run's router.
    Router(Box<TrainedRouter<B>>),
}

/// A trained run (or a base model) loaded for inference on a plain backend.
pub struct FlexiRun<B: Backend> {
    /// The run's description (`None` for a base model).
    pub info: Option<RunInfo>,
    /// The model.
    pub model: RunModel<B>,
    /// Its rank policy.
    pub ranks: RunRanks<B>,
    /// Longest prompt + answer of text generation (the run's `max_len`).
    pub max_len: usize,
}

impl<B: Backend> FlexiRun<B> {
    /// The model's frozen weights stored in `precision`'s half type (mixed precision,
    /// [`flexi_burn::precision`]); the adapter and router keep f32. f32 changes nothing.
    pub fn with_precision(mut self, precision: flexi_burn::Precision) -> Self {
        self.model = match self.model {
            RunModel::Text { model, text } => RunModel::Text {
                model: Box::new(model.store_frozen_in(precision)),
                text,
            },
            RunModel::Speech { model, tokenizer } => RunModel::Speech {
                model: Box::new(model.store_frozen_in(precision)),
                tokenizer,
            },
        };
        self
    }

    /// The precision the run was trained in (f32 for a base model).
    pub fn trained_precision(&self) -> flexi_burn::Precision {
        self.info
            .as_ref()
            .map_or(flexi_burn::Precision::F32, |i| i.config.precision)
    }
}

/// The newest checkpoint's trainable tensors of a run, loaded into `model`.
fn load_newest<B: Backend, M: burn::module::Module<B>>(dir: &Path, model: M) -> Result<M> {
    let ckpt = Checkpoints::new(dir, 2)
        .latest()?
        .ok_or_else(|| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            message: "no checkpoint (did training finish a step?)".into(),
        })?;
    let w = ckpt.join("weights.safetensors");
    Ok(load_tensors(model, &read_safetensors(&w)?, &w)?)
}

impl<B: Backend> FlexiRun<B> {
    /// Loads the run in `dir`: its base model with the adapter of its method, the newest
    /// checkpoint, and its rank policy (router included). The frozen weights are stored in
    /// the run's training precision ([`Self::load_in`] picks another).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        Self::load_in(dir, None, device)
    }

    /// [`Self::load`] with the frozen weights stored in `precision`'s type as they are read
    /// from the base checkpoint (`None`: the run's training precision). Unlike
    /// [`Self::with_precision`] on a loaded run, f32 here is the checkpoint's own values even
    /// for a run trained in bf16/f16 (a weight rounded to a half type is not widened back).
    pub fn load_in(
        dir: &Path,
        precision: Option<flexi_burn::Precision>,
        device: &B::Device,
    ) -> Result<Self> {
        let info = RunInfo::read(dir)?;
        let trained = info.config.precision;
        // The base model is read in the requested precision; `info` keeps the training one.
        let mut load_cfg = info.config.clone();
        load_cfg.precision = precision.unwrap_or(trained);
        let cfg = &load_cfg;
        let model = if info.speech {
            let m = crate::asr::load_whisper_adapted::<B>(&info.model, cfg, device)?;
            RunModel::Speech {
                model: Box::new(load_newest(dir, m)?),
                tokenizer: Box::new(whisper_tokenizer(&info.model)?),
            }
        } else {
            let m = crate::lm::load_adapted::<B>(&info.model, cfg, device)?;
            let text = LmText::load(&info.model, info.chat)?;
            text.check_vocab(m.config.vocab_size)?;
            RunModel::Text {
                model: Box::new(load_newest(dir, m)?),
                text: Box::new(text),
            }
        };
        let ranks = match (&cfg.method, &info.router) {
            (Method::Flexi { .. }, Some(router)) => {
                let r = TrainedRouter::<B>::load(router, device)?;
                if let Some(want) = cfg.method.class_ranks()?
                    && want != r.map
                {
                    return Err(TrainError::Config {
                        key: "method.class_ranks".into(),
                        message: format!(
                            "the run asks for {want}, its router in {} maps classes to {}",
                            router.display(),
                            r.map
                        ),
                    });
                }
                RunRanks::Router(Box::new(r))
            }
            (Method::Flexi { .. }, None) => {
                return Err(TrainError::Checkpoint {
                    path: dir.join(RunInfo::FILE),
                    message: "a Flexi-LoRA run without a router".into(),
                });
            }
            (Method::Full, _) => RunRanks::Base,
            (m, _) => RunRanks::Schedule(
                m.schedule().ok_or_else(|| TrainError::Config {
                    key: "method".into(),
                    message: format!("{} has no inference ranks", m.label()),
                })?,
                cfg.seed,
            ),
        };
        let max_len = cfg.max_len;
        if let RunRanks::Router(r) = &ranks {
            match &model {
                RunModel::Text { model, text } => {
                    r.meta.input.text(&r.dir)?.check(model, text, &r.dir)?
                }
                RunModel::Speech { model, .. } => {
                    r.meta.input.audio(&r.dir)?.check(model, &r.dir)?
                }
            }
        }
        Ok(Self {
            info: Some(info),
            model,
            ranks,
            max_len,
        })
    }

    /// A base model (HF directory, `.gguf` file or CTranslate2 Whisper directory) without an
    /// adapter: every input at rank 0. `chat` applies the model's chat template to prompts;
    /// `max_len` bounds prompt + answer.
    pub fn base(model: &Path, chat: bool, max_len: usize, device: &B::Device) -> Result<Self> {
        let m = if models::auto::is_whisper(model) {
            RunModel::Speech {
                model: Box::new(
                    models::ct2::load_whisper_any::<B>(
                        model,
                        &models::whisper::WhisperAdapter::none(),
                        device,
                    )
                    .map_err(|e| TrainError::Model(format!("{}: {e}", model.display())))?,
                ),
                tokenizer: Box::new(whisper_tokenizer(model)?),
            }
        } else {
            let base = crate::workflow::TextModel::<B>::load(model, chat, device)?;
            RunModel::Text {
                model: Box::new(base.model),
                text: Box::new(base.text),
            }
        };
        Ok(Self {
            info: None,
            model: m,
            ranks: RunRanks::Base,
            max_len,
        })
    }

    /// The method's label (`base` for a base model).
    pub fn method(&self) -> String {
        self.info
            .as_ref()
            .map_or_else(|| "base".to_string(), |i| i.config.method.label())
    }

    /// The rank policy of `examples` (in their order): the router's rank of each example for
    /// Flexi-LoRA, the method's schedule otherwise.
    pub fn policy(&self, examples: &[Example]) -> Result<RankPolicy> {
        Ok(match &self.ranks {
            RunRanks::Base => RankPolicy::Base,
            RunRanks::Schedule(schedule, seed) => RankPolicy::Schedule {
                schedule: schedule.clone(),
                seed: *seed,
            },
            RunRanks::Router(router) => match &self.model {
                RunModel::Text { model, text } => {
                    let refs: Vec<&Example> = examples.iter().collect();
                    RankPolicy::PerExample(router.route(model, text, &refs)?)
                }
                RunModel::Speech { model, .. } => {
                    let refs: Vec<&Example> = examples.iter().collect();
                    let audios = infer::speech::load_utterances(&refs)?;
                    RankPolicy::PerExample(router.route_audio(model, &audios)?)
                }
            },
        })
    }

    /// Generates (text) or transcribes (speech) every example with the run's ranks and scores
    /// it with its task metric. `title` names the set in the report's tables.
    pub fn evaluate(
        &self,
        examples: &[Example],
        settings: &EvalSettings,
        title: &str,
    ) -> Result<EvalReport> {
        infer::check_unique_ids(examples, title)?;
        let policy = self.policy(examples)?;
        let mut report = match &self.model {
            RunModel::Text { model, text } => {
                evaluate(model, text, examples, &policy, settings, title)?
            }
            RunModel::Speech { model, tokenizer } => evaluate_speech(
                model,
                tokenizer,
                examples,
                &policy,
                settings.batch_size,
                title,
            )?,
        };
        // Full fine-tuning has no adapter: every weight it trained is active for every input
        // (the paper's count), not 0.
        if let Some(info) = &self.info
            && matches!(info.config.method, Method::Full)
        {
            report.activated_params = info.trainable_params as f64;
        }
        Ok(report)
    }

    /// Greedy answers to `examples`' prompts (text runs), with the run's ranks: the answer
    /// text and the rank each got.
    pub fn generate(
        &self,
        examples: &[Example],
        max_new_tokens: usize,
    ) -> Result<Vec<(String, usize)>> {
        let RunModel::Text { model, text } = &self.model else {
            return Err(TrainError::Config {
                key: "model".into(),
                message: "generate needs a text model; use evaluate for speech".into(),
            });
        };
        let policy = self.policy(examples)?;
        let members: Vec<usize> = (0..examples.len()).collect();
        let ranks = policy.batch_ranks(0, &members)?;
        let prompts: Vec<Vec<u32>> = examples
            .iter()
            .map(|e| text.encode_prompt(e, self.max_len, max_new_tokens))
            .collect::<infer::Result<_>>()?;
        let config = GenerationConfig {
            pad_token_id: text.pad_id(),
            ..GenerationConfig::greedy(max_new_tokens, text.stop_ids.clone())
        };
        let out = generate(model, &prompts, &ranks, &config)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        out.tokens
            .iter()
            .zip(ranks.as_slice())
            .map(|(t, &r)| Ok((text.decode_answer(t)?, r)))
            .collect()
    }
}

impl<B: Backend> FlexiRun<B> {
    /// Transcribes audio (`(name, 16 kHz mono samples)`, e.g. from
    /// `models::whisper::load_audio`) with a speech run's ranks: its router's rank of each
    /// input (Flexi-LoRA), or the method's schedule, one batch of `batch_size` at a time.
    /// Returns each transcript and the rank it used.
    pub fn transcribe(
        &self,
        audios: &[(String, Vec<f32>)],
        batch_size: usize,
    ) -> Result<Vec<(String, usize)>> {
        let RunModel::Speech { model, tokenizer } = &self.model else {
            return Err(TrainError::Config {
                key: "model".into(),
                message: "transcribe needs a Whisper run; use generate for text".into(),
            });
        };
        let policy = match &self.ranks {
            RunRanks::Router(router) => RankPolicy::PerExample(router.route_audio(model, audios)?),
            // The schedules need no examples.
            _ => self.policy(&[])?,
        };
        Ok(infer::speech::transcribe_with_policy(
            model, tokenizer, audios, &policy, batch_size,
        )?)
    }
}

impl<B: Backend> FlexiRun<B> {
    /// Loads a Flexi-LoRA adapter directory written by [`crate::export::export_flexi`] onto
    /// `base` (the Hugging Face directory or `.gguf` file it was trained on): the nested
    /// adapter at `r_max` with its scale policy, and its router, so inputs are routed exactly
    /// as in the run that wrote it.
    pub fn from_flexi_adapter(base: &Path, dir: &Path, device: &B::Device) -> Result<Self> {
        let c = dir.join("adapter_config.json");
        let bad = |message: String| TrainError::Checkpoint {
            path: c.clone(),
            message,
        };
        let bytes = std::fs::read(&c).map_err(|e| TrainError::Io {
            path: c.clone(),
            source: e,
        })?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let block = v.get(crate::export::FLEXI_KEY).ok_or_else(|| {
            bad(format!(
                "no `{}` block: a plain PEFT adapter (import it with `cargo xtask import`)",
                crate::export::FLEXI_KEY
            ))
        })?;
        let get = |key: &str| {
            block
                .get(key)
                .ok_or_else(|| bad(format!("{}.{key} is missing", crate::export::FLEXI_KEY)))
        };
        let field = |key: &str, e: serde_json::Error| {
            bad(format!("{}.{key}: {e}", crate::export::FLEXI_KEY))
        };
        let class_ranks: String = serde_json::from_value(get("class_ranks")?.clone())
            .map_err(|e| field("class_ranks", e))?;
        let scale: flexi_burn::ScalePolicy =
            serde_json::from_value(get("scale")?.clone()).map_err(|e| field("scale", e))?;
        let alpha: f64 =
            serde_json::from_value(get("alpha")?.clone()).map_err(|e| field("alpha", e))?;
        let max_len: usize =
            serde_json::from_value(get("max_len")?.clone()).map_err(|e| field("max_len", e))?;
        let router_dir = dir.join(get("router")?.as_str().ok_or_else(|| {
            bad(format!(
                "{}.router: expected a path",
                crate::export::FLEXI_KEY
            ))
        })?);
        // The nested adapter through the PEFT reader: exported at r_max with PEFT's scale equal
        // to the run's s(r_max), so every module's factors are copied unscaled and each smaller
        // rank is its prefix, as trained.
        let adapter = crate::peft::PeftAdapter::open(dir)?;
        let speech = models::auto::is_whisper(base);
        let targets = if speech {
            adapter.build_targets(|k| models::whisper::WhisperAdapter::parse_targets(k).is_ok())?
        } else {
            adapter.build_targets(|k| models::llama::AdapterConfig::parse_targets(k).is_ok())?
        };
        let config = TrainConfig {
            method: Method::Flexi { class_ranks },
            adapter: crate::config::AdapterSettings {
                alpha,
                scale,
                targets,
                dropout: 0.0,
            },
            max_len,
            ..Default::default()
        };
        let base_dtype = crate::peft::base_dtype(base);
        let router = TrainedRouter::<B>::load(&router_dir, device)?;
        let (model, chat) = if speech {
            let mut m = crate::asr::load_whisper_adapted::<B>(base, &config, device)?;
            crate::peft::apply(&mut m, &adapter, crate::peft::Fill::Zero, base_dtype, true)?;
            router
                .meta
                .input
                .audio(&router_dir)?
                .check(&m, &router_dir)?;
            let tokenizer = whisper_tokenizer(base)?;
            (
                RunModel::Speech {
                    model: Box::new(m),
                    tokenizer: Box::new(tokenizer),
                },
                false,
            )
        } else {
            let mut m = crate::lm::load_adapted::<B>(base, &config, device)?;
            crate::peft::apply(&mut m, &adapter, crate::peft::Fill::Zero, base_dtype, true)?;
            let input = router.meta.input.text(&router_dir)?;
            let text = LmText::load(base, input.chat_template.is_some())?;
            text.check_vocab(m.config.vocab_size)?;
            input.check(&m, &text, &router_dir)?;
            let chat = text.chat;
            (
                RunModel::Text {
                    model: Box::new(m),
                    text: Box::new(text),
                },
                chat,
            )
        };
        Ok(Self {
            info: Some(RunInfo {
                model: base.to_path_buf(),
                config,
                router: Some(router_dir),
                chat,
                examples: 0,
                seconds: 0.0,
                first_loss: f64::NAN,
                last_loss: f64::NAN,
                speech,
                trainable_params: 0,
                base_params: 0,
                adapter_from: Some(dir.to_path_buf()),
            }),
            model,
            ranks: RunRanks::Router(Box::new(router)),
            max_len,
        })
    }
}

fn whisper_tokenizer(model: &Path) -> Result<WhisperTokenizer> {
    WhisperTokenizer::from_dir(model).map_err(|e| {
        TrainError::Model(format!(
            "loading the Whisper tokenizer of {}: {e}",
            model.display()
        ))
    })
}
