//! The text decoder.
//!
//! ```text
//! h = embed_tokens(ids) + embed_positions[past..past + n]     learned positions
//! for each layer:
//!     h = h + self_attn(self_attn_layer_norm(h), causal, KV cache)
//!     h = h + encoder_attn(encoder_attn_layer_norm(h), encoder K/V cached once)
//!     h = h + fc2(gelu(fc1(final_layer_norm(h))))
//! logits = layer_norm(h) @ embed_tokens^T                   tied output projection
//! ```

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use flexi_burn::SampleRanks;

use super::attention::{DecoderCache, LayerCache, WhisperAttention, causal_mask};
use super::error::{Result, WhisperError};
use crate::host_act::gelu_host;
use crate::proj::Proj;

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before self-attention.
    pub self_attn_layer_norm: LayerNorm<B>,
    /// Causal self-attention.
    pub self_attn: WhisperAttention<B>,
    /// Norm before cross-attention.
    pub encoder_attn_layer_norm: LayerNorm<B>,
    /// Cross-attention over the encoder output.
    pub encoder_attn: WhisperAttention<B>,
    /// Norm before the MLP.
    pub final_layer_norm: LayerNorm<B>,
    /// MLP up projection.
    pub fc1: Proj<B>,
    /// MLP down projection.
    pub fc2: Proj<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// `x [b, n, d]` (new positions) -> `[b, n, d]`, appending to `cache`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        encoder_out: &Tensor<B, 3>,
        cache: &mut LayerCache<B>,
        mask: Tensor<B, 4>,
        ranks: &SampleRanks,
    ) -> Tensor<B, 3> {
        let h = self.self_attn_layer_norm.forward(x.clone());
        let (k, v) = self.self_attn.keys_values(h.clone(), ranks);
        let (k, v) = match cache.self_kv.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        };
        cache.self_kv = Some((k.clone(), v.clone()));
        let x = x.add(self.self_attn.attend(h, k, v, Some(mask), ranks));

        let h = self.encoder_attn_layer_norm.forward(x.clone());
        let (ck, cv) = match &cache.cross_kv {
            Some(kv) => kv.clone(),
            None => {
                let kv = self.encoder_attn.keys_values(encoder_out.clone(), ranks);
                cache.cross_kv = Some(kv.clone());
                kv
            }
        };
        let x = x.add(self.encoder_attn.attend(h, ck, cv, None, ranks));

        let h = self.final_layer_norm.forward(x.clone());
        let h = self
            .fc2
            .forward(gelu_host(self.fc1.forward(h, ranks)), ranks);
        x.add(h)
    }
}

/// The decoder stack with its tied output projection.
#[derive(Module, Debug)]
pub struct WhisperDecoder<B: Backend> {
    /// Token embedding `[vocab, d_model]` (frozen), also the output projection.
    pub embed_tokens: Embedding<B>,
    /// Learned positions `[max_target_positions, d_model]` (frozen).
    pub embed_positions: Param<Tensor<B, 2>>,
    /// Blocks.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub layer_norm: LayerNorm<B>,
    /// Token-embedding multiplier (`sqrt(d_model)` with `scale_embedding`, else 1).
    pub embed_scale: f64,
}

impl<B: Backend> WhisperDecoder<B> {
    /// Logits `[b, n, vocab]` of the new token ids `ids [b, n]` at positions
    /// `cache.len .. cache.len + n`, given `encoder_out [b, frames, d]`. The cache grows by
    /// `n`; a fresh [`DecoderCache`] gives plain teacher forcing.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        encoder_out: &Tensor<B, 3>,
        cache: &mut DecoderCache<B>,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 3>> {
        let [b, _] = ids.dims();
        let [eb, _, _] = encoder_out.dims();
        if b != eb {
            return Err(WhisperError::InvalidInput(format!(
                "{b} decoder sequences for {eb} encoder outputs"
            )));
        }
        if cache.layers.len() != self.layers.len() {
            return Err(WhisperError::InvalidInput(format!(
                "a cache of {} layers for a decoder of {}",
                cache.layers.len(),
                self.layers.len()
            )));
        }
        let past = cache.len;
        let mut x = self.embed(ids, past)?;
        let n = x.dims()[1];
        let mask = causal_mask::<B>(past, n, &x.device());
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, encoder_out, c, mask.clone(), ranks);
        }
        cache.len = past + n;
        Ok(self.head(x))
    }

    /// The first layer's input `[b, n, d]`: token embeddings of `ids [b, n]` (times
    /// `embed_scale`) plus the learned positions `past .. past + n`.
    pub fn embed(&self, ids: Tensor<B, 2, Int>, past: usize) -> Result<Tensor<B, 3>> {
        let [_, n] = ids.dims();
        let [max_pos, d] = self.embed_positions.dims();
        if n == 0 {
            return Err(WhisperError::InvalidInput("no decoder tokens".into()));
        }
        if past + n > max_pos {
            return Err(WhisperError::ContextOverflow {
                len: past + n,
                max: max_pos,
            });
        }
        // In the positions' type: the token table may be stored in a half type (mixed
        // precision), the residual stream is not.
        let mut x = self
            .embed_tokens
            .forward(ids)
            .cast(self.embed_positions.val().dtype());
        if self.embed_scale != 1.0 {
            x = x.mul_scalar(self.embed_scale);
        }
        let pos = self
            .embed_positions
            .val()
            .slice([past..past + n, 0..d])
            .unsqueeze::<3>();
        Ok(x.add(pos))
    }

    /// Logits `[b, n, vocab]` of the last layer's output `x [b, n, d]`: the final norm and the
    /// tied output projection.
    pub fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let device = x.device();
        let x = self.layer_norm.forward(x);
        let embed = self.embed_tokens.weight.val(); // [vocab, d]
        let vocab = embed.dims()[0];
        let h = x.reshape([b * n, d]);
        let x_type = h.dtype();
        let h = h.cast(embed.dtype()); // the table's type (mixed precision), cast back below
        let logits = if b * n == 1 && crate::sdpa::host_parallel::<B>(&device) {
            // One decoding step on the CPU: two halves of the vocabulary on two threads.
            crate::head::head_rows(h, embed.transpose())
        } else if b * n < d {
            // Few positions (decoding steps): `E h^T` reads E as stored, where `h E^T` would
            // copy the transposed embedding on every step.
            embed.matmul(h.transpose()).transpose()
        } else {
            h.matmul(embed.transpose())
        };
        logits.cast(x_type).reshape([b, n, vocab])
    }
}
