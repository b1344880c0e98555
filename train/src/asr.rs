//! Speech recognition for `models::whisper`: the seq2seq objective (cross-entropy on the
//! transcript tokens, teacher-forced after the decoder prompt) and batches from audio files.

use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use flexi_burn::SampleRanks;
use models::llama::causal_lm_loss;
use models::whisper::{
    LogMel, MelExtractor, Padding, Task, Whisper, WhisperAdapter, WhisperTokenizer, load_audio,
};

use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::lm::IGNORE_INDEX;
use crate::params::{seeded_adapter_init, stable_param_ids};
use crate::trainer::Objective;

/// Spectrograms, decoder ids `prompt + transcript + <|endoftext|>` (right-padded) and labels
/// covering the transcript and the end token only.
#[derive(Clone, Debug)]
pub struct AsrBatch {
    /// One 30 s log-mel per sample.
    pub mels: Vec<LogMel>,
    /// Decoder input ids `[b][n]`.
    pub ids: Vec<Vec<u32>>,
    /// Labels `[b * n]` aligned with `ids` ([`IGNORE_INDEX`] on the prompt and padding).
    pub labels: Vec<i64>,
    /// Example ids.
    pub example_ids: Vec<String>,
    /// Router ranks (Flexi-LoRA).
    pub routed: Option<Vec<usize>>,
}

impl AsrBatch {
    /// Builds a batch from `(id, audio file, transcript)` triples.
    pub fn from_files(
        items: &[(String, &Path, String)],
        tokenizer: &WhisperTokenizer,
        prompt: &[u32],
        n_mels: usize,
    ) -> Result<Self> {
        let mel = MelExtractor::new(n_mels);
        let mut mels = Vec::with_capacity(items.len());
        let mut rows = Vec::with_capacity(items.len());
        for (id, path, text) in items {
            let samples = load_audio(path).map_err(|e| TrainError::Model(e.to_string()))?;
            // Empty or silent audio with a transcript is broken data: refuse it by name.
            infer::router::utterance_samples(&path.display().to_string(), &samples)?;
            mels.push(
                mel.log_mel(
                    &samples,
                    Padding::ThirtySeconds,
                    &path.display().to_string(),
                )
                .map_err(|e| TrainError::Model(e.to_string()))?,
            );
            let mut row = prompt.to_vec();
            let text = format!(" {}", text.trim());
            row.extend(
                tokenizer
                    .encode(&text)
                    .map_err(|e| TrainError::Model(format!("{id}: {e}")))?,
            );
            row.push(tokenizer.eot);
            rows.push(row);
        }
        let n = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut labels = Vec::with_capacity(rows.len() * n);
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            for (t, &tok) in row.iter().enumerate() {
                labels.push(if t < prompt.len() {
                    IGNORE_INDEX
                } else {
                    tok as i64
                });
            }
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, n - row.len()));
            let mut padded = row;
            padded.resize(n, tokenizer.eot);
            ids.push(padded);
        }
        Ok(Self {
            mels,
            ids,
            labels,
            example_ids: items.iter().map(|(id, _, _)| id.clone()).collect(),
            routed: None,
        })
    }
}

/// The seq2seq objective: mean cross-entropy over transcript tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seq2Seq;

impl<B: AutodiffBackend> Objective<B> for Seq2Seq {
    type Model = Whisper<B>;
    type Batch = AsrBatch;

