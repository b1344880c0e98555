//! Batched greedy decoding with a KV cache, and transcription of whole files.
//!
//! Each step takes the argmax of the last position's logits after the two suppressions
//! transformers applies for Whisper: `suppress_tokens` at every step and
//! `begin_suppress_tokens` at the first generated step. A sample stops at `<|endoftext|>`
//! (later steps feed it `<|endoftext|>` again and ignore the result); decoding ends when all
//! samples stopped, after `max_new_tokens`, or at `max_target_positions`.
//!
//! With the cache, the first step runs the whole prompt and later steps one token each; the
//! encoder's cross-attention keys and values are computed once. [`GreedyConfig::use_cache`]
//! `= false` recomputes the whole sequence every step (the reference the cache is tested
//! against).
//!
//! **Audio longer than 30 s** is split into consecutive 30 s windows by [`transcribe`]; each
//! window is decoded on its own and the texts are joined with a space (no timestamp-based
//! seeking, so a word cut at a window boundary may be garbled). The single-window APIs
//! ([`super::MelExtractor::log_mel`] with 30 s padding, `xtask logits`) refuse such audio.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flexi_burn::SampleRanks;

use super::error::{Result, WhisperError};
use super::mel::{MelExtractor, Padding, split_windows};
use super::model::Whisper;
use super::tokenizer::{Task, WhisperTokenizer};

/// Settings of [`greedy_decode`].
#[derive(Clone, Debug, PartialEq)]
pub struct GreedyConfig {
    /// Most tokens generated after the prompt.
    pub max_new_tokens: usize,
    /// Suppressed at every step.
    pub suppress_tokens: Vec<u32>,
    /// Suppressed at the first generated step.
    pub begin_suppress_tokens: Vec<u32>,
    /// Stop token.
    pub eos_token_id: u32,
    /// Decode with the KV cache (else recompute every step).
    pub use_cache: bool,
}

impl GreedyConfig {
    /// The model's suppression lists and end token, `max_new_tokens` new tokens, with cache.
    pub fn from_model<B: Backend>(model: &Whisper<B>, max_new_tokens: usize) -> Self {
        let c = &model.config;
        Self {
            max_new_tokens,
            suppress_tokens: c.suppress_tokens.clone(),
            begin_suppress_tokens: c.begin_suppress_tokens.clone(),
            eos_token_id: c.eos_token_id,
            use_cache: true,
        }
    }
}

/// The argmax of `row` with the `banned` ids excluded (first index on ties, like torch).
fn argmax_allowed(row: &[f32], banned: &[bool]) -> u32 {
    let mut best = (f32::NEG_INFINITY, 0usize);
    let mut found = false;
    for (i, &v) in row.iter().enumerate() {
        if banned.get(i).copied().unwrap_or(false) {
            continue;
        }
        if !found || v > best.0 {
            best = (v, i);
            found = true;
        }
    }
    best.1 as u32
}

/// Greedy decoding of one prompt per encoder output. Returns the generated ids of each sample
/// after its prompt, up to and without `<|endoftext|>`.
pub fn greedy_decode<B: Backend>(
    model: &Whisper<B>,
    encoder_out: &Tensor<B, 3>,
    prompts: &[Vec<u32>],
    ranks: &SampleRanks,
    config: &GreedyConfig,
) -> Result<Vec<Vec<u32>>> {
    let b = prompts.len();
    if b != encoder_out.dims()[0] {
        return Err(WhisperError::InvalidInput(format!(
            "{b} prompts for {} encoder outputs",
            encoder_out.dims()[0]
        )));
    }
    let prompt_len = prompts.first().map_or(0, Vec::len);
    if prompt_len == 0 {
        return Err(WhisperError::InvalidInput("empty decoder prompt".into()));
    }
    let vocab = model.config.vocab_size;
    let max_pos = model.config.max_target_positions;
    if prompt_len >= max_pos {
        return Err(WhisperError::ContextOverflow {
            len: prompt_len + 1,
            max: max_pos,
        });
    }
    let steps = config.max_new_tokens.min(max_pos - prompt_len);
    let mut banned = vec![false; vocab];
    for &t in &config.suppress_tokens {
        if let Some(x) = banned.get_mut(t as usize) {
            *x = true;
        }
    }
    let mut banned_first = banned.clone();
    for &t in &config.begin_suppress_tokens {
        if let Some(x) = banned_first.get_mut(t as usize) {
            *x = true;
        }
    }
    let device = encoder_out.device();
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut done = vec![false; b];
    let mut cache = model.new_cache();
    for step in 0..steps {
        let logits = if config.use_cache {
            let new: Vec<Vec<u32>> = if step == 0 {
                seqs.clone()
            } else {
                seqs.iter().map(|s| vec![s[s.len() - 1]]).collect()
            };
            let ids = model.ids_tensor(&new, &device)?;
            model.decode(ids, encoder_out, &mut cache, ranks)?
        } else {
            let ids = model.ids_tensor(&seqs, &device)?;
            let mut fresh = model.new_cache();
            model.decode(ids, encoder_out, &mut fresh, ranks)?
        };
        let [_, n, _] = logits.dims();
        let last: Vec<f32> = logits
            .slice([0..b, n - 1..n, 0..vocab])
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| WhisperError::InvalidInput(format!("reading logits: {e:?}")))?;
        let mask = if step == 0 { &banned_first } else { &banned };
        for (i, seq) in seqs.iter_mut().enumerate() {
            if done[i] {
                seq.push(config.eos_token_id);
                continue;
            }
            let next = argmax_allowed(&last[i * vocab..(i + 1) * vocab], mask);
            seq.push(next);
            done[i] = next == config.eos_token_id;
        }
        if done.iter().all(|d| *d) {
            break;
        }
    }
    Ok(seqs
        .into_iter()
        .map(|s| {
            s[prompt_len..]
                .iter()
                .copied()
                .take_while(|&t| t != config.eos_token_id)
                .collect()
        })
        .collect())
}

