//! Peak host memory of a training step, predicted from the configuration (issue 19's
//! planner, `cargo xtask plan`).
//!
//! The prediction has an analytic structure ([`plan_terms`]: exact counts) and constants
//! measured on this project's CPU backend (flex, f32; [`plan`] scales and adds):
//!
//! ```text
//! peak = RUNTIME + weights (+ BF16_LM_HEAD_COPIES x vocab x hidden x 4 B under bf16)
//!        + (STATE + shards) x trainable x 4 B (+ MASTERS x half-stored trained matrices x 4 B)
//!        + (ACT x saved per token x tokens + ACT_ATTENTION x 2 x heads x scores) x layers x 4 B
//!        + LM_HEAD x answer tokens x vocab x 4 B
//! ```
//!
//! - *weights*: every parameter of the model in f32 (frozen and trainable alike); under mixed
//!   precision (`TrainConfig::precision` bf16 / f16) the matrices (projections, embedding,
//!   untied LM head) at 2 bytes and norms and biases at 4, plus under bf16
//!   [`BF16_LM_HEAD_COPIES`] f32 copies of the LM head's matrix (flex's bf16 matmul). The
//!   activation constants are the f32 ones: the saved activations stay f32 (half-precision
//!   runs return freed pages to the kernel, `xtask::alloc`, which the measured rows include).
//! - *trainable state*: AdamW's two moments plus the gradients of the concurrent shards; the
//!   peak holds one copy of the trainable parameters per shard (each shard's backward pass
//!   makes its own gradients; `Trainer::shards`, every core on the CPU by default) and about
//!   [`STATE`] more (moments, the sum, slack; gradients of late layers accumulate while
//!   activations of early layers are still held). For full fine-tuning on a many-core CPU
//!   the per-shard copies dominate: fewer threads plan (and use) less. Full fine-tuning under
//!   mixed precision adds the f32 masters of the half-stored matrices ([`MASTERS`]).
//! - *saved activations*: what Burn's autodiff keeps for the backward pass, counted op by op
//!   from the decoder layer (`models::llama`), f32 elements per token and layer:
//!   the layer input and the input of the post-attention norm (2 x hidden), the rotated
//!   queries (heads x head_dim) and the keys and values (2 x kv_heads x head_dim) that the
//!   score and value products keep, the gate and up projections that the SwiGLU operation
//!   keeps (2 x intermediate: `models::host_train` on flex, which this planner describes;
//!   Burn's own ops on another backend keep also the sigmoid and the SiLU), the softmax's
//!   exponentials and probabilities (2 x heads per score entry: attention runs in causal
//!   query blocks, `models::sdpa::causal_blocks`, so a sequence has `scores` = seq^2 entries
//!   below 128 tokens, 0.77 seq^2 at 128, 0.64 seq^2 from 256 on, per sequence of the
//!   micro-batch); plus, where a projection trains (an adapter or full fine-tuning), the
//!   input its weight's gradient needs (the normed input of q/k/v, the attention output
//!   before o, the normed input of gate/up, the SwiGLU product before down) and each
//!   adapter's `x A` (r_max). [`ACT`] and [`ACT_ATTENTION`] scale these counts to the
//!   measured peak: the backward pass's transient gradients and the allocator's slack ride
//!   on them ([`ACT_FULL`] for full fine-tuning).
//! - *LM head*: the loss reads only answer positions (`train::lm`), so the logits are
//!   `[answer tokens, vocab]`; with an f32 head that does not train (the LoRA-family methods
//!   in f32) the head and the loss run fused over chunks of 128 rows (`models::host_loss`)
//!   and the term is one chunk's logits ([`LM_HEAD_FUSED`]); half-stored and trained heads
//!   take Burn's ops ([`LM_HEAD`], [`LM_HEAD_RECOMPUTED`]).
//!
//! With per-layer recomputation (`--checkpoint-activations`, [`ActivationCheckpointing::Layers`])
//! the saved activations are one layer's (the counts above over `layers`, same factors) plus
//! [`LAYER_INPUTS`] x every layer's input `[tokens, hidden]`, and the LM head's term is
//! [`LM_HEAD_RECOMPUTED`]: the loss's backward pass then runs alone and is the peak of a
//! LoRA step.
//!
//! With `--checkpoint-activations balanced` (Burn's `BalancedCheckpointing`) the factors are
//! [`ACT_CHECKPOINTED`] and [`ACT_ATTENTION_CHECKPOINTED`]: the strategy recomputes most of
//! the score-sized tensors (0.45 against 1.51) but holds more of the per-token ones at the
//! peak (2.05 against 1.41: recomputed tensors and the kept ones overlap in the backward
//! pass), so it lowers the peak only where the attention's scores dominate (long sequences).
//! The constants were fitted (least squares of the relative error) on the rows of
//! `tests/memory_plan.rs`, one group of constants at a time on the SmolLM2-135M-shaped rows
//! that exercise it (ACT and ACT_ATTENTION on the f32 LoRA rows, LM_HEAD on the f16 ones,
//! BF16_LM_HEAD_COPIES on the bf16 ones, STATE and ACT_FULL on full fine-tuning, the balanced
//! factors on the balanced rows, LM_HEAD_RECOMPUTED on the per-layer rows with Burn's head,
//! MASTERS on full fine-tuning in a half type; 7 Dec 2026 after the fused head) - and checked on shapes and settings they were not fitted on (Llama-3.2-1B/3B,
//! Flexi, AdaLoRA, other lengths, half precision): BENCHMARKS.md has the table of predicted
//! against measured peaks, and `tests/memory_plan.rs` holds every one of those measurements
//! to 15 % (its ignored test `terms` prints the counts the fit starts from).

