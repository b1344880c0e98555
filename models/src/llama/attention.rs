//! Grouped-query self-attention with rotate-half RoPE, an additive causal + padding mask and
//! an optional KV cache.

use std::ops::Range;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use flexi_burn::SampleRanks;

use super::rope::{RopeTables, apply_rotary};
use crate::proj::Proj;
use crate::sdpa;

/// Keys and values of earlier positions, one entry per layer, after RoPE and before any
/// GQA sharing, in the projections' own layout `[batch, capacity, kv_heads, head_dim]`.
///
/// Each layer's buffer is allocated with room to spare and new positions are written with
/// `slice_assign` on a buffer nobody else holds: in place on backends that write in place, so
/// a decoding step copies only its own keys and values instead of concatenating the whole
/// history. burn-flex 0.21 copies the whole destination in every `slice_assign` (its
/// `slice_write_impl` keeps a second reference to the buffer through `to_contiguous`, so the
/// copy-on-write always fires), so on the CPU each step costs one copy of the buffer: the
/// room to spare is kept small (`CACHE_CHUNK`) for that reason.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerKv<B>>>,
    /// The per-sample LoRA ranks the cached keys and values were computed with: a cache
    /// filled at one rank holds that rank's projections, so it is only valid at those ranks.
    ranks: Option<Vec<usize>>,
}

#[derive(Clone, Debug)]
struct LayerKv<B: Backend> {
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    len: usize,
}

/// The rank record of a cache (Llama's and Whisper's): the first pass that fills `slot` sets
/// it, every later pass must bring the same ranks; on a mismatch, the recorded ones.
pub(crate) fn record_ranks(
    slot: &mut Option<Vec<usize>>,
    ranks: &[usize],
) -> Result<(), Vec<usize>> {
    match slot {
        Some(r) if r.as_slice() != ranks => Err(r.clone()),
        Some(_) => Ok(()),
        None => {
            *slot = Some(ranks.to_vec());
            Ok(())
        }
    }
}

