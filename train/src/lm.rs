//! Causal language modelling for `models::llama`: batches from `datasets`, the loss on answer
//! tokens only, and the model with the adapter a method needs.

use std::path::Path;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use flexi_burn::SampleRanks;
use flexi_burn::schedule::mix;
use models::llama::{AdapterConfig, Llama, PaddedBatch, causal_lm_loss_from_hidden};

use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::params::{fresh_leaves, seeded_adapter_init, stable_param_ids};
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

    fn recompute_layers(
        &self,
        model: &Llama<B>,
        batch: &LmBatch,
        ranks: &SampleRanks,
        scale: &dyn Fn(Tensor<B, 1>) -> Tensor<B, 1>,
        reseed: Option<u64>,
    ) -> Result<(f64, GradientsParams)> {
        let model_err = |e: models::llama::LlamaError| TrainError::Model(e.to_string());
        let device = model.embed_tokens.weight.device();
        let seed_layer = |l: usize| {
            if let Some(seed) = reseed {
                B::seed(&device, mix(seed, l as u64));
            }
        };
        let ctx = model
            .layer_context(&batch.batch, ranks)
            .map_err(model_err)?;
        // Forward with every parameter detached (no graph is recorded): each layer's input
        // `[b, s, hidden]` is all that stays.
        let detached = model.clone().no_grad();
        let mut x = detached.layer_input(&ctx);
        let mut inputs = Vec::with_capacity(model.layers.len());
        for (l, layer) in detached.layers.iter().enumerate() {
            seed_layer(l);
            inputs.push(x.clone().inner());
            x = layer.forward_in(x, &ctx, ranks);
        }
        drop(detached);

        // Everything but the layers, as its own leaves: the final norm and the loss (the LM
        // head, or the tied embedding), then the embedding's backward.
        let outer = fresh_leaves(Llama {
            layers: Vec::new(),
            ..model.clone()
        });
        let mut sum = GradientsAccumulator::<Llama<B>>::new();
        let h = Tensor::<B, 3>::from_inner(x.inner()).require_grad();
        let loss = causal_lm_loss_from_hidden(
            &outer,
            outer.norm.forward(h.clone()),
            &batch.labels,
            IGNORE_INDEX,
        )
        .map_err(model_err)?;
        let value: f64 = loss.clone().into_scalar().elem();
        let grads = scale(loss).backward();
        let mut dy = h.grad(&grads);
        sum.accumulate(model, GradientsParams::from_grads(grads, &outer));

        // Layer by layer from the top: the layer's forward again, now with autodiff, and its
        // backward from the gradient of its output (`sum(y * dy)` has exactly `dy` as the
        // gradient of `y`).
        let embedding_trains = model.embed_tokens.weight.is_require_grad();
        for (l, input) in inputs.into_iter().enumerate().rev() {
            let Some(dy_l) = dy.take() else { break };
            let layer = fresh_leaves(model.layers[l].clone());
            let x = Tensor::<B, 3>::from_inner(input);
            let x = if l > 0 || embedding_trains {
                x.require_grad()
            } else {
                x
            };
            seed_layer(l);
            let y = layer.forward_in(x.clone(), &ctx, ranks);
            let grads = y.mul(Tensor::from_inner(dy_l)).sum().backward();
            dy = x.grad(&grads);
            sum.accumulate(model, GradientsParams::from_grads(grads, &layer));
        }
        if let (Some(dy), true) = (dy, embedding_trains) {
            let e = outer.layer_input(&ctx);
            let grads = e.mul(Tensor::from_inner(dy)).sum().backward();
            sum.accumulate(model, GradientsParams::from_grads(grads, &outer));
        }
        Ok((value, sum.grads()))
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