use models::llama::{AdapterConfig, LlamaConfig, Target};
use serde::Serialize;

use crate::config::{ActivationCheckpointing, Method, TrainConfig};
use crate::error::{Result, TrainError};

/// Resident memory of the process before any model exists, and what the runtime, the
/// thread pools and the allocator keep (MiB, measured).
pub const RUNTIME_MIB: f64 = 150.0;
/// Copies of the trainable parameters at the peak besides one gradient per shard (AdamW's
/// two moments, the gradients' sum and slack): fitted on the full fine-tuning rows (2 shards,
/// 4.19 copies in all), where it matters.
pub const STATE: f64 = 2.19;
/// Measured peak of the activations over the op-by-op count of what autodiff saves: the
/// per-token tensors (hidden, intermediate and key/value sized).
pub const ACT: f64 = 1.41;
/// [`ACT`] for full fine-tuning (fitted with [`STATE`] on its rows): its count adds the
/// inputs of all seven products' weight gradients, tensors that other operations partly keep
/// anyway, so the peak grows by less per counted element.
pub const ACT_FULL: f64 = 0.56;
/// The same for the attention's score-sized tensors (softmax exponentials and
/// probabilities of each causal query block).
pub const ACT_ATTENTION: f64 = 1.51;
/// [`ACT`] with Burn's `BalancedCheckpointing`.
pub const ACT_CHECKPOINTED: f64 = 2.05;
/// [`ACT_ATTENTION`] with Burn's `BalancedCheckpointing` (fitted: the checkpointing
/// strategy recomputes most of the score-sized tensors in the backward pass instead of
/// keeping them).
pub const ACT_ATTENTION_CHECKPOINTED: f64 = 0.45;
/// Copies of the layers' inputs at the peak of per-layer recomputation
/// ([`ActivationCheckpointing::Layers`]).
pub const LAYER_INPUTS: f64 = 1.0;
/// Copies of the f32 masters of half-stored trained matrices at the peak (full fine-tuning
/// under mixed precision: the masters themselves plus the f32 gradients of the matrices,
/// which [`STATE`] counts for f32 parameters).
pub const MASTERS: f64 = 0.56;
/// Copies of the answer positions' logits at the peak, when Burn's ops compute the head and
/// the loss (a half-stored or trained head): the logits, their log-softmax and, in the
/// backward pass, the softmax and the logits' gradient overlap.
pub const LM_HEAD: f64 = 2.77;
/// [`LM_HEAD`] under per-layer recomputation: the loss's backward pass runs on its own there
/// (before any layer's), so the logits, their log-softmax and its gradient are all alive at
/// the step's peak instead of overlapping with freed activations. Fitted on the per-layer
/// rows of `tests/memory_plan.rs` that take Burn's head (f16, full fine-tuning).
pub const LM_HEAD_RECOMPUTED: f64 = 4.09;
/// Rows of one chunk of the fused LM head and loss (`models::host_loss::CHUNK`).
pub const LOSS_CHUNK_ROWS: usize = 128;
/// Copies of one chunk of logits `[LOSS_CHUNK_ROWS, vocab]` at the peak when the LM head and
/// the loss run fused (f32, a head that does not train: `models::host_loss`); the logits of
/// all answer positions never exist.
pub const LM_HEAD_FUSED: f64 = 1.0;
/// Under bf16 (`precision = "bf16"`), f32 copies of the LM head's `[vocab, hidden]` matrix at
/// the peak: burn-flex multiplies bf16 by converting both operands to f32 on every call, and
/// the LM head's is the largest (f16 multiplies natively, through gemm's f16 path). Fitted
/// on the bf16 rows of `tests/memory_plan.rs` (forward and backward products each convert
/// it; about three copies are alive at once).
pub const BF16_LM_HEAD_COPIES: f64 = 2.61;

