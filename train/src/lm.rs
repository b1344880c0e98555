//! Causal language modelling for `models::llama`: batches from `datasets`, the loss on answer
//! tokens only, and the model with the adapter a method needs.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use flexi_burn::SampleRanks;
use models::llama::{AdapterConfig, Llama, PaddedBatch, causal_lm_loss_from_hidden};

use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::params::{seeded_adapter_init, stable_param_ids};
use crate::trainer::Objective;

/// HF's ignore index for labels.
pub const IGNORE_INDEX: i64 = -100;

/// A left-padded batch with answer-only labels and, for Flexi-LoRA, the router's ranks.
#[derive(Clone, Debug)]
pub struct LmBatch {
    /// Token ids and attention mask.
    pub batch: PaddedBatch,
    /// Labels `[batch * seq]`, row-major, [`IGNORE_INDEX`] outside the answer.
    pub labels: Vec<i64>,
    /// Example ids.
    pub example_ids: Vec<String>,
    /// Router ranks, one per sample.
    pub routed: Option<Vec<usize>>,
}

impl LmBatch {
    /// From a collated `datasets` batch (left padding expected).
    pub fn from_collated(b: &datasets::batch::Batch) -> Self {
        let (n, s) = (b.batch_size, b.seq_len);
        let ids = (0..n)
            .map(|i| b.input_ids[i * s..(i + 1) * s].to_vec())
            .collect();
        let mask = (0..n)
            .map(|i| {
                b.attention_mask[i * s..(i + 1) * s]
                    .iter()
                    .map(|m| *m != 0)
                    .collect()
            })
            .collect();
        Self {
            batch: PaddedBatch { ids, mask },
            labels: b.labels.clone(),
            example_ids: b.ids.clone(),
            routed: None,
        }
    }

    /// Samples.
    pub fn len(&self) -> usize {
        self.batch.ids.len()
    }

    /// Samples `range` as a batch of their own (same padded length).
    pub fn rows(&self, range: std::ops::Range<usize>) -> LmBatch {
        let s = self.batch.seq_len();
        LmBatch {
            batch: PaddedBatch {
                ids: self.batch.ids[range.clone()].to_vec(),
                mask: self.batch.mask[range.clone()].to_vec(),
            },
            labels: self.labels[range.start * s..range.end * s].to_vec(),
            example_ids: self.example_ids[range.clone()].to_vec(),
            routed: self.routed.as_ref().map(|r| r[range].to_vec()),
        }
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.batch.ids.is_empty()
    }
}

/// The causal-LM objective: mean cross-entropy over answer tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct CausalLm;

impl<B: AutodiffBackend> Objective<B> for CausalLm {
    type Model = Llama<B>;
    type Batch = LmBatch;

    fn loss(&self, model: &Llama<B>, batch: &LmBatch, ranks: &SampleRanks) -> Result<Tensor<B, 1>> {
        // The LM head runs only on positions that predict a label (the answer), not on the
        // prompt: same loss as `causal_lm_loss` over full logits, a fraction of the work.
        let hidden = model
            .hidden(&batch.batch, ranks)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        causal_lm_loss_from_hidden(model, hidden, &batch.labels, IGNORE_INDEX)
            .map_err(|e| TrainError::Model(e.to_string()))
    }

    fn batch_len(&self, batch: &LmBatch) -> usize {
        batch.len()
    }

    fn batch_tokens(&self, batch: &LmBatch) -> usize {
        batch.batch.mask.iter().flatten().filter(|m| **m).count()
    }

    fn example_ids(&self, batch: &LmBatch) -> Vec<String> {
        batch.example_ids.clone()
    }

    fn routed_ranks<'a>(&self, batch: &'a LmBatch) -> Option<&'a [usize]> {
        batch.routed.as_deref()
    }

    fn shard(&self, batch: &LmBatch, range: std::ops::Range<usize>) -> Option<LmBatch> {
        Some(batch.rows(range))
    }

    fn loss_targets(&self, batch: &LmBatch) -> usize {
        shifted_targets(&batch.labels, batch.batch.seq_len())
    }
}

/// Labels a causal LM loss reads: position `t` of a row predicts label `t + 1`, so the first
/// label of every row is never a target.
pub fn shifted_targets(labels: &[i64], seq: usize) -> usize {
    if seq == 0 {
        return 0;
    }
    labels
        .chunks_exact(seq)
        .map(|row| row[1..].iter().filter(|l| **l != IGNORE_INDEX).count())
        .sum()
}

/// The adapter a method needs on a Llama: none for full fine-tuning, `r_max` of the method
/// otherwise (SVD form for AdaLoRA).
pub fn adapter_for(config: &TrainConfig) -> Result<AdapterConfig> {
    if config.method == Method::Full {
        return Ok(AdapterConfig::none());
    }
    let targets = AdapterConfig::parse_targets(&config.adapter.targets.join(",")).map_err(|e| {
        TrainError::Config {
            key: "adapter.targets".into(),
            message: e.to_string(),
        }
    })?;
    Ok(AdapterConfig {
        targets,
        lora: config.adapter.lora(&config.method)?,
    })
}

/// Loads a Llama (HF directory or `.gguf` file) with the adapter of `config`'s method,
/// initialised from the seed as training initialises it, on any backend (a trained run loads
/// its checkpoint over this).
pub fn load_adapted<B: Backend>(
    dir: &Path,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<Llama<B>> {
    let adapter = adapter_for(config)?;
    // Frozen matrices stored in the run's precision as they are read (no f32 copy of the
    // whole model under mixed precision).
    let model = models::auto::load_llama_any_in::<B>(dir, &adapter, config.precision, device)
        .map_err(|e| TrainError::Model(e.to_string()))?;
    Ok(seeded_adapter_init(model, config.seed))
}

/// Loads a Llama (HF directory or `.gguf` file) ready to train with `config`'s method: adapters
/// attached and initialised from the seed, stable parameter ids, every weight trainable for
/// full fine-tuning.
pub fn load_for_training<B: AutodiffBackend>(
    dir: &Path,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<Llama<B>> {
    let model = load_adapted::<B>(dir, config, device)?;
    Ok(stable_param_ids(model, config.method == Method::Full).store_frozen_in(config.precision))
}