    fn loss(
        &self,
        model: &Whisper<B>,
        batch: &AsrBatch,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 1>> {
        let device = model.decoder.embed_tokens.weight.device();
        let err = |e: models::whisper::WhisperError| TrainError::Model(e.to_string());
        let mel = model.mel_batch(&batch.mels, &device).map_err(err)?;
        let ids = model.ids_tensor(&batch.ids, &device).map_err(err)?;
        let logits = model.forward(mel, ids, ranks).map_err(err)?;
        let [b, n, _] = logits.dims();
        let labels =
            Tensor::<B, 2, Int>::from_data(TensorData::new(batch.labels.clone(), [b, n]), &device);
        Ok(causal_lm_loss(logits, labels, IGNORE_INDEX))
    }

    fn batch_len(&self, batch: &AsrBatch) -> usize {
        batch.ids.len()
    }

    fn batch_tokens(&self, batch: &AsrBatch) -> usize {
        batch.labels.iter().filter(|l| **l != IGNORE_INDEX).count()
    }

    fn example_ids(&self, batch: &AsrBatch) -> Vec<String> {
        batch.example_ids.clone()
    }

    fn routed_ranks<'a>(&self, batch: &'a AsrBatch) -> Option<&'a [usize]> {
        batch.routed.as_deref()
    }

    fn shard(&self, batch: &AsrBatch, range: std::ops::Range<usize>) -> Option<AsrBatch> {
        let n = batch.ids.first().map_or(0, Vec::len);
        Some(AsrBatch {
            mels: batch.mels[range.clone()].to_vec(),
            ids: batch.ids[range.clone()].to_vec(),
            labels: batch.labels[range.start * n..range.end * n].to_vec(),
            example_ids: batch.example_ids[range.clone()].to_vec(),
            routed: batch.routed.as_ref().map(|r| r[range].to_vec()),
        })
    }

    fn loss_targets(&self, batch: &AsrBatch) -> usize {
        crate::lm::shifted_targets(&batch.labels, batch.ids.first().map_or(0, Vec::len))
    }
}

/// The decoder prompt for transcription (English; no language/task tokens for `.en` models).
pub fn transcribe_prompt(
    model_config: &models::whisper::WhisperConfig,
    tok: &WhisperTokenizer,
) -> Result<Vec<u32>> {
    tok.prompt(model_config.is_multilingual, None, Task::Transcribe)
        .map_err(|e| TrainError::Model(e.to_string()))
}

/// The Whisper adapter of `config`'s method: none for full fine-tuning, otherwise `r_max` on
/// `adapter.targets` in encoder and decoder (`o_proj` meaning `out_proj`).
pub fn whisper_adapter_for(config: &TrainConfig) -> Result<WhisperAdapter> {
    if config.method == Method::Full {
        return Ok(WhisperAdapter::none());
    }
    // The configuration's default targets use Llama's names; `o_proj` is Whisper's `out_proj`.
    let names: Vec<&str> = config
        .adapter
        .targets
        .iter()
        .map(|t| {
            if t == "o_proj" {
                "out_proj"
            } else {
                t.as_str()
            }
        })
        .collect();
    let targets =
        WhisperAdapter::parse_targets(&names.join(",")).map_err(|e| TrainError::Config {
            key: "adapter.targets".into(),
            message: e.to_string(),
        })?;
    Ok(WhisperAdapter {
        lora: config.adapter.lora(&config.method)?,
        ..WhisperAdapter::new(targets, 1, 1.0)
    })
}

/// Loads a Whisper directory (Hugging Face or CTranslate2) with the adapter of `config`'s
/// method, initialised from the seed as training initialises it, on any backend.
pub fn load_whisper_adapted<B: Backend>(
    dir: &Path,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<Whisper<B>> {
    let adapter = whisper_adapter_for(config)?;
    // Frozen matrices stored in the run's precision as they are read (mixed precision).
    let model = models::ct2::load_whisper_any_in::<B>(dir, &adapter, config.precision, device)
        .map_err(|e| TrainError::Model(e.to_string()))?;
    Ok(seeded_adapter_init(model, config.seed))
}

/// Loads a Whisper directory ready to train with `config`'s method (adapters initialised from
/// the seed; every weight trainable for full fine-tuning).
pub fn load_whisper_for_training<B: AutodiffBackend>(
    dir: &Path,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<Whisper<B>> {
    let model = load_whisper_adapted::<B>(dir, config, device)?;
    Ok(stable_param_ids(model, config.method == Method::Full).store_frozen_in(config.precision))
}
