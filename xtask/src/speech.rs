//! Speech (Whisper) in the pipeline: `train` and `eval` come here when `--model` is a Whisper
//! directory (Hugging Face or CTranslate2) and the data is a LibriSpeech-layout tree.
//!
//! Supported methods: full, lora, dylora, dylora_plus, adalora. Flexi-LoRA on speech needs a
//! router over audio features, which is not built yet: it is refused with that reason.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use datasets::Example;
use datasets::metrics::{EvalOptions, Evaluator, sample_score};
use flexi_burn::{Phase, RankSampler, RankSchedule};
use infer::{EvalReport, Prediction};
use models::whisper::{TranscribeOptions, WhisperTokenizer, load_audio, transcribe_with_ranks};
use train::asr::{AsrBatch, Seq2Seq, load_whisper_for_training, transcribe_prompt};
use train::{Method, TrainConfig, TrainSummary, Trainer};

/// Whether `path` holds a Whisper model (CTranslate2 directory, or `config.json` whose
/// `model_type` is `whisper`).
pub fn is_whisper(path: &Path) -> bool {
    if models::ct2::is_ct2_dir(path) {
        return true;
    }
    std::fs::read_to_string(path.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("model_type")
                .and_then(|m| m.as_str())
                .map(|m| m == "whisper")
        })
        .unwrap_or(false)
}

fn tokenizer(model: &Path) -> Result<WhisperTokenizer> {
    WhisperTokenizer::from_dir(model)
        .with_context(|| format!("loading the Whisper tokenizer of {}", model.display()))
}

fn audio_of(ex: &Example) -> Result<&Path> {
    ex.audio.as_deref().with_context(|| {
        format!(
            "example {} has no audio file (not a speech data set?)",
            ex.id
        )
    })
}

/// Fine-tunes a Whisper model on speech examples.
pub fn train<B: AutodiffBackend>(
    model_dir: &Path,
    examples: &[Example],
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    shards: usize,
    device: B::Device,
) -> Result<TrainSummary> {
    if matches!(cfg.method, Method::Flexi { .. }) {
        bail!(
            "Flexi-LoRA on speech needs a router over audio features, which is not implemented \
             yet; use lora, dylora, dylora_plus, adalora or full"
        );
    }
    let model = load_whisper_for_training::<B>(model_dir, cfg, &device)?;
    let tok = tokenizer(model_dir)?;
    let prompt = transcribe_prompt(&model.config, &tok)?;
    let n_mels = model.config.num_mel_bins;
    let mut batches = Vec::new();
    for chunk in examples.chunks(cfg.batch_size) {
        let items: Vec<(String, &Path, String)> = chunk
            .iter()
            .map(|e| Ok((e.id.clone(), audio_of(e)?, e.target.clone())))
            .collect::<Result<_>>()?;
        batches.push(AsrBatch::from_files(&items, &tok, &prompt, n_mels)?);
    }
    println!(
        "train {} (speech): {} examples, {} batches, {} trainable parameters",
        cfg.method.label(),
        examples.len(),
        batches.len(),
        flexi_burn::ParamCount::of(&model).trainable
    );
    let trainer = Trainer::<B> {
        config: cfg,
        out: out.to_path_buf(),
        device,
        progress: true,
        stop_at: None,
        save_checkpoints: true,
        shards,
    };
    let (_, summary) = trainer.fit(&Seq2Seq, model, &batches, resume)?;
    Ok(summary)
}

/// Transcribes every example with the method's inference ranks and scores WER / CER / ACC.
/// `cfg = None` evaluates the base model.
pub fn eval<B: AutodiffBackend>(
    model_dir: &Path,
    run: Option<(&Path, &TrainConfig)>,
    examples: &[Example],
    batch_size: usize,
    device: B::Device,
) -> Result<EvalReport> {
    let (model, schedule, seed) = match run {
        None => {
            let m = models::ct2::load_whisper_any::<B::InnerBackend>(
                model_dir,
                &models::whisper::WhisperAdapter::none(),
                &device,
            )?;
            (m, None, 0)
        }
        Some((dir, cfg)) => {
            let m = load_whisper_for_training::<B>(model_dir, cfg, &device)?;
            let ckpt = train::checkpoint::Checkpoints::new(dir, 2)
                .latest()?
                .with_context(|| format!("{}: no checkpoint", dir.display()))?;
            let w = ckpt.join("weights.safetensors");
            let m = train::params::load_tensors(m, &train::params::read_safetensors(&w)?, &w)?;
            (m.valid(), cfg.method.schedule(), cfg.seed)
        }
    };
    let tok = tokenizer(model_dir)?;
    let audios: Vec<(String, Vec<f32>)> = examples
        .iter()
        .map(|e| {
            let p = audio_of(e)?;
            Ok((
                e.id.clone(),
                load_audio(p).with_context(|| format!("reading {}", p.display()))?,
            ))
        })
        .collect::<Result<_>>()?;
    let ranks: Vec<usize> = match &schedule {
        None => vec![0; examples.len()],
        Some(s) => ranks_for(s, seed, examples.len(), batch_size)?,
    };
    let options = TranscribeOptions {
        batch_size,
        ..Default::default()
    };
    let texts = transcribe_with_ranks(&model, &tok, &audios, &ranks, &options, &device)?;
    let eval_options = EvalOptions::default();
    let mut evaluator = Evaluator::new(eval_options);
    let mut predictions = Vec::new();
    for ((ex, text), &rank) in examples.iter().zip(&texts).zip(&ranks) {
        evaluator.add(ex, text);
        predictions.push(Prediction {
            id: ex.id.clone(),
            source: ex.source.clone(),
            rank,
            prediction: text.clone(),
            score: sample_score(ex, text, &eval_options),
        });
    }
    let per_rank = flexi_burn::params::lora_params_per_rank(&model);
    Ok(EvalReport {
        tables: evaluator.tables(&examples[0].source),
        mean_rank: ranks.iter().sum::<usize>() as f64 / ranks.len().max(1) as f64,
        activated_params: flexi_burn::average_activated_params(per_rank, &ranks),
        predictions,
    })
}

/// Inference ranks of `n` inputs in batches of `batch_size` (DyLoRA+ draws once per batch).
fn ranks_for(
    schedule: &RankSchedule,
    seed: u64,
    n: usize,
    batch_size: usize,
) -> Result<Vec<usize>> {
    let mut sampler = RankSampler::new(schedule.clone(), seed);
    let mut out = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let b = left.min(batch_size.max(1));
        out.extend_from_slice(sampler.ranks(b, Phase::Inference, None)?.as_slice());
        left -= b;
    }
    Ok(out)
}
