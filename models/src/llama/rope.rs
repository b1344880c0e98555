//! Rotary position embedding in the Hugging Face Llama form ("rotate half"), with Llama 3's
//! frequency scaling.
//!
//! Burn's `nn::RotaryEncoding` rotates interleaved pairs `(x0, x1), (x2, x3), ...`; HF Llama
//! checkpoints are trained with the rotate-half form, pairing `x_i` with `x_{i + d/2}`:
//!
//! ```text
//! rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]
//! cos/sin[p, i] = cos/sin(p * inv_freq[i mod d/2])       (i in 0..d)
//! ```
//!
//! Tables are built on the host once per forward pass from each sample's position ids, so
//! left padded samples and KV-cache steps get their own positions; every layer reuses them.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::config::LlamaConfig;

/// The inverse frequencies `inv_freq [head_dim / 2]` of a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f64>,
    head_dim: usize,
}

impl RotaryEmbedding {
    /// `inv_freq[i] = theta^(-2i/d)`, then Llama 3 scaling if configured (HF's
    /// `_compute_llama3_parameters`): wavelengths longer than
    /// `original_max_position_embeddings / low_freq_factor` are divided by `factor`, shorter
    /// than `... / high_freq_factor` kept, and those in between smoothly interpolated.
    pub fn new(config: &LlamaConfig) -> Self {
        let d = config.head_dim;
        let mut inv_freq: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        if let Some(s) = &config.rope_scaling {
            let old_ctx = s.original_max_position_embeddings as f64;
            let low_freq_wavelen = old_ctx / s.low_freq_factor;
            let high_freq_wavelen = old_ctx / s.high_freq_factor;
            for f in &mut inv_freq {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen < high_freq_wavelen {
                    // high frequency: unchanged
                } else if wavelen > low_freq_wavelen {
                    *f /= s.factor;
                } else {
                    let smooth = (old_ctx / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        Self {
            inv_freq,
            head_dim: d,
        }
    }

    /// The inverse frequencies `[head_dim / 2]`.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// The rotation tables for position ids `[batch][seq]`, laid out `[batch, seq, heads,
    /// head_dim]` like the projections' output (so applying them is a same-shape
    /// elementwise product, not a strided broadcast), for the query and the key heads.
    pub fn tables<B: Backend>(
        &self,
        positions: &[Vec<usize>],
        heads: usize,
        kv_heads: usize,
        device: &B::Device,
    ) -> RopeTables<B> {
        let batch = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let d = self.head_dim;
        let half = d / 2;
        // One row of cos and signed sin per (sample, position); `sin` carries the sign of
        // rotate_half: [-sin, +sin] over the two halves.
        let mut cos_rows = Vec::with_capacity(batch * seq * d);
        let mut sin_rows = Vec::with_capacity(batch * seq * d);
        for row in positions {
            for &p in row {
                // Like HF: angles in f32 (inv_freq f32 * position f32).
                for part in 0..2 {
                    for &f in &self.inv_freq {
                        let angle = (f as f32) * (p as f32);
                        cos_rows.push(angle.cos());
                        sin_rows.push(if part == 0 { -angle.sin() } else { angle.sin() });
                    }
                }
            }
        }
        let expand = |rows: &[f32], h: usize| {
            let mut out = Vec::with_capacity(rows.len() * h);
            for row in rows.chunks_exact(d) {
                for _ in 0..h {
                    out.extend_from_slice(row);
                }
            }
            Tensor::<B, 4>::from_data(TensorData::new(out, [batch, seq, h, d]), device)
        };
        debug_assert_eq!(half * 2, d);
        RopeTables {
            cos_q: expand(&cos_rows, heads),
            sin_q: expand(&sin_rows, heads),
            cos_k: expand(&cos_rows, kv_heads),
            sin_k: expand(&sin_rows, kv_heads),
        }
    }
}

/// RoPE tables of one forward pass, `[batch, seq, heads, head_dim]` for the query heads and
/// `[batch, seq, kv_heads, head_dim]` for the key heads; `sin_*` carries rotate_half's sign.
#[derive(Clone, Debug)]
pub struct RopeTables<B: Backend> {
    /// cos for the query heads.
    pub cos_q: Tensor<B, 4>,
    /// Signed sin for the query heads.
    pub sin_q: Tensor<B, 4>,
    /// cos for the key heads.
    pub cos_k: Tensor<B, 4>,
    /// Signed sin for the key heads.
    pub sin_k: Tensor<B, 4>,
}

/// Applies the rotation to `x [batch, seq, heads, head_dim]` with tables of the same shape:
/// `x * cos + swap_halves(x) * sin_signed`, which is HF's `x * cos + rotate_half(x) * sin`
/// (`rotate_half([x1, x2]) = [-x2, x1]`; the sign lives in the table). On a contiguous `x`
/// every step is a plain copy or a same-shape elementwise product.
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin_signed: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, s, h, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..s, 0..h, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..s, 0..h, d / 2..d]);
    let swapped = Tensor::cat(vec![x2, x1], 3);
    x.mul(cos.clone()).add(swapped.mul(sin_signed.clone()))
}