const MIB: f64 = 1024.0 * 1024.0;

/// What a training step is planned for.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    /// The model's shape.
    pub model: &'a LlamaConfig,
    /// Method, adapter targets and batch size (the micro-batch: `batch_size / grad_accum`).
    pub train: &'a TrainConfig,
    /// Tokens per sequence (the padded length of a batch).
    pub seq: usize,
    /// Fraction of each sequence that carries a label (the answer).
    pub answer_frac: f64,
    /// Activation checkpointing: off, per-layer recomputation or Burn's balanced strategy.
    pub checkpointing: ActivationCheckpointing,
    /// Shards of each micro-batch computed at once (`Trainer::shards`: every core on the CPU
    /// by default): each holds a whole copy of the trainable parameters' gradients.
    pub shards: usize,
}

/// A predicted peak, by component (MiB).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryPlan {
    /// Parameters of the model.
    pub params: usize,
    /// Trainable parameters.
    pub trainable: usize,
    /// Tokens of one micro-batch.
    pub tokens: usize,
    /// Runtime, thread pools and allocator.
    pub runtime_mib: f64,
    /// Every weight: f32, or under mixed precision the frozen matrices (projections,
    /// embedding, LM head) in the half type and norms and biases in f32.
    pub weights_mib: f64,
    /// bf16 on the CPU backend: flex's f32 copies of the LM head's operands (0 otherwise).
    pub half_transient_mib: f64,
    /// Optimizer moments and gradients (and, under full fine-tuning in a half type, the f32
    /// masters).
    pub trainable_state_mib: f64,
    /// The f32 masters' part of `trainable_state_mib` (0 unless full fine-tuning in a half
    /// type).
    pub masters_mib: f64,
    /// Activations kept for the backward pass, decoder layers.
    pub activations_mib: f64,
    /// Logits of the answer positions.
    pub lm_head_mib: f64,
    /// The predicted peak resident set.
    pub total_mib: f64,
}

fn adapted(train: &TrainConfig) -> Result<Vec<Target>> {
    if train.method == Method::Full {
        return Ok(Target::ALL.to_vec());
    }
    AdapterConfig::parse_targets(&train.adapter.targets.join(",")).map_err(|e| TrainError::Config {
        key: "adapter.targets".into(),
        message: e.to_string(),
    })
}

/// Parameters of a Llama of shape `c`: its matrices and its vectors (norms, biases).
pub fn llama_params(c: &LlamaConfig) -> usize {
    llama_matrix_params(c) + llama_vector_params(c)
}

/// Parameters of a Llama of shape `c` that mixed precision stores in the half type: every
/// matrix (projections, embedding, untied LM head).
pub fn llama_matrix_params(c: &LlamaConfig) -> usize {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let layer = h * q + 2 * h * kv + q * h + 3 * h * i;
    let embed = c.vocab_size * h;
    let head = if c.tie_word_embeddings { 0 } else { embed };
    embed + head + c.num_hidden_layers * layer
}

