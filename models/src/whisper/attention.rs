//! Whisper multi-head attention (self and cross) with Flexi-LoRA projections, and the
//! decoder's key/value caches.
//!
//! ```text
//! q = q_proj(x) * head_dim^-0.5        (HF: k_proj has no bias; q, v, out have one)
//! k, v = k_proj(src), v_proj(src)      src = x (self) or the encoder output (cross)
//! out = out_proj(softmax(q k^T + mask) v)
//! ```

use std::ops::Range;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flexi_burn::SampleRanks;

use crate::proj::Proj;
use crate::sdpa;

/// One attention block's projections.
#[derive(Module, Debug)]
pub struct WhisperAttention<B: Backend> {
    /// Query projection (bias).
    pub q_proj: Proj<B>,
    /// Key projection (no bias).
    pub k_proj: Proj<B>,
    /// Value projection (bias).
    pub v_proj: Proj<B>,
    /// Output projection (bias).
    pub out_proj: Proj<B>,
    /// Heads.
    pub heads: usize,
    /// Head size.
    pub head_dim: usize,
}

impl<B: Backend> WhisperAttention<B> {
    /// `[b, s, heads * head_dim] -> [b, heads, s, head_dim]`.
    pub fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, s, _] = x.dims();
        x.reshape([b, s, self.heads, self.head_dim]).swap_dims(1, 2)
    }

    /// Keys and values `[b, heads, s, head_dim]` of `src [b, s, d_model]`.
    pub fn keys_values(
        &self,
        src: Tensor<B, 3>,
        ranks: &SampleRanks,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let k = self.split_heads(self.k_proj.forward(src.clone(), ranks));
        let v = self.split_heads(self.v_proj.forward(src, ranks));
        (k, v)
    }

    /// Attention of queries from `x [b, n, d_model]` over `k, v [b, heads, t, head_dim]`, with
    /// an optional additive mask broadcastable to `[b, heads, n, t]`.
    pub fn attend(
        &self,
        x: Tensor<B, 3>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Option<Tensor<B, 4>>,
        ranks: &SampleRanks,
    ) -> Tensor<B, 3> {
        let n = x.dims()[1];
        let q = self.queries(x, ranks);
        let ctx = self.attend_heads(self.split_heads(q), k, v, mask);
        self.out_proj
            .forward(self.merge_heads(&ctx, &(0..n)), ranks)
    }

    /// The scaled queries `[b, n, heads * head_dim]` of `x [b, n, d_model]` (position-wise).
    pub fn queries(&self, x: Tensor<B, 3>, ranks: &SampleRanks) -> Tensor<B, 3> {
        let scaling = (self.head_dim as f64).powf(-0.5);
        self.q_proj.forward(x, ranks).mul_scalar(scaling)
    }

    /// `softmax(q k^T + mask) v` per head: `q [b, heads, n, head_dim]` over
    /// `k, v [b, heads, t, head_dim]` -> `[b, heads, n, head_dim]`. Without a mask (the
    /// encoder, cross-attention) the query rows run in two halves on two threads on the CPU
    /// ([`sdpa::parallel_halves`]); with the decoder's causal mask, as one block.
    pub fn attend_heads(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let (n, keys) = (q.dims()[2], k.dims()[2]);
        let blocks: Vec<_> = match mask {
            Some(mask) => vec![sdpa::QueryBlock {
                rows: 0..n,
                keys,
                bias: Some(mask),
            }],
            None => sdpa::parallel_halves::<B>(n, &q.device())
                .into_iter()
                .map(|rows| sdpa::QueryBlock {
                    rows,
                    keys,
                    bias: None,
                })
                .collect(),
        };
        sdpa::attention(q, k.swap_dims(2, 3), v, &blocks)
    }

    /// Rows `rows` of [`WhisperAttention::attend_heads`]'s output laid out for `out_proj`,
    /// `[b, rows, heads * head_dim]` (one copy).
    pub fn merge_heads(&self, ctx: &Tensor<B, 4>, rows: &Range<usize>) -> Tensor<B, 3> {
        let b = ctx.dims()[0];
        sdpa::narrow_rows(ctx, 2, rows).swap_dims(1, 2).reshape([
            b,
            rows.len(),
            self.heads * self.head_dim,
        ])
    }

    /// Self-attention without a mask (the encoder).
    pub fn forward_self(&self, x: Tensor<B, 3>, ranks: &SampleRanks) -> Tensor<B, 3> {
        let (k, v) = self.keys_values(x.clone(), ranks);
        self.attend(x, k, v, None, ranks)
    }
}

/// Additive causal mask `[1, 1, n, past + n]`: 0 where new query `i` (absolute position
/// `past + i`) may see key `j` (`j <= past + i`), `-inf` elsewhere.
pub fn causal_mask<B: Backend>(past: usize, n: usize, device: &B::Device) -> Tensor<B, 4> {
    let total = past + n;
    let mut values = vec![0.0f32; n * total];
    for i in 0..n {
        for j in past + i + 1..total {
            values[i * total + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::<B, 2>::from_data(TensorData::new(values, [n, total]), device).unsqueeze::<4>()
}

/// Cached keys and values of one decoder layer.
#[derive(Clone, Debug)]
pub struct LayerCache<B: Backend> {
    /// Self-attention keys and values of the positions decoded so far `[b, heads, past, hd]`.
    pub self_kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    /// Cross-attention keys and values of the encoder output `[b, heads, frames, hd]`,
    /// computed once.
    pub cross_kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

/// The decoder's cache: one [`LayerCache`] per layer and the number of cached positions.
#[derive(Clone, Debug)]
pub struct DecoderCache<B: Backend> {
    /// Per-layer caches.
    pub layers: Vec<LayerCache<B>>,
    /// Positions already decoded.
    pub len: usize,
    /// The per-sample LoRA ranks the cache was filled with (`None` while empty): the cached
    /// self- and cross-attention keys and values are only valid at those ranks.
    pub ranks: Option<Vec<usize>>,
}

impl<B: Backend> DecoderCache<B> {
    /// An empty cache for `layers` decoder layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![
                LayerCache {
                    self_kv: None,
                    cross_kv: None,
                };
                layers
            ],
            len: 0,
            ranks: None,
        }
    }
}
