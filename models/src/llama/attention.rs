//! Grouped-query self-attention with rotate-half RoPE, an additive causal + padding mask and
//! an optional KV cache.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use flexi_burn::SampleRanks;

use super::linear::Proj;
use super::rope::apply_rotary;

/// Keys and values of earlier positions, one entry per layer: `k, v [batch, kv_heads, past,
/// head_dim]`, after RoPE and before the GQA repeat.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` decoder layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
        }
    }

    /// Cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `k, v [batch, kv_heads, new, head_dim]` to layer `layer`, returning the full
    /// `[batch, kv_heads, past + new, head_dim]` tensors.
    fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (k, v) = match self.layers[layer].take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// The additive attention mask `[batch, 1, new, past + new]`: 0 where query `i` (absolute
/// index `past + i`) may attend key `j` (`j <= past + i` and `key_mask[b][j]`), a large
/// negative number elsewhere ([`mask_min`] of the device's float type). Rows of padding queries
/// see nothing; their outputs are unused.
pub fn attention_bias<B: Backend>(
    key_mask: &[Vec<bool>],
    new: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let batch = key_mask.len();
    let total = key_mask.first().map_or(0, Vec::len);
    let past = total - new;
    let mut values = Vec::with_capacity(batch * new * total);
    for row in key_mask {
        for i in 0..new {
            let q = past + i;
            values.extend(
                row.iter()
                    .enumerate()
                    .map(|(j, &keep)| if keep && j <= q { 0.0f32 } else { 1.0 }),
            );
        }
    }
    let masked = Tensor::<B, 4>::from_data(TensorData::new(values, [batch, 1, new, total]), device);
    let min = mask_min(masked.dtype());
    masked.mul_scalar(min)
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
    /// `cos, sin [batch, 1, seq, head_dim]` are the RoPE tables of the new positions, `bias`
    /// the additive mask `[batch, 1, seq, past + seq]` ([`attention_bias`]); with a cache,
    /// the new keys and values are appended to layer `layer` and attention covers all of them.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        bias: Tensor<B, 4>,
        cache: Option<(&mut KvCache<B>, usize)>,
        ranks: &SampleRanks,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);

        // [b, s, h * d] -> [b, h, s, d]
        let q = self
            .q_proj
            .forward(x.clone(), ranks)
            .reshape([b, s, h, d])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone(), ranks)
            .reshape([b, s, kvh, d])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x, ranks)
            .reshape([b, s, kvh, d])
            .swap_dims(1, 2);
        let q = apply_rotary(q, cos, sin);
        let k = apply_rotary(k, cos, sin);

        // [b, kvh, t, d] with t = past + s
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let k = repeat_kv(k, h / kvh); // [b, h, t, d]
        let v = repeat_kv(v, h / kvh);

        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar((d as f64).powf(-0.5))
            .add(bias); // [b, h, s, t]
        let probs = softmax(scores, 3);
        let out = probs.matmul(v); // [b, h, s, d]
        let out = out.swap_dims(1, 2).reshape([b, s, h * d]);
        self.o_proj.forward(out, ranks)
    }
}

/// `[b, kv_heads, t, d] -> [b, kv_heads * n_rep, t, d]`, each KV head repeated for the
/// `n_rep` query heads of its group (HF's `repeat_kv`).
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n_rep: usize) -> Tensor<B, 4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kvh, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kvh, n_rep, t, d])
        .reshape([b, kvh * n_rep, t, d])
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
