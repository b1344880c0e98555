//! The decoder: token embedding, `num_hidden_layers` pre-norm blocks, final RMSNorm and a
//! tied or untied LM head.
//!
//! ```text
//! h = embed(ids)                                  [b, s, hidden]
//! for each layer:
//!     h = h + attn(rms_norm(h), rope, mask)       (q/k/v/o adapted per sample rank)
//!     h = h + mlp(rms_norm(h))                    (gate/up/down adapted per sample rank)
//! logits = lm_head(rms_norm(h))                   [b, s, vocab]
//! ```

use std::ops::Range;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use flexi_burn::SampleRanks;

use super::attention::{Attention, AttentionBias, KvCache};
use super::config::LlamaConfig;
use super::error::{LlamaError, Result};
use super::mlp::Mlp;
use super::rope::{RopeTables, RotaryEmbedding};
use crate::sdpa;

/// Root-mean-square layer norm: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale `[hidden]` (HF `*.weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// `x [..., hidden]`, normalised over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let rms = x
            .clone()
            .powi_scalar(2)
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        let weight = self.weight.val().unsqueeze::<D>();
        x.div(rms).mul(weight)
    }
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// SwiGLU MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// The hidden states `x [b, s, hidden]` of the forward pass `ctx` describes
    /// ([`Llama::layer_context`]) through this block, without a cache: what
    /// [`Llama::hidden`] computes layer by layer, one layer at a time.
    pub fn forward_in(
        &self,
        x: Tensor<B, 3>,
        ctx: &LayerContext<B>,
        ranks: &SampleRanks,
    ) -> Tensor<B, 3> {
        let xs = ctx
            .parts
            .iter()
            .map(|rows| sdpa::narrow_rows(&x, 1, rows))
            .collect();
        let xs = self.forward(xs, &ctx.parts, &ctx.ropes, &ctx.bias, None, ranks);
        sdpa::cat_parts(xs, 1)
    }

    /// The hidden states of the rows `parts` of the sequence (`xs[i]` holds rows `parts[i]`,
    /// `[batch, rows, hidden]`) through the block, in the same parts.
    ///
    /// Everything but attention itself is position-wise: on the CPU without autodiff a long
    /// sequence comes in two halves ([`sdpa::parallel_halves`]) that run on two threads
    /// (burn-flex runs the norms, RoPE, SiLU and the adapters' small products on the calling
    /// thread), and attention runs its query blocks side by side ([`sdpa::attention`]). The
    /// parts stay apart from layer to layer, each its own buffer (burn-flex's fast elementwise
    /// paths want an operand at offset 0); otherwise there is one part and nothing is split.
    fn forward(
        &self,
        xs: Vec<Tensor<B, 3>>,
        parts: &[Range<usize>],
        ropes: &[RopeTables<B>],
        bias: &AttentionBias<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
        ranks: &SampleRanks,
    ) -> Vec<Tensor<B, 3>> {
        let projected = sdpa::map_parts(parts, |i, _| {
            let h = self.input_layernorm.forward(xs[i].clone());
            self.self_attn.project(h, &ropes[i], ranks)
        });
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for (qi, ki, vi) in projected {
            q.push(qi);
            k.push(ki);
            v.push(vi);
        }
        let (q, k, v) = (
            sdpa::cat_parts(q, 1),
            sdpa::cat_parts(k, 1),
            sdpa::cat_parts(v, 1),
        );
        let att = self.self_attn.attend(q, k, v, bias, cache); // [b, kvh, n_rep, s, head_dim]
        sdpa::map_parts(parts, |i, rows| {
            let h = self
                .self_attn
                .o_proj
                .forward(self.self_attn.merge_heads(&att, &rows), ranks);
            let x = xs[i].clone().add(h);
            let h = self
                .mlp
                .forward(self.post_attention_layernorm.forward(x.clone()), ranks);
            x.add(h)
        })
    }
}