/// Capacity grows in steps of this many positions. Small, because burn-flex copies the whole
/// buffer on every write (above): 256 made each SmolLM2 decoding step at batch 8 copy 94 MB;
/// 16 made the step 10-20 % faster (`cargo xtask bench decode --batch 8`, BENCHMARKS.md).
const CACHE_CHUNK: usize = 16;

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` decoder layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
            ranks: None,
        }
    }

    /// The per-sample ranks the cache was filled with (`None` while empty).
    pub fn ranks(&self) -> Option<&[usize]> {
        self.ranks.as_deref()
    }

    /// Records the ranks of a forward pass that extends the cache: the first pass sets them,
    /// every later one must use the same ranks (otherwise the cached keys and values of one
    /// rank would be mixed with new ones of another). Returns the cached ranks on a mismatch.
    pub fn check_ranks(&mut self, ranks: &[usize]) -> Result<(), Vec<usize>> {
        record_ranks(&mut self.ranks, ranks)
    }

    /// Cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the batch rows `rows` (in that order) of every layer and of the recorded
    /// ranks: generation drops the samples that stopped, so later steps compute only the
    /// running ones. Each layer's buffer is copied once (`select` along the batch axis).
    ///
    /// # Panics
    /// If a row is out of range of the cached batch.
    pub fn retain_rows(&mut self, rows: &[usize]) {
        for entry in self.layers.iter_mut().flatten() {
            let device = entry.k.device();
            let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
            entry.k = entry.k.clone().select(0, idx.clone());
            entry.v = entry.v.clone().select(0, idx);
        }
        if let Some(ranks) = self.ranks.as_mut() {
            *ranks = rows.iter().map(|&r| ranks[r]).collect();
        }
    }

    /// Writes `k, v [batch, new, kv_heads, head_dim]` after the cached positions of layer
    /// `layer`, returning views of all of them, `[batch, past + new, kv_heads, head_dim]`.
    fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, new, kvh, d] = k.dims();
        let mut entry = match self.layers[layer].take() {
            Some(e) => e,
            None => {
                let cap = (new + CACHE_CHUNK).next_multiple_of(CACHE_CHUNK);
                let device = k.device();
                LayerKv {
                    k: Tensor::zeros([b, cap, kvh, d], &device),
                    v: Tensor::zeros([b, cap, kvh, d], &device),
                    len: 0,
                }
            }
        };
        let (past, total) = (entry.len, entry.len + new);
        let cap = entry.k.dims()[1];
        if total > cap {
            let cap = (total + CACHE_CHUNK).next_multiple_of(CACHE_CHUNK);
            let grow = |t: Tensor<B, 4>| {
                let device = t.device();
                Tensor::zeros([b, cap, kvh, d], &device).slice_assign(
                    [0..b, 0..past, 0..kvh, 0..d],
                    t.slice([0..b, 0..past, 0..kvh, 0..d]),
                )
            };
            entry.k = grow(entry.k);
            entry.v = grow(entry.v);
        }
        let range = [0..b, past..total, 0..kvh, 0..d];
        entry.k = entry.k.slice_assign(range.clone(), k);
        entry.v = entry.v.slice_assign(range, v);
        entry.len = total;
        let all = [0..b, 0..total, 0..kvh, 0..d];
        let out = (
            entry.k.clone().slice(all.clone()),
            entry.v.clone().slice(all),
        );
        self.layers[layer] = Some(entry);
        out
    }
}

/// The additive attention mask of one forward pass, cut into the query blocks of
/// [`sdpa::causal_blocks`]: block `[r0, r1)` holds `[batch, heads, r1 - r0, past + r1]` (the
/// same for every head, written out so that adding it to the scores is a same-shape
/// elementwise sum), 0 where query `i` (absolute index `past + i`) may attend key `j`
/// (`j <= past + i` and `key_mask[b][j]`), a large negative number elsewhere ([`mask_min`] of
/// the device's float type), or no tensor at all when nothing in the block is hidden (a decoding
/// step without padding). Rows of padding queries see nothing; their outputs are unused. Built
/// once per forward pass and shared by every layer.
#[derive(Clone, Debug)]
pub struct AttentionBias<B: Backend> {
    past: usize,
    blocks: Vec<(Range<usize>, Option<Tensor<B, 4>>)>,
}

impl<B: Backend> AttentionBias<B> {
    /// The mask of `new` queries over `key_mask [batch][past + new]` (true: a real key), for
    /// `heads` query heads.
    pub fn new(key_mask: &[Vec<bool>], new: usize, heads: usize, device: &B::Device) -> Self {
        let batch = key_mask.len();
        let total = key_mask.first().map_or(0, Vec::len);
        let past = total - new;
        let blocks = sdpa::causal_blocks(past, new)
            .into_iter()
            .map(|rows| {
                let keys = past + rows.end;
                let mut values = Vec::with_capacity(batch * heads * rows.len() * keys);
                for row in key_mask {
                    let start = values.len();
                    for i in rows.clone() {
                        let q = past + i;
                        values.extend(
                            row[..keys]
                                .iter()
                                .enumerate()
                                .map(|(j, &keep)| if keep && j <= q { 0.0f32 } else { 1.0 }),
                        );
                    }
                    for _ in 1..heads {
                        values.extend_from_within(start..start + rows.len() * keys);
                    }
                }
                if values.iter().all(|&m| m == 0.0) {
                    return (rows, None);
                }
                let shape = [batch, heads, rows.len(), keys];
                let masked = Tensor::<B, 4>::from_data(TensorData::new(values, shape), device);
                let min = mask_min(masked.dtype());
                (rows, Some(masked.mul_scalar(min)))
            })
            .collect();
        Self { past, blocks }
    }

    /// Cached positions before the new queries.
    pub fn past(&self) -> usize {
        self.past
    }

    /// The query blocks and their masks `[batch, heads, rows, past + rows.end]`.
    pub fn blocks(&self) -> &[(Range<usize>, Option<Tensor<B, 4>>)] {
        &self.blocks
    }
}

/// The value the additive mask puts on hidden keys, for the float type scores are computed in:
/// `f32::MIN` in f32 (transformers' `finfo.min`); half of the type's lowest value in f16 and
/// bf16, so that `score + mask` stays finite. (`f32::MIN` cast to f16 is `-inf`: a padding
/// query that sees no key would then softmax to NaN, and the NaN would reach real tokens
/// through the values of the next layer.)
pub fn mask_min(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => f32::from(half::f16::MIN) / 2.0,
        DType::BF16 => f32::from(half::bf16::MIN) / 2.0,
        _ => f32::MIN,
    }
}

/// Multi-head attention with `heads` query heads sharing `kv_heads` key/value heads.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[hidden] -> [heads * head_dim]`.
    pub q_proj: Proj<B>,
    /// `[hidden] -> [kv_heads * head_dim]`.
    pub k_proj: Proj<B>,
    /// `[hidden] -> [kv_heads * head_dim]`.
    pub v_proj: Proj<B>,
    /// `[heads * head_dim] -> [hidden]`.
    pub o_proj: Proj<B>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// `x [batch, seq, hidden]` -> `[batch, seq, hidden]`.
    ///
    /// `rope` holds the rotation tables of the new positions, `bias` the additive mask cut
    /// into query blocks ([`AttentionBias`]); with a cache, the new keys and values are
    /// appended to layer `layer` and attention covers all of them.
    ///
    /// Layouts avoid copies: q, k, v stay `[batch, seq, heads, head_dim]` as the projections
    /// write them (RoPE is then a same-shape product); the query heads of each KV group are
    /// viewed as `[batch, kv_heads, n_rep, seq, head_dim]` and multiplied with the group's
    /// keys broadcast over `n_rep`, so keys and values are never repeated (HF's `repeat_kv`)
    /// nor transposed into new buffers. Only the attention output is copied once into
    /// `[batch, seq, heads * head_dim]` for `o_proj`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        bias: &AttentionBias<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
        ranks: &SampleRanks,
    ) -> Tensor<B, 3> {
        let s = x.dims()[1];
        let (q, k, v) = self.project(x, rope, ranks);
        let out = self.attend(q, k, v, bias, cache);
        self.o_proj.forward(self.merge_heads(&out, &(0..s)), ranks)
    }

    /// The rotated, scaled queries `[batch, seq, heads, head_dim]` and the rotated keys and the
    /// values `[batch, seq, kv_heads, head_dim]` of `x [batch, seq, hidden]` (position-wise:
    /// rows of `x` can be projected apart, with the matching rows of `rope`).
    pub fn project(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        ranks: &SampleRanks,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let q = self.q_proj.forward(x.clone(), ranks).reshape([b, s, h, d]);
        let k = self
            .k_proj
            .forward(x.clone(), ranks)
            .reshape([b, s, kvh, d]);
        let v = self.v_proj.forward(x, ranks).reshape([b, s, kvh, d]);
        // HF scales the scores by 1/sqrt(d); scaling q first is the same product (exact for
        // a power-of-two d) on fewer elements.
        let q = apply_rotary(q, &rope.cos_q, &rope.sin_q).mul_scalar((d as f64).powf(-0.5));
        let k = apply_rotary(k, &rope.cos_k, &rope.sin_k);
        (q, k, v)
    }

    /// Attention of `q [batch, seq, heads, head_dim]` over the cached keys and values and
    /// `k, v [batch, seq, kv_heads, head_dim]` (appended to the cache's layer `layer` first),
    /// per KV group: `[batch, kv_heads, heads / kv_heads, seq, head_dim]`
    /// ([`Attention::merge_heads`] lays rows of it out for `o_proj`).
    pub fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        bias: &AttentionBias<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 5> {
        let [b, s, _, _] = q.dims();
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let n_rep = h / kvh;
        // [b, t, kvh, d] with t = past + s
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let t = k.dims()[1];
        // Views: q [b, kvh, n_rep, s, d]; k^T [b, kvh, 1, d, t]; v [b, kvh, 1, t, d].
        let q = q.reshape([b, s, kvh, n_rep, d]).permute([0, 2, 3, 1, 4]);
        let kt = k.reshape([b, t, kvh, 1, d]).permute([0, 2, 3, 4, 1]);
        let v = v.reshape([b, t, kvh, 1, d]).permute([0, 2, 3, 1, 4]);

        // Query blocks over their visible keys (sdpa: causal blocks skip the hidden ones).
        let blocks: Vec<_> = bias
            .blocks()
            .iter()
            .map(|(rows, m)| {
                let keys = bias.past() + rows.end;
                sdpa::QueryBlock {
                    rows: rows.clone(),
                    keys,
                    bias: m
                        .clone()
                        .map(|m| m.reshape([b, kvh, n_rep, rows.len(), keys])),
                }
            })
            .collect();
        sdpa::attention(q, kt, v, &blocks) // [b, kvh, n_rep, s, d]
    }

    /// Rows `rows` of [`Attention::attend`]'s output as `o_proj`'s input,
    /// `[batch, rows, heads * head_dim]` (one copy).
    pub fn merge_heads(&self, out: &Tensor<B, 5>, rows: &Range<usize>) -> Tensor<B, 3> {
        let b = out.dims()[0];
        sdpa::narrow_rows(out, 3, rows)
            .permute([0, 3, 1, 2, 4])
            .reshape([b, rows.len(), self.heads * self.head_dim])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_value_stays_finite_in_every_float_type() {
        assert_eq!(mask_min(DType::F32), f32::MIN);
        // f16: lowest finite value -65504, halved; adding a score of -1000 stays finite.
        assert_eq!(mask_min(DType::F16), -32752.0);
        assert!(half::f16::from_f32(mask_min(DType::F16) - 1000.0).is_finite());
        assert!(half::bf16::from_f32(mask_min(DType::BF16) - 1e30).is_finite());
        // What the mask used to be: f32::MIN is -inf in f16.
        assert!(half::f16::from_f32(f32::MIN).is_infinite());
    }
}