/// Settings of [`transcribe`].
#[derive(Clone, Debug, PartialEq)]
pub struct TranscribeOptions {
    /// Language for multilingual models (`"en"`, ...); `None` = English.
    pub language: Option<String>,
    /// Transcribe or translate (multilingual models).
    pub task: Task,
    /// Most tokens per 30 s window.
    pub max_new_tokens: usize,
    /// Windows decoded together.
    pub batch_size: usize,
    /// Flexi-LoRA rank of every sample (0 = base model).
    pub rank: usize,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            max_new_tokens: 224,
            batch_size: 8,
            rank: 0,
        }
    }
}

/// Transcribes 16 kHz mono inputs: audio longer than 30 s is split into 30 s windows whose
/// texts are joined (see the module docs). Empty audio is an error; silence is decoded like
/// any audio.
pub fn transcribe<B: Backend>(
    model: &Whisper<B>,
    tokenizer: &WhisperTokenizer,
    audios: &[(String, Vec<f32>)],
    options: &TranscribeOptions,
    device: &B::Device,
) -> Result<Vec<String>> {
    let ranks = vec![options.rank; audios.len()];
    transcribe_with_ranks(model, tokenizer, audios, &ranks, options, device)
}

/// Like [`transcribe`], with one Flexi-LoRA rank per input (e.g. the router's choice; every
/// 30 s window of an input runs at that input's rank). `options.rank` is not used.
pub fn transcribe_with_ranks<B: Backend>(
    model: &Whisper<B>,
    tokenizer: &WhisperTokenizer,
    audios: &[(String, Vec<f32>)],
    ranks: &[usize],
    options: &TranscribeOptions,
    device: &B::Device,
) -> Result<Vec<String>> {
    if ranks.len() != audios.len() {
        return Err(WhisperError::InvalidInput(format!(
            "{} ranks for {} inputs",
            ranks.len(),
            audios.len()
        )));
    }
    let mel = MelExtractor::new(model.config.num_mel_bins);
    let prompt = tokenizer.prompt(
        model.config.is_multilingual,
        options.language.as_deref(),
        options.task,
    )?;
    // (audio index, window spectrogram)
    let mut windows = Vec::new();
    for (i, (name, samples)) in audios.iter().enumerate() {
        if samples.is_empty() {
            return Err(WhisperError::EmptyAudio {
                input: name.clone(),
            });
        }
        for (w, chunk) in split_windows(samples).into_iter().enumerate() {
            let source = format!("{name} (window {w})");
            windows.push((i, mel.log_mel(chunk, Padding::ThirtySeconds, &source)?));
        }
    }
    let mut texts: Vec<Vec<String>> = vec![Vec::new(); audios.len()];
    let config = GreedyConfig::from_model(model, options.max_new_tokens);
    for batch in windows.chunks(options.batch_size.max(1)) {
        let mels: Vec<_> = batch.iter().map(|(_, m)| m.clone()).collect();
        let ranks = SampleRanks::new(batch.iter().map(|(i, _)| ranks[*i]).collect());
        let enc = model.encode(model.mel_batch(&mels, device)?, &ranks)?;
        let prompts = vec![prompt.clone(); batch.len()];
        let ids = greedy_decode(model, &enc, &prompts, &ranks, &config)?;
        for ((i, _), ids) in batch.iter().zip(ids) {
            let text = tokenizer.decode(&ids)?;
            if !text.is_empty() {
                texts[*i].push(text);
            }
        }
    }
    Ok(texts.into_iter().map(|t| t.join(" ")).collect())
}

/// Reads host data of a float tensor as f32 (any backend float type).
pub fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    let data: TensorData = t.into_data().convert::<f32>();
    data.into_vec::<f32>()
        .map_err(|e| WhisperError::InvalidInput(format!("reading a tensor: {e:?}")))
}