/// What every decoder layer of one forward pass shares: the rows the sequence is split into
/// (one part under autodiff, see [`DecoderLayer::forward`]), their RoPE tables, the attention
/// bias (causal and padding masks) and the token ids. Built by [`Llama::layer_context`].
#[derive(Clone, Debug)]
pub struct LayerContext<B: Backend> {
    parts: Vec<Range<usize>>,
    ropes: Vec<RopeTables<B>>,
    bias: AttentionBias<B>,
    ids: Tensor<B, 2, Int>,
}

/// A Llama-family causal language model whose targeted projections are Flexi-LoRA layers.
///
/// Build it with [`crate::llama::load_llama`] from a Hugging Face directory.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder blocks.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Untied LM head (Burn layout `[hidden, vocab]`); `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// The configuration the model was built from.
    pub config: LlamaConfig,
    /// RoPE frequencies.
    pub rope: RotaryEmbedding,
}

/// A left-padded batch on the host: `ids[b][t]`, `mask[b][t]` (`true` = real token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaddedBatch {
    /// Token ids, every row of the same length.
    pub ids: Vec<Vec<u32>>,
    /// Attention mask, `false` on padding.
    pub mask: Vec<Vec<bool>>,
}

impl PaddedBatch {
    /// Left-pads `seqs` with `pad_id` to the longest one.
    pub fn left_pad(seqs: &[Vec<u32>], pad_id: u32) -> Self {
        let n = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let ids = seqs
            .iter()
            .map(|s| {
                let mut row = vec![pad_id; n - s.len()];
                row.extend_from_slice(s);
                row
            })
            .collect();
        let mask = seqs
            .iter()
            .map(|s| {
                let mut row = vec![false; n - s.len()];
                row.extend(std::iter::repeat_n(true, s.len()));
                row
            })
            .collect();
        Self { ids, mask }
    }

    /// Samples in the batch.
    pub fn batch(&self) -> usize {
        self.ids.len()
    }

