//! [`Whisper`]: encoder + decoder, with the per-sample rank checks shared by both.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use flexi_burn::SampleRanks;

use super::attention::{DecoderCache, WhisperAttention};
use super::config::WhisperConfig;
use super::decoder::WhisperDecoder;
use super::encoder::WhisperEncoder;
use super::error::{Result, WhisperError};
use super::mel::LogMel;

/// A Whisper encoder–decoder with Flexi-LoRA projections.
///
/// Every forward takes the batch's [`SampleRanks`] (one rank per sample, the same in every
/// adapted layer of encoder and decoder; 0 = base model).
#[derive(Module, Debug)]
pub struct Whisper<B: Backend> {
    /// Audio encoder.
    pub encoder: WhisperEncoder<B>,
    /// Text decoder.
    pub decoder: WhisperDecoder<B>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: WhisperConfig,
    /// Largest rank a forward accepts (the adapter's `r_max`, 0 without adapters).
    #[module(skip)]
    pub max_rank: usize,
}

impl<B: Backend> Whisper<B> {
    /// Checks that `ranks` holds one rank per sample of a batch of `batch`, none above the
    /// adapter's `r_max` (what [`Whisper::encode`] and [`Whisper::decode`] check first).
    pub fn check_ranks(&self, batch: usize, ranks: &SampleRanks) -> Result<()> {
        ranks.validate(batch, self.max_rank)?;
        Ok(())
    }

    /// Encoder output `[b, frames / 2, d_model]` of `mel [b, n_mels, frames]`.
    pub fn encode(&self, mel: Tensor<B, 3>, ranks: &SampleRanks) -> Result<Tensor<B, 3>> {
        self.check_ranks(mel.dims()[0], ranks)?;
        self.encoder.forward(mel, ranks)
    }

    /// Stacks host spectrograms (all of the same shape) into `[b, n_mels, frames]`.
    pub fn mel_batch(&self, mels: &[LogMel], device: &B::Device) -> Result<Tensor<B, 3>> {
        let Some(first) = mels.first() else {
            return Err(WhisperError::InvalidInput("no spectrograms".into()));
        };
        if let Some(m) = mels
            .iter()
            .find(|m| (m.n_mels, m.frames) != (first.n_mels, first.frames))
        {
            return Err(WhisperError::InvalidInput(format!(
                "spectrograms of different shapes in one batch: [{}, {}] and [{}, {}]",
                first.n_mels, first.frames, m.n_mels, m.frames
            )));
        }
        let data: Vec<f32> = mels.iter().flat_map(|m| m.data.iter().copied()).collect();
        Ok(Tensor::from_data(
            TensorData::new(data, [mels.len(), first.n_mels, first.frames]),
            device,
        ))
    }

    /// The frozen weights (every projection's base and the token table) stored in
    /// `precision`'s type, for mixed precision ([`flexi_burn::precision`]); the
    /// convolutions, positions, norms and adapters keep their type. `f32` means the model's
    /// own float type (its positions'): nothing changes on a model loaded in full precision,
    /// and half-stored weights are widened back to it.
    pub fn store_frozen_in(mut self, precision: flexi_burn::Precision) -> Self {
        let dtype = precision
            .half()
            .unwrap_or_else(|| self.decoder.embed_positions.val().dtype().into());
        let attn = |a: WhisperAttention<B>| WhisperAttention {
            q_proj: a.q_proj.store_frozen(dtype),
            k_proj: a.k_proj.store_frozen(dtype),
            v_proj: a.v_proj.store_frozen(dtype),
            out_proj: a.out_proj.store_frozen(dtype),
            ..a
        };
        self.encoder.layers = self
            .encoder
            .layers
            .into_iter()
            .map(|mut l| {
                l.self_attn = attn(l.self_attn);
                l.fc1 = l.fc1.store_frozen(dtype);
                l.fc2 = l.fc2.store_frozen(dtype);
                l
            })
            .collect();
        self.decoder.layers = self
            .decoder
            .layers
            .into_iter()
            .map(|mut l| {
                l.self_attn = attn(l.self_attn);
                l.encoder_attn = attn(l.encoder_attn);
                l.fc1 = l.fc1.store_frozen(dtype);
                l.fc2 = l.fc2.store_frozen(dtype);
                l
            })
            .collect();
        self.decoder.embed_tokens.weight =
            flexi_burn::store_frozen(self.decoder.embed_tokens.weight, dtype);
        self
    }

    /// An empty decoder cache.
    pub fn new_cache(&self) -> DecoderCache<B> {
        DecoderCache::new(self.decoder.layers.len())
    }

