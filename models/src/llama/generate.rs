//! Batched generation with a KV cache.
//!
//! Prompts are left-padded to one length; each sample keeps its own positions
//! (`cumsum(mask) - 1`) and its own LoRA rank for every step. A sample stops at its first eos
//! id (which is kept in its output) and leaves the batch with its rows of the KV cache, so
//! a batch whose answers differ in length does not keep computing the finished ones;
//! generation ends when all samples stopped, after `max_new_tokens`, or when the longest
//! sample reaches the context length.

use burn::tensor::backend::Backend;
use flexi_burn::SampleRanks;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::error::{LlamaError, Result};
use super::model::{Llama, PaddedBatch};

/// How the next token is picked.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// Arg-max (first index on ties, like `torch.argmax`).
    Greedy,
    /// Softmax at `temperature`, restricted to the smallest set of tokens whose probability
    /// reaches `top_p` (nucleus), drawn with a seeded generator.
    TopP {
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Nucleus mass in (0, 1].
        top_p: f64,
        /// Random seed.
        seed: u64,
    },
}

/// Settings of [`generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens generated per sample.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// A sample stops after emitting any of these.
    pub eos_token_ids: Vec<u32>,
    /// Filler for left padding.
    pub pad_token_id: u32,
    /// Reuse keys/values (`true`) or recompute the whole sequence every step (`false`, for
    /// testing).
    pub use_cache: bool,
}

impl GenerationConfig {
    /// Greedy, with the cache, stopping on `eos_token_ids`.
    pub fn greedy(max_new_tokens: usize, eos_token_ids: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            sampling: Sampling::Greedy,
            eos_token_ids,
            pad_token_id: 0,
            use_cache: true,
        }
    }
}

/// The generated tokens of every sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// New tokens per sample, including the eos that stopped it.
    pub tokens: Vec<Vec<u32>>,
    /// Whether the sample stopped on an eos id.
    pub stopped_on_eos: Vec<bool>,
}

/// Generates continuations of `prompts` (one rank per prompt in `ranks`).
pub fn generate<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    ranks: &SampleRanks,
    config: &GenerationConfig,
) -> Result<Generation> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(LlamaError::InvalidInput(
            "generate needs non-empty prompts".into(),
        ));
    }
    if let Sampling::TopP {
        temperature, top_p, ..
    } = config.sampling
        && !(temperature > 0.0 && top_p > 0.0 && top_p <= 1.0)
    {
        return Err(LlamaError::InvalidInput(format!(
            "temperature must be > 0 and top_p in (0, 1], got {temperature} and {top_p}"
        )));
    }
    ranks.validate(prompts.len(), model.r_max())?;
    let ctx = model.config.max_position_embeddings;
    for (sample, p) in prompts.iter().enumerate() {
        if p.len() > ctx {
            return Err(LlamaError::ContextOverflow {
                sample,
                len: p.len(),
                max: ctx,
            });
        }
    }
    let mut rng = match config.sampling {
        Sampling::TopP { seed, .. } => Some(StdRng::seed_from_u64(seed)),
        Sampling::Greedy => None,
    };

    let n = prompts.len();
    let mut full = PaddedBatch::left_pad(prompts, config.pad_token_id); // whole sequences
    let mut cache = config.use_cache.then(|| model.new_cache());
    let mut tokens = vec![Vec::new(); n];
    let mut next_pos: Vec<usize> = prompts.iter().map(Vec::len).collect();
    // The samples still running, as indices into `prompts`: row `j` of every batch tensor
    // below is sample `running[j]`. A sample that stops leaves the batch (its cache rows
    // too), so the steps after it compute only the others.
    let mut running: Vec<usize> = (0..n).collect();
    let mut ranks = ranks.clone();

    // The step input: the whole prompt first, then one token per sample.
    let mut step = full.clone();
    let mut step_pos = full.positions();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let budget = config.max_new_tokens.min(ctx - longest);
    for _ in 0..budget {
        // Logits of the last position only: no LM head over the prompt.
        let last = match cache.as_mut() {
            Some(cache) => model.forward_last(&step, &full.mask, &step_pos, Some(cache), &ranks)?,
            None => model.forward_last(&full, &full.mask, &full.positions(), None, &ranks)?,
        };
        let v = last.dims()[1];
        let last: Vec<f32> = last
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| LlamaError::InvalidInput(format!("cannot read logits: {e:?}")))?;

        // One token per running sample (in sample order, so a seeded sampler draws as it
        // would with every sample in the batch); `keep` are the rows that go on.
        let mut new_ids = Vec::with_capacity(running.len());
        let mut keep = Vec::with_capacity(running.len());
        for (row, &i) in running.iter().enumerate() {
            let logits = &last[row * v..(row + 1) * v];
            let id = match (&config.sampling, rng.as_mut()) {
                (
                    Sampling::TopP {
                        temperature, top_p, ..
                    },
                    Some(rng),
                ) => sample_top_p(logits, *temperature, *top_p, rng),
                _ => argmax(logits),
            };
            tokens[i].push(id);
            if !config.eos_token_ids.contains(&id) {
                keep.push(row);
                new_ids.push(id);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < running.len() {
            retain_rows(&mut running, &keep);
            retain_rows(&mut next_pos, &keep);
            retain_rows(&mut full.ids, &keep);
            retain_rows(&mut full.mask, &keep);
            ranks = SampleRanks::new(keep.iter().map(|&r| ranks.as_slice()[r]).collect());
            if let Some(cache) = cache.as_mut() {
                cache.retain_rows(&keep);
            }
        }
        for ((ids, mask), &id) in full.ids.iter_mut().zip(&mut full.mask).zip(&new_ids) {
            ids.push(id);
            mask.push(true);
        }
        step = PaddedBatch {
            ids: new_ids.iter().map(|&t| vec![t]).collect(),
            mask: vec![vec![true]; new_ids.len()],
        };
        step_pos = next_pos.iter().map(|&p| vec![p]).collect();
        for p in &mut next_pos {
            *p += 1;
        }
    }
    let stopped_on_eos = tokens
        .iter()
        .map(|t| t.last().is_some_and(|id| config.eos_token_ids.contains(id)))
        .collect();
    Ok(Generation {
        tokens,
        stopped_on_eos,
    })
}

/// Keeps the elements at the (increasing) indices `keep`.
fn retain_rows<T>(v: &mut Vec<T>, keep: &[usize]) {
    let mut keep = keep.iter().peekable();
    let mut i = 0;
    v.retain(|_| {
        let kept = keep.next_if_eq(&&i).is_some();
        i += 1;
        kept
    });
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn sample_top_p(row: &[f32], temperature: f64, top_p: f64, rng: &mut StdRng) -> u32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = row
        .iter()
        .enumerate()
        .map(|(i, &x)| (i, ((x as f64 - max) / temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (k, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= top_p {
            cut = k + 1;
            break;
        }
    }
    let probs = &probs[..cut];
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * mass;
    for &(i, p) in probs {
        if u < p {
            return i as u32;
        }
        u -= p;
    }
    probs[probs.len() - 1].0 as u32
}
