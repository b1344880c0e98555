//! Speech recognition for `models::whisper`: the seq2seq objective (cross-entropy on the
//! transcript tokens, teacher-forced after the decoder prompt) and batches from audio files.

use std::path::Path;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use flexi_burn::SampleRanks;
use flexi_burn::schedule::mix;
use models::llama::causal_lm_loss;
use models::whisper::attention::{DecoderCache, causal_mask};
use models::whisper::decoder::WhisperDecoder;
use models::whisper::encoder::WhisperEncoder;
use models::whisper::{
    LogMel, MelExtractor, Padding, Task, Whisper, WhisperAdapter, WhisperTokenizer, load_audio,
};

use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::lm::IGNORE_INDEX;
use crate::params::{fresh_leaves, has_trainable, seeded_adapter_init, stable_param_ids};
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

    /// Per-layer recomputation through encoder and decoder: a forward pass without autodiff
    /// keeps every encoder layer's input (as the encoder's frame parts), the encoder output and
    /// every decoder layer's input. The backward pass then runs the loss, the decoder layers
    /// from the top (each one's gradient with respect to the encoder output summed over the
    /// layers), the encoder's final norm and the encoder layers from the top, each layer's
    /// forward recomputed with autodiff just before its backward. Dropout seeds: encoder layer
    /// `l` `mix(reseed, l)`, decoder layer `l` `mix(reseed, encoder layers + l)`.
    fn recompute_layers(
        &self,
        model: &Whisper<B>,
        batch: &AsrBatch,
        ranks: &SampleRanks,
        scale: &dyn Fn(Tensor<B, 1>) -> Tensor<B, 1>,
        reseed: Option<u64>,
    ) -> Result<(f64, GradientsParams)> {
        let err = |e: models::whisper::WhisperError| TrainError::Model(e.to_string());
        let device = model.decoder.embed_tokens.weight.device();
        let seed_layer = |l: usize| {
            if let Some(seed) = reseed {
                B::seed(&device, mix(seed, l as u64));
            }
        };
        let n_enc = model.encoder.layers.len();
        let mel = model.mel_batch(&batch.mels, &device).map_err(err)?;
        let ids = model.ids_tensor(&batch.ids, &device).map_err(err)?;
        let [b, n] = ids.dims();
        model.check_ranks(b, ranks).map_err(err)?;
        if mel.dims()[0] != b {
            return Err(TrainError::Model(format!(
                "{b} decoder sequences for {} spectrograms",
                mel.dims()[0]
            )));
        }
        let mask = causal_mask::<B>(0, n, &device);

        // Forward with every parameter detached: the layers' inputs are all that stays.
        let detached = model.clone().no_grad();
        let (mut xs, parts) = detached.encoder.stem_parts(mel.clone()).map_err(err)?;
        let mut enc_inputs = Vec::with_capacity(n_enc);
        for (l, layer) in detached.encoder.layers.iter().enumerate() {
            seed_layer(l);
            enc_inputs.push(xs.iter().map(|x| x.clone().inner()).collect::<Vec<_>>());
            xs = layer.forward_parts(xs, &parts, ranks);
        }
        let enc_last: Vec<_> = xs.iter().map(|x| x.clone().inner()).collect();
        let enc_out = detached.encoder.norm_parts(xs, &parts); // [b, frames, d]
        let mut x = detached.decoder.embed(ids.clone(), 0).map_err(err)?;
        let mut dec_inputs = Vec::with_capacity(model.decoder.layers.len());
        for (l, layer) in detached.decoder.layers.iter().enumerate() {
            seed_layer(n_enc + l);
            dec_inputs.push(x.clone().inner());
            let mut cache = DecoderCache::<B>::new(1);
            x = layer.forward(x, &enc_out, &mut cache.layers[0], mask.clone(), ranks);
        }
        drop(detached);
        let enc_out = enc_out.inner();

        // Everything but the layers as its own leaves: the stem, the encoder's final norm, the
        // decoder's embeddings, final norm and tied head.
        let outer = fresh_leaves(Whisper {
            encoder: WhisperEncoder {
                layers: Vec::new(),
                ..model.encoder.clone()
            },
            decoder: WhisperDecoder {
                layers: Vec::new(),
                ..model.decoder.clone()
            },
            ..model.clone()
        });
        let mut sum = GradientsAccumulator::<Whisper<B>>::new();
        let h = Tensor::<B, 3>::from_inner(x.inner()).require_grad();
        let logits = outer.decoder.head(h.clone());
        let labels =
            Tensor::<B, 2, Int>::from_data(TensorData::new(batch.labels.clone(), [b, n]), &device);
        let loss = causal_lm_loss(logits, labels, IGNORE_INDEX);
        let value: f64 = loss.clone().into_scalar().elem();
        let grads = scale(loss).backward();
        let mut dy = h.grad(&grads);
        sum.accumulate(model, GradientsParams::from_grads(grads, &outer));

        // Decoder layers from the top; each adds its share of the encoder output's gradient.
        let encoder_trains = has_trainable(&model.encoder);
        let dec_embedding_trains = model.decoder.embed_tokens.weight.is_require_grad()
            || model.decoder.embed_positions.is_require_grad();
        let mut d_enc: Option<Tensor<B::InnerBackend, 3>> = None;
        for (l, input) in dec_inputs.into_iter().enumerate().rev() {
            let Some(dy_l) = dy.take() else { break };
            let layer = fresh_leaves(model.decoder.layers[l].clone());
            let x = Tensor::<B, 3>::from_inner(input);
            let x = if l > 0 || dec_embedding_trains {
                x.require_grad()
            } else {
                x
            };
            let e = Tensor::<B, 3>::from_inner(enc_out.clone());
            let e = if encoder_trains { e.require_grad() } else { e };
            seed_layer(n_enc + l);
            let mut cache = DecoderCache::<B>::new(1);
            let y = layer.forward(x.clone(), &e, &mut cache.layers[0], mask.clone(), ranks);
            let grads = y.mul(Tensor::from_inner(dy_l)).sum().backward();
            dy = x.grad(&grads);
            if let Some(g) = e.grad(&grads) {
                d_enc = Some(match d_enc {
                    Some(acc) => acc.add(g),
                    None => g,
                });
            }
            sum.accumulate(model, GradientsParams::from_grads(grads, &layer));
        }
        if let (Some(dy), true) = (dy, dec_embedding_trains) {
            let e = outer.decoder.embed(ids, 0).map_err(err)?;
            let grads = e.mul(Tensor::from_inner(dy)).sum().backward();
            sum.accumulate(model, GradientsParams::from_grads(grads, &outer));
        }

        // The encoder: its final norm, then its layers from the top, frame part by part.
        let stem_trains = has_trainable(&model.encoder.conv1)
            || has_trainable(&model.encoder.conv2)
            || model.encoder.embed_positions.is_require_grad();
        let (Some(d_enc), true) = (d_enc, encoder_trains) else {
            return Ok((value, sum.grads()));
        };
        let last: Vec<_> = enc_last
            .into_iter()
            .map(|x| Tensor::<B, 3>::from_inner(x).require_grad())
            .collect();
        let out = outer.encoder.norm_parts(last.clone(), &parts);
        let grads = out.mul(Tensor::from_inner(d_enc)).sum().backward();
        let mut dys: Option<Vec<_>> = last.iter().map(|x| x.grad(&grads)).collect();
        sum.accumulate(model, GradientsParams::from_grads(grads, &outer));
        for (l, inputs) in enc_inputs.into_iter().enumerate().rev() {
            let Some(dy_l) = dys.take() else { break };
            let layer = fresh_leaves(model.encoder.layers[l].clone());
            let xs: Vec<_> = inputs
                .into_iter()
                .map(|x| {
                    let x = Tensor::<B, 3>::from_inner(x);
                    if l > 0 || stem_trains {
                        x.require_grad()
                    } else {
                        x
                    }
                })
                .collect();
            seed_layer(l);
            let ys = layer.forward_parts(xs.clone(), &parts, ranks);
            let grads = weighted_sum(ys, dy_l).backward();
            dys = xs.iter().map(|x| x.grad(&grads)).collect();
            sum.accumulate(model, GradientsParams::from_grads(grads, &layer));
        }
        if let (Some(dys), true) = (dys, stem_trains) {
            let (xs, _) = outer.encoder.stem_parts(mel).map_err(err)?;
            let grads = weighted_sum(xs, dys).backward();
            sum.accumulate(model, GradientsParams::from_grads(grads, &outer));
        }
        Ok((value, sum.grads()))
    }
}

/// `sum_i sum(ys[i] * dys[i])`: its gradient with respect to `ys[i]` is exactly `dys[i]`.
fn weighted_sum<B: AutodiffBackend>(
    ys: Vec<Tensor<B, 3>>,
    dys: Vec<Tensor<B::InnerBackend, 3>>,
) -> Tensor<B, 1> {
    ys.into_iter()
        .zip(dys)
        .map(|(y, dy)| y.mul(Tensor::from_inner(dy)).sum())
        .reduce(|a, b| a.add(b))
        .expect("the encoder has at least one frame part")
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