    /// Checks host token ids (equal lengths, below `vocab_size`) and makes them a tensor.
    pub fn ids_tensor(&self, ids: &[Vec<u32>], device: &B::Device) -> Result<Tensor<B, 2, Int>> {
        let Some(first) = ids.first() else {
            return Err(WhisperError::InvalidInput("no decoder sequences".into()));
        };
        let n = first.len();
        let vocab = self.config.vocab_size;
        let mut flat = Vec::with_capacity(ids.len() * n);
        for (sample, row) in ids.iter().enumerate() {
            if row.len() != n {
                return Err(WhisperError::InvalidInput(format!(
                    "decoder sequences of different lengths ({n} and {}) in one batch",
                    row.len()
                )));
            }
            for &id in row {
                if id as usize >= vocab {
                    return Err(WhisperError::TokenOutOfRange {
                        sample,
                        id: id as i64,
                        vocab,
                    });
                }
                flat.push(id as i64);
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(flat, [ids.len(), n]),
            device,
        ))
    }

    /// Logits `[b, n, vocab]` of the new tokens `ids [b, n]`, extending `cache`.
    pub fn decode(
        &self,
        ids: Tensor<B, 2, Int>,
        encoder_out: &Tensor<B, 3>,
        cache: &mut DecoderCache<B>,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 3>> {
        self.check_ranks(ids.dims()[0], ranks)?;
        crate::llama::attention::record_ranks(&mut cache.ranks, ranks.as_slice()).map_err(
            |cached| {
                WhisperError::InvalidInput(format!(
                    "the decoder cache was filled at ranks {cached:?} and is reused at ranks \
                     {:?}: a cache is only valid at the ranks it was filled with (start a new \
                     cache)",
                    ranks.as_slice()
                ))
            },
        )?;
        self.decoder.forward(ids, encoder_out, cache, ranks)
    }

    /// Teacher-forced logits `[b, n, vocab]` of `ids` given `mel` (no cache kept).
    pub fn forward(
        &self,
        mel: Tensor<B, 3>,
        ids: Tensor<B, 2, Int>,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 3>> {
        let enc = self.encode(mel, ranks)?;
        let mut cache = self.new_cache();
        self.decode(ids, &enc, &mut cache, ranks)
    }
}

impl<B: Backend> flexi_burn::Adapters<B> for Whisper<B> {
    fn adapters(&self) -> Vec<(String, &flexi_burn::FlexiLinear<B>)> {
        use crate::proj::adapted;
        let mut out = Vec::new();
        for (i, l) in self.encoder.layers.iter().enumerate() {
            let a = &l.self_attn;
            out.extend(adapted(
                &format!("encoder.layers.{i}"),
                [
                    ("self_attn.q_proj", &a.q_proj),
                    ("self_attn.k_proj", &a.k_proj),
                    ("self_attn.v_proj", &a.v_proj),
                    ("self_attn.out_proj", &a.out_proj),
                    ("fc1", &l.fc1),
                    ("fc2", &l.fc2),
                ],
            ));
        }
        for (i, l) in self.decoder.layers.iter().enumerate() {
            let (s, c) = (&l.self_attn, &l.encoder_attn);
            out.extend(adapted(
                &format!("decoder.layers.{i}"),
                [
                    ("self_attn.q_proj", &s.q_proj),
                    ("self_attn.k_proj", &s.k_proj),
                    ("self_attn.v_proj", &s.v_proj),
                    ("self_attn.out_proj", &s.out_proj),
                    ("encoder_attn.q_proj", &c.q_proj),
                    ("encoder_attn.k_proj", &c.k_proj),
                    ("encoder_attn.v_proj", &c.v_proj),
                    ("encoder_attn.out_proj", &c.out_proj),
                    ("fc1", &l.fc1),
                    ("fc2", &l.fc2),
                ],
            ));
        }
        out
    }

    fn adapters_mut(&mut self) -> Vec<(String, &mut flexi_burn::FlexiLinear<B>)> {
        use crate::proj::adapted_mut;
        let mut out = Vec::new();
        for (i, l) in self.encoder.layers.iter_mut().enumerate() {
            let a = &mut l.self_attn;
            out.extend(adapted_mut(
                &format!("encoder.layers.{i}"),
                [
                    ("self_attn.q_proj", &mut a.q_proj),
                    ("self_attn.k_proj", &mut a.k_proj),
                    ("self_attn.v_proj", &mut a.v_proj),
                    ("self_attn.out_proj", &mut a.out_proj),
                    ("fc1", &mut l.fc1),
                    ("fc2", &mut l.fc2),
                ],
            ));
        }
        for (i, l) in self.decoder.layers.iter_mut().enumerate() {
            let (s, c) = (&mut l.self_attn, &mut l.encoder_attn);
            out.extend(adapted_mut(
                &format!("decoder.layers.{i}"),
                [
                    ("self_attn.q_proj", &mut s.q_proj),
                    ("self_attn.k_proj", &mut s.k_proj),
                    ("self_attn.v_proj", &mut s.v_proj),
                    ("self_attn.out_proj", &mut s.out_proj),
                    ("encoder_attn.q_proj", &mut c.q_proj),
                    ("encoder_attn.k_proj", &mut c.k_proj),
                    ("encoder_attn.v_proj", &mut c.v_proj),
                    ("encoder_attn.out_proj", &mut c.out_proj),
                    ("fc1", &mut l.fc1),
                    ("fc2", &mut l.fc2),
                ],
            ));
        }
        out
    }
}