/// Parameters of a Llama of shape `c` that stay f32 under mixed precision: the two norms per
/// layer, the final norm and the biases.
fn llama_vector_params(c: &LlamaConfig) -> usize {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let mut layer = 2 * h;
    if c.attention_bias {
        layer += q + 2 * kv + h;
    }
    if c.mlp_bias {
        layer += 2 * i + h;
    }
    c.num_hidden_layers * layer + h
}

/// Trainable parameters of `train`'s method on shape `c`.
pub fn trainable_params(c: &LlamaConfig, train: &TrainConfig) -> Result<usize> {
    if train.method == Method::Full {
        return Ok(llama_params(c));
    }
    let r = train.method.r_max()?;
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let per_rank: usize = adapted(train)?
        .iter()
        .map(|t| match t {
            Target::Q => h + q,
            Target::K | Target::V => h + kv,
            Target::O => q + h,
            Target::Gate | Target::Up | Target::Down => h + i,
        })
        .sum();
    // AdaLoRA's singular values: one per rank and adapted projection.
    let svd = matches!(train.method, Method::Adalora(_)) as usize * adapted(train)?.len();
    Ok(c.num_hidden_layers * (per_rank + svd) * r)
}

/// f32 elements autodiff keeps per token and decoder layer, without the attention's
/// `2 x heads` per score entry (see the module docs).
pub fn saved_per_token_layer(c: &LlamaConfig, train: &TrainConfig) -> Result<usize> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let targets = adapted(train)?;
    let has = |t: &[Target]| targets.iter().any(|x| t.contains(x));
    let mut n = 2 * h + q + 2 * kv + 2 * i;
    if has(&[Target::Q, Target::K, Target::V]) {
        n += h;
    }
    if has(&[Target::O]) {
        n += q;
    }
    if has(&[Target::Gate, Target::Up]) {
        n += h;
    }
    if has(&[Target::Down]) {
        n += i;
    }
    if train.method != Method::Full {
        n += targets.len() * train.method.r_max()?;
    }
    Ok(n)
}

/// The planner's counts for one step before its fitted constants, in MiB (f32 elements at 4
/// bytes unless said): what [`plan`] scales and adds, and what the constants are fitted on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanTerms {
    /// Parameters of the model.
    pub params: usize,
    /// Trainable parameters.
    pub trainable: usize,
    /// Tokens of one micro-batch.
    pub tokens: usize,
    /// Every weight in its stored type (exact).
    pub weights_mib: f64,
    /// Under bf16, one f32 copy of the LM head's `[vocab, hidden]` matrix (0 otherwise).
    pub bf16_lm_head_mib: f64,
    /// One f32 copy of the trainable parameters.
    pub trainable_mib: f64,
    /// Shards computed at once (each holds one copy of the gradients).
    pub shards: usize,
    /// The f32 master copies of trained half-stored matrices (full fine-tuning under mixed
    /// precision; 0 otherwise).
    pub masters_mib: f64,
    /// Per-token tensors autodiff keeps, all layers ([`saved_per_token_layer`]).
    pub saved_mib: f64,
    /// Score-sized tensors of the attention (2 x heads per score entry), all layers.
    pub attention_mib: f64,
    /// Logits of the answer positions.
    pub logits_mib: f64,
    /// The LM head and the loss run as one operation over chunks of rows
    /// (`models::host_loss`: an f32 head that does not train, on flex).
    pub fused_loss: bool,
    /// One chunk of the fused loss's logits, `[LOSS_CHUNK_ROWS, vocab]`.
    pub loss_chunk_mib: f64,
    /// Decoder layers.
    pub layers: usize,
    /// Every decoder layer's input `[tokens, hidden]` (what per-layer recomputation keeps).
    pub layer_inputs_mib: f64,
}