    /// Padded length.
    pub fn seq_len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    /// Position ids as `generate` computes them: `cumsum(mask) - 1`, 0 on padding, so a padded
    /// sample sees the same positions as unpadded.
    pub fn positions(&self) -> Vec<Vec<usize>> {
        self.mask
            .iter()
            .map(|row| {
                let mut seen = 0usize;
                row.iter()
                    .map(|&m| {
                        if m {
                            seen += 1;
                            seen - 1
                        } else {
                            0
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// `ids` as an int tensor `[batch, seq]`.
    pub fn ids_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        let flat: Vec<i64> = self.ids.iter().flatten().map(|&t| t as i64).collect();
        Tensor::from_data(
            TensorData::new(flat, [self.batch(), self.seq_len()]),
            device,
        )
    }

    /// Labels `[batch, seq]` for [`causal_lm_loss`]: the ids, with `ignore_index` on padding
    /// and on each row's first real token. That token has no context to be predicted from:
    /// in a left-padded row its prediction would come from a padding position, whose fully
    /// masked attention row is ill-defined (transformers' eager and sdpa paths disagree on
    /// it and on its gradients).
    pub fn labels<B: Backend>(&self, ignore_index: i64, device: &B::Device) -> Tensor<B, 2, Int> {
        let flat: Vec<i64> = self
            .ids
            .iter()
            .zip(&self.mask)
            .flat_map(|(ids, mask)| {
                let first = mask.iter().position(|m| *m);
                ids.iter().zip(mask).enumerate().map(move |(t, (&id, &m))| {
                    if m && Some(t) != first {
                        id as i64
                    } else {
                        ignore_index
                    }
                })
            })
            .collect();
        Tensor::from_data(
            TensorData::new(flat, [self.batch(), self.seq_len()]),
            device,
        )
    }

    fn check(&self) -> Result<()> {
        let n = self.seq_len();
        if self.ids.is_empty() || n == 0 {
            return Err(LlamaError::InvalidInput(
                "empty batch or empty sequences".into(),
            ));
        }
        if self.mask.len() != self.ids.len()
            || self.ids.iter().any(|r| r.len() != n)
            || self.mask.iter().any(|r| r.len() != n)
        {
            return Err(LlamaError::InvalidInput(
                "ids and mask must be [batch, seq] with every row of the same length".into(),
            ));
        }
        Ok(())
    }
}

impl<B: Backend> Llama<B> {
    /// Logits `[batch, seq, vocab]` of a left-padded batch (no cache).
    ///
    /// Errors on a sequence longer than `max_position_embeddings`, a token id outside the
    /// vocabulary, or ranks that do not fit the batch or exceed the adapters' `r_max` (a model
    /// built without adapters ignores the ranks).
    pub fn forward(&self, batch: &PaddedBatch, ranks: &SampleRanks) -> Result<Tensor<B, 3>> {
        batch.check()?;
        self.forward_step(batch, &batch.mask, &batch.positions(), None, ranks)
    }

    /// Logits from tensors: `input_ids [batch, seq]` and an optional `attention_mask
    /// [batch, seq]` (1 = token, 0 = padding; left padding expected). Both are read back to
    /// the host to build the mask and positions.
    pub fn forward_ids(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 3>> {
        let [b, s] = input_ids.dims();
        let ids = int_rows(input_ids, b, s)?;
        let mask = match attention_mask {
            None => vec![vec![true; s]; b],
            Some(m) => {
                if m.dims() != [b, s] {
                    return Err(LlamaError::InvalidInput(format!(
                        "attention_mask has shape {:?}, input_ids [{b}, {s}]",
                        m.dims()
                    )));
                }
                int_rows(m, b, s)?
                    .into_iter()
                    .map(|r| r.into_iter().map(|v| v != 0).collect())
                    .collect()
            }
        };
        let ids = ids
            .into_iter()
            .enumerate()
            .map(|(sample, row)| {
                row.into_iter()
                    .map(|t| {
                        u32::try_from(t).map_err(|_| LlamaError::TokenOutOfRange {
                            sample,
                            id: t,
                            vocab: self.config.vocab_size,
                        })
                    })
                    .collect::<Result<Vec<u32>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        self.forward(&PaddedBatch { ids, mask }, ranks)
    }

    /// One forward step over new tokens `batch.ids [b, new]`, attending to everything in
    /// `cache` (if any) and the new tokens. `key_mask [b][past + new]` marks real tokens;
    /// `positions [b][new]` are the RoPE positions of the new tokens. Returns logits
    /// `[b, new, vocab]`.
    pub fn forward_step(
        &self,
        batch: &PaddedBatch,
        key_mask: &[Vec<bool>],
        positions: &[Vec<usize>],
        cache: Option<&mut KvCache<B>>,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 3>> {
        let h = self.hidden_step(batch, key_mask, positions, cache, ranks)?;
        Ok(self.lm_head(h))
    }

    /// Like [`Llama::forward_step`], but the logits `[b, vocab]` of the last new position
    /// only (transformers' `logits_to_keep = 1`): what generation needs, without the LM head
    /// over the whole prompt.
    pub fn forward_last(
        &self,
        batch: &PaddedBatch,
        key_mask: &[Vec<bool>],
        positions: &[Vec<usize>],
        cache: Option<&mut KvCache<B>>,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 2>> {
        let h = self.hidden_step(batch, key_mask, positions, cache, ranks)?;
        let [b, s, d] = h.dims();
        let last = h.slice([0..b, s - 1..s, 0..d]);
        Ok(self.lm_head_rows(last.reshape([b, d])))
    }

    /// The final hidden states `[batch, seq, hidden]` (after the last RMSNorm, before the LM
    /// head) of a left-padded batch, no cache.
    pub fn hidden(&self, batch: &PaddedBatch, ranks: &SampleRanks) -> Result<Tensor<B, 3>> {
        batch.check()?;
        self.hidden_step(batch, &batch.mask, &batch.positions(), None, ranks)
    }

    /// The hidden states `[batch, seq, hidden]` after the first `layers` decoder layers of a
    /// left-padded batch at rank 0 (the base model), no cache: `0` is the token embedding,
    /// `num_hidden_layers` the final-normed output of [`Llama::hidden`]. What a hidden-state
    /// router pools.
    pub fn hidden_after(&self, batch: &PaddedBatch, layers: usize) -> Result<Tensor<B, 3>> {
        batch.check()?;
        if layers > self.layers.len() {
            return Err(LlamaError::InvalidInput(format!(
                "hidden states after {layers} layers: the model has {}",
                self.layers.len()
            )));
        }
        let ranks = SampleRanks::uniform(batch.batch(), 0);
        self.run_layers(batch, &batch.mask, &batch.positions(), None, &ranks, layers)
    }

    /// [`Llama::forward_step`] before the LM head: the final-normed hidden states
    /// `[b, new, hidden]`.
    pub fn hidden_step(
        &self,
        batch: &PaddedBatch,
        key_mask: &[Vec<bool>],
        positions: &[Vec<usize>],
        cache: Option<&mut KvCache<B>>,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 3>> {
        self.run_layers(batch, key_mask, positions, cache, ranks, self.layers.len())
    }

    /// The first `stop` decoder layers (all of them: then the final RMSNorm too).
    fn run_layers(
        &self,
        batch: &PaddedBatch,
        key_mask: &[Vec<bool>],
        positions: &[Vec<usize>],
        mut cache: Option<&mut KvCache<B>>,
        ranks: &SampleRanks,
        stop: usize,
    ) -> Result<Tensor<B, 3>> {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let ctx = self.context(batch, key_mask, positions, past, ranks)?;
        if let Some(cache) = cache.as_deref_mut() {
            cache
                .check_ranks(ranks.as_slice())
                .map_err(|cached| LlamaError::CacheRanks {
                    cached,
                    given: ranks.as_slice().to_vec(),
                })?;
        }
        let parts = &ctx.parts;
        let dtype = self.norm.weight.val().dtype();
        let mut xs: Vec<Tensor<B, 3>> = parts
            .iter()
            .map(|rows| self.embed(sdpa::narrow_rows(&ctx.ids, 1, rows)).cast(dtype))
            .collect();
        for (i, layer) in self.layers.iter().enumerate().take(stop) {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            xs = layer.forward(xs, parts, &ctx.ropes, &ctx.bias, layer_cache, ranks);
        }
        if stop < self.layers.len() {
            return Ok(sdpa::cat_parts(xs, 1));
        }
        let xs = sdpa::map_parts(parts, |i, _| self.norm.forward(xs[i].clone()));
        Ok(sdpa::cat_parts(xs, 1))
    }

    /// Checks a forward pass's inputs (`past` cached positions before the new ones) and
    /// builds what every layer of it shares.
    fn context(
        &self,
        batch: &PaddedBatch,
        key_mask: &[Vec<bool>],
        positions: &[Vec<usize>],
        past: usize,
        ranks: &SampleRanks,
    ) -> Result<LayerContext<B>> {
        let device = self.embed_tokens.weight.device();
        let (b, new) = (batch.batch(), batch.seq_len());
        let total = past + new;
        if key_mask.len() != b || key_mask.iter().any(|r| r.len() != total) {
            return Err(LlamaError::InvalidInput(format!(
                "key mask must be [{b}][{total}] (cache {past} + new {new})"
            )));
        }
        if positions.len() != b || positions.iter().any(|r| r.len() != new) {
            return Err(LlamaError::InvalidInput(format!(
                "positions must be [{b}][{new}]"
            )));
        }
        let max = self.config.max_position_embeddings;
        for (sample, row) in key_mask.iter().enumerate() {
            let len = row.iter().filter(|m| **m).count();
            if len > max || positions[sample].iter().any(|p| *p >= max) {
                return Err(LlamaError::ContextOverflow { sample, len, max });
            }
        }
        for (sample, row) in batch.ids.iter().enumerate() {
            if let Some(&id) = row.iter().find(|&&t| t as usize >= self.config.vocab_size) {
                return Err(LlamaError::TokenOutOfRange {
                    sample,
                    id: id as i64,
                    vocab: self.config.vocab_size,
                });
            }
        }
        // Ranks above the adapters' r_max are refused here rather than panicking in a layer; a
        // model without adapters ignores its ranks.
        let r_max = match self.r_max() {
            0 => usize::MAX,
            r => r,
        };
        ranks.validate(b, r_max)?;

        let c = &self.config;
        let (heads, kv_heads) = (c.num_attention_heads, c.num_key_value_heads);
        let bias = AttentionBias::<B>::new(key_mask, new, heads, &device); // per query block
        // [b, new, hidden] in one or two parts of rows (DecoderLayer::forward), in the norms'
        // type (f32 under mixed precision: the embedding table may be stored in a half type,
        // the residual stream is not).
        let parts = sdpa::parallel_halves::<B>(new, &device);
        // RoPE tables of each part's positions, [b, rows, h, d] (own buffers, see above).
        let ropes: Vec<RopeTables<B>> = parts
            .iter()
            .map(|rows| {
                let pos: Vec<Vec<usize>> =
                    positions.iter().map(|p| p[rows.clone()].to_vec()).collect();
                self.rope.tables::<B>(&pos, heads, kv_heads, &device)
            })
            .collect();
        Ok(LayerContext {
            parts,
            ropes,
            bias,
            ids: batch.ids_tensor(&device),
        })
    }

    /// What the decoder layers of one forward pass over a left-padded batch (no cache) share:
    /// for running the layers one at a time ([`Llama::layer_input`],
    /// [`DecoderLayer::forward_in`], [`Llama::norm`]) as per-layer recomputation does. The
    /// same checks as [`Llama::hidden`].
    pub fn layer_context(
        &self,
        batch: &PaddedBatch,
        ranks: &SampleRanks,
    ) -> Result<LayerContext<B>> {
        batch.check()?;
        self.context(batch, &batch.mask, &batch.positions(), 0, ranks)
    }

    /// The first layer's input `[b, s, hidden]`: the token embedding of the context's batch,
    /// in the residual stream's type.
    pub fn layer_input(&self, ctx: &LayerContext<B>) -> Tensor<B, 3> {
        let dtype = self.norm.weight.val().dtype();
        self.embed(ctx.ids.clone()).cast(dtype)
    }

    /// The token embedding of `ids [b, s]`: `[b, s, hidden]`. Training on burn-flex takes our
    /// own autodiff operation (its backward adds rows into the tied head's gradient in place).
    fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        #[cfg(feature = "flex")]
        {
            match crate::host_train::embedding_autodiff(self.embed_tokens.weight.val(), ids) {
                Ok(x) => x,
                Err((weight, ids)) => burn::tensor::module::embedding(weight, ids),
            }
        }
        #[cfg(not(feature = "flex"))]
        self.embed_tokens.forward(ids)
    }

    /// `h [b, s, hidden] -> logits [b, s, vocab]`, through the untied head or `embed^T`.
    pub fn lm_head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = h.dims();
        let logits = self.lm_head_rows(h.reshape([b * s, d]));
        let v = logits.dims()[1];
        logits.reshape([b, s, v])
    }

    /// The LM head as one matrix `[hidden, vocab]` (`logits = h W`): the tied embedding's
    /// transposed view or the untied head's weight; `None` for a head with a bias.
    pub fn head_weight(&self) -> Option<Tensor<B, 2>> {
        match &self.lm_head {
            Some(head) if head.bias.is_none() => Some(head.weight.val()),
            Some(_) => None,
            None => Some(self.embed_tokens.weight.val().transpose()),
        }
    }

    /// `h [rows, hidden] -> logits [rows, vocab]` as one 2-D matmul. The tied head multiplies
    /// by the strided view `embed^T` directly (the CPU gemm reads any strides; a 3-D input
    /// would make Burn copy the whole transposed embedding on every call).
    pub fn lm_head_rows(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.lm_head {
            Some(head) => flexi_burn::linear_rows(h, head),
            None => flexi_burn::linear_mixed(h, self.embed_tokens.weight.val().transpose(), None),
        }
    }

    /// The frozen weights (token embedding, LM head, every projection's base) stored in
    /// `precision`'s type, for mixed precision ([`flexi_burn::precision`]); norms, the
    /// adapters and any weight that trains keep their type. `f32` means the model's own
    /// float type (its norms'): nothing changes on a model loaded in full precision (on an
    /// f16 backend too), and half-stored weights are widened back to it.
    pub fn store_frozen_in(mut self, precision: flexi_burn::Precision) -> Self {
        let dtype = precision
            .half()
            .unwrap_or_else(|| self.norm.weight.val().dtype().into());
        self.embed_tokens.weight = flexi_burn::store_frozen(self.embed_tokens.weight, dtype);
        self.lm_head = self
            .lm_head
            .map(|h| flexi_burn::store_frozen_linear(h, dtype));
        self.layers = self
            .layers
            .into_iter()
            .map(|mut l| {
                let a = l.self_attn;
                l.self_attn = Attention {
                    q_proj: a.q_proj.store_frozen(dtype),
                    k_proj: a.k_proj.store_frozen(dtype),
                    v_proj: a.v_proj.store_frozen(dtype),
                    o_proj: a.o_proj.store_frozen(dtype),
                    ..a
                };
                let m = l.mlp;
                l.mlp = Mlp {
                    gate_proj: m.gate_proj.store_frozen(dtype),
                    up_proj: m.up_proj.store_frozen(dtype),
                    down_proj: m.down_proj.store_frozen(dtype),
                };
                l
            })
            .collect();
        self
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }

    /// The largest LoRA rank over the adapted projections (0 without an adapter).
    pub fn r_max(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    &l.self_attn.q_proj,
                    &l.self_attn.k_proj,
                    &l.self_attn.v_proj,
                    &l.self_attn.o_proj,
                    &l.mlp.gate_proj,
                    &l.mlp.up_proj,
                    &l.mlp.down_proj,
                ]
            })
            .filter_map(|p| p.adapter().map(|a| a.r_max()))
            .max()
            .unwrap_or(0)
    }
}

fn int_rows<B: Backend>(t: Tensor<B, 2, Int>, b: usize, s: usize) -> Result<Vec<Vec<i64>>> {
    let data = t
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .map_err(|e| LlamaError::InvalidInput(format!("cannot read int tensor: {e:?}")))?;
    Ok((0..b).map(|i| data[i * s..(i + 1) * s].to_vec()).collect())
}

/// [`causal_lm_loss`] from the final hidden states, with the LM head applied only where a
/// label is read: the same mean cross-entropy (up to f32 summation order) without the
/// `[b, s, vocab]` logits of positions that predict nothing (the prompt of a fine-tuning
/// example, padding). `labels [b * s]` are row-major on the host, `ignore_index` skipped;
/// position `t` predicts `labels[t + 1]`.
///
/// # Errors
/// When `labels` is not `b * s` long or no position carries a label.
pub fn causal_lm_loss_from_hidden<B: Backend>(
    model: &Llama<B>,
    hidden: Tensor<B, 3>,
    labels: &[i64],
    ignore_index: i64,
) -> Result<Tensor<B, 1>> {
    let [b, s, d] = hidden.dims();
    if labels.len() != b * s {
        return Err(LlamaError::InvalidInput(format!(
            "labels hold {} values for a [{b}, {s}] batch",
            labels.len()
        )));
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for i in 0..b {
        for t in 0..s.saturating_sub(1) {
            let label = labels[i * s + t + 1];
            if label != ignore_index {
                if label < 0 || label as usize >= model.config.vocab_size {
                    return Err(LlamaError::TokenOutOfRange {
                        sample: i,
                        id: label,
                        vocab: model.config.vocab_size,
                    });
                }
                rows.push((i * s + t) as i64);
                targets.push(label);
            }
        }
    }
    let n = rows.len();
    if n == 0 {
        return Err(LlamaError::InvalidInput(
            "no position of the batch carries a label".into(),
        ));
    }
    let device = hidden.device();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
    let h = hidden.reshape([b * s, d]).select(0, rows); // [n, hidden]
    // Training on burn-flex: the head and the loss as one operation over chunks of rows.
    #[cfg(feature = "flex")]
    let h = match model.head_weight() {
        Some(w) => {
            let t: Vec<usize> = targets.iter().map(|&t| t as usize).collect();
            match crate::host_loss::linear_cross_entropy_autodiff(h, w, &t) {
                Ok(loss) => return Ok(loss),
                Err((h, _)) => h,
            }
        }
        None => h,
    };
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let logits = model.lm_head_rows(h); // [n, vocab]
    let logp = log_softmax(logits, 1).gather(1, targets); // [n, 1]
    Ok(logp.mean().neg())
}

/// Causal LM cross-entropy as transformers computes it: logits `[b, s, v]` at position `t`
/// predict `labels[:, t + 1]`; labels equal to `ignore_index` (HF: -100) are skipped; the
/// result `[1]` is the mean over the remaining targets.
pub fn causal_lm_loss<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    ignore_index: i64,
) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    let logits = logits.slice([0..b, 0..s - 1, 0..v]); // [b, s-1, v]
    let targets = labels.slice([0..b, 1..s]); // [b, s-1]
    let keep = targets.clone().not_equal_elem(ignore_index); // [b, s-1]
    let safe = targets.mask_fill(keep.clone().bool_not(), 0);
    let logp = log_softmax(logits, 2)
        .gather(2, safe.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2); // [b, s-1]
    let keep = keep.float();
    let count = keep.clone().sum();
    logp.mul(keep).sum().neg().div(count)
}

impl<B: Backend> flexi_burn::Adapters<B> for Llama<B> {
    fn adapters(&self) -> Vec<(String, &flexi_burn::FlexiLinear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let (a, m) = (&l.self_attn, &l.mlp);
            out.extend(crate::proj::adapted(
                &format!("layers.{i}"),
                [
                    ("self_attn.q_proj", &a.q_proj),
                    ("self_attn.k_proj", &a.k_proj),
                    ("self_attn.v_proj", &a.v_proj),
                    ("self_attn.o_proj", &a.o_proj),
                    ("mlp.gate_proj", &m.gate_proj),
                    ("mlp.up_proj", &m.up_proj),
                    ("mlp.down_proj", &m.down_proj),
                ],
            ));
        }
        out
    }

    fn adapters_mut(&mut self) -> Vec<(String, &mut flexi_burn::FlexiLinear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let (a, m) = (&mut l.self_attn, &mut l.mlp);
            out.extend(crate::proj::adapted_mut(
                &format!("layers.{i}"),
                [
                    ("self_attn.q_proj", &mut a.q_proj),
                    ("self_attn.k_proj", &mut a.k_proj),
                    ("self_attn.v_proj", &mut a.v_proj),
                    ("self_attn.o_proj", &mut a.o_proj),
                    ("mlp.gate_proj", &mut m.gate_proj),
                    ("mlp.up_proj", &mut m.up_proj),
                    ("mlp.down_proj", &mut m.down_proj),
                ],
            ));
        }
        out
    }
}