/// The planner's counts for `p` (see [`PlanTerms`]).
pub fn plan_terms(p: &PlanInput) -> Result<PlanTerms> {
    let bad = |key: &str, message: String| {
        Err(TrainError::Config {
            key: key.into(),
            message,
        })
    };
    if p.seq < 2 {
        return bad("seq", format!("{}: a step needs at least 2 tokens", p.seq));
    }
    if !(p.answer_frac > 0.0 && p.answer_frac <= 1.0) {
        return bad(
            "answer_frac",
            format!("{}: expected a fraction in (0, 1]", p.answer_frac),
        );
    }
    p.train.validate()?;
    let c = p.model;
    let micro = p.train.batch_size / p.train.grad_accum.max(1);
    let tokens = micro * p.seq;
    let answer = micro * (p.seq as f64 * p.answer_frac).round().max(1.0) as usize;
    let params = llama_params(c);
    let trainable = trainable_params(c, p.train)?;
    let layers = c.num_hidden_layers * tokens;
    let saved = (saved_per_token_layer(c, p.train)? * layers) as f64;
    // Score entries of one sequence's causal query blocks (models::sdpa), per head.
    let scores = models::sdpa::blocks_work(0, &models::sdpa::causal_blocks(0, p.seq));
    let attention = (2 * c.num_attention_heads * scores * micro * c.num_hidden_layers) as f64;
    // Mixed precision: every matrix (projections, embedding, LM head) in the half type; under
    // full fine-tuning they train, on f32 masters.
    let half = p.train.precision.half().is_some();
    let matrices = if half { llama_matrix_params(c) } else { 0 };
    let masters = if p.train.method == Method::Full {
        matrices
    } else {
        0
    };
    let bf16 = p.train.precision == flexi_burn::Precision::Bf16;
    Ok(PlanTerms {
        params,
        trainable,
        tokens,
        weights_mib: ((params - matrices) as f64 * 4.0 + matrices as f64 * 2.0) / MIB,
        bf16_lm_head_mib: if bf16 {
            (c.vocab_size * c.hidden_size) as f64 * 4.0 / MIB
        } else {
            0.0
        },
        trainable_mib: trainable as f64 * 4.0 / MIB,
        shards: p.shards.max(1),
        masters_mib: masters as f64 * 4.0 / MIB,
        saved_mib: saved * 4.0 / MIB,
        attention_mib: attention * 4.0 / MIB,
        logits_mib: (answer * c.vocab_size) as f64 * 4.0 / MIB,
        fused_loss: !half && p.train.method != Method::Full,
        loss_chunk_mib: (answer.min(LOSS_CHUNK_ROWS) * c.vocab_size) as f64 * 4.0 / MIB,
        layers: c.num_hidden_layers.max(1),
        layer_inputs_mib: (layers * c.hidden_size) as f64 * 4.0 / MIB,
    })
}

/// The predicted peak resident memory of one training step.
pub fn plan(p: &PlanInput) -> Result<MemoryPlan> {
    let t = plan_terms(p)?;
    let full = p.train.method == Method::Full;
    let (act, act_attention) = match (p.checkpointing, full) {
        (ActivationCheckpointing::Balanced, _) => (ACT_CHECKPOINTED, ACT_ATTENTION_CHECKPOINTED),
        (_, true) => (ACT_FULL, ACT_ATTENTION),
        (_, false) => (ACT, ACT_ATTENTION),
    };
    let half_transient_mib = BF16_LM_HEAD_COPIES * t.bf16_lm_head_mib;
    let masters_mib = MASTERS * t.masters_mib;
    let trainable_state_mib = (STATE + t.shards as f64) * t.trainable_mib + masters_mib;
    let activations_mib = match p.checkpointing {
        // One layer's activations at a time, besides every layer's input.
        ActivationCheckpointing::Layers => {
            (act * t.saved_mib + act_attention * t.attention_mib) / t.layers as f64
                + LAYER_INPUTS * t.layer_inputs_mib
        }
        _ => act * t.saved_mib + act_attention * t.attention_mib,
    };
    let lm_head_mib = match (t.fused_loss, p.checkpointing) {
        (true, _) => LM_HEAD_FUSED * t.loss_chunk_mib,
        (false, ActivationCheckpointing::Layers) => LM_HEAD_RECOMPUTED * t.logits_mib,
        (false, _) => LM_HEAD * t.logits_mib,
    };
    Ok(MemoryPlan {
        params: t.params,
        trainable: t.trainable,
        tokens: t.tokens,
        runtime_mib: RUNTIME_MIB,
        weights_mib: t.weights_mib,
        half_transient_mib,
        trainable_state_mib,
        masters_mib,
        activations_mib,
        lm_head_mib,
        total_mib: RUNTIME_MIB
            + t.weights_mib
            + half_transient_mib
            + trainable_state_mib
            + activations_mib
            + lm_head_mib,
    })
}
