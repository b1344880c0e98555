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
//! # Short-form and long-form transcription
//!
//! [`transcribe`] treats each input on its own, as transformers' `generate` does:
//!
//! - **Up to 30 s** (short-form): one zero-padded window, prompted with `<|notimestamps|>`,
//!   decoded greedily; the text is the transcript.
//! - **Longer than 30 s** (long-form, [`LongForm::Seek`], the default): the sequential
//!   algorithm of openai-whisper's `transcribe.py` and transformers' long-form generation. The
//!   30 s window starting at the input's seek position (its samples, zero-padded to 30 s) is
//!   decoded **with timestamp tokens** (prompt without `<|notimestamps|>`) under Whisper's
//!   timestamp rules ([`TimestampRules`]: the first token is a timestamp no later than
//!   [`MAX_INITIAL_TIMESTAMP_INDEX`] (1.0 s); timestamps come in pairs and never decrease; a
//!   segment has a non-zero length; a timestamp is forced when the timestamp tokens together
//!   are more probable than the best text token). The tokens are split into segments at
//!   timestamp pairs ([`segment_window`]); then the input seeks: to the end of the window if
//!   the tokens end with a single timestamp (the last segment is complete) or hold no
//!   timestamp pair, else to the end timestamp of the last complete segment (the unfinished
//!   segment after it is dropped and decoded again from the next window). One timestamp step
//!   is 0.02 s = 2 mel frames ([`INPUT_STRIDE`]) = 320 samples. The transcript is the
//!   segments' texts joined with spaces; [`transcribe_segments`] returns the segments with
//!   their times.
//! - [`LongForm::Split`] keeps the old behaviour for long audio: consecutive hard 30 s windows
//!   ([`split_windows`]) decoded like short-form input and joined with a space, so a word cut
//!   at a window boundary may be garbled or repeated.
//!
//! Inputs are batched: short-form windows in `batch_size` chunks; long-form inputs in batches
//! of up to `batch_size`, each at its own seek position, an input leaving the batch when its
//! audio is consumed and the next waiting one taking its place. Every window of input `i`
//! runs at `ranks[i]`.
//!
//! Documented differences from the references: decoding is greedy only (no temperature
//! fallback, compression-ratio or log-probability checks, no no-speech skipping), the
//! previous text is not given as a prompt (transformers' default,
//! `condition_on_prev_tokens = False`), and each window's log-mel is computed from its own
//! samples zero-padded to 30 s (exactly the short-form input) instead of slicing one
//! spectrogram of the whole file (whose normalisation uses the whole file's maximum).
//! The single-window APIs ([`super::MelExtractor::log_mel`] with 30 s padding,
//! `xtask logits`) refuse audio longer than 30 s.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flexi_burn::SampleRanks;

use super::audio::SAMPLE_RATE;
use super::error::{Result, WhisperError};
use super::mel::{HOP_LENGTH, MelExtractor, N_FRAMES, N_SAMPLES, Padding, split_windows};
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

/// The argmax of `row` among values above `-inf` (first index on ties); `None` when every
/// value is `-inf` (or NaN).
fn argmax_finite(row: &[f32]) -> Option<u32> {
    let mut best: Option<(f32, usize)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v > f32::NEG_INFINITY && best.is_none_or(|(b, _)| v > b) {
            best = Some((v, i));
        }
    }
    best.map(|(_, i)| i as u32)
}

/// Seconds per timestamp step (`<|0.02|>` - `<|0.00|>`).
pub const TIME_PRECISION: f64 = 0.02;
/// Mel frames per timestamp step (the encoder's stride-2 convolution): 2 frames of 160
/// samples = 320 samples = 0.02 s.
pub const INPUT_STRIDE: usize = 2;
/// The latest first timestamp, in steps: `max_initial_timestamp = 1.0` s of openai-whisper
/// and transformers' generation configs.
pub const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;

/// Whisper's timestamp logit rules (openai-whisper's `ApplyTimestampRules`, transformers'
/// `WhisperTimeStampLogitsProcessor`), applied to one sample's logits after the suppressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampRules {
    /// `<|0.00|>`; every id from here on is a timestamp.
    pub timestamp_begin: u32,
    /// `<|endoftext|>`; ids below it are text.
    pub eot: u32,
    /// `<|notimestamps|>`, never generated with timestamps.
    pub no_timestamps: u32,
    /// The latest allowed first timestamp in steps from `<|0.00|>` (`None`: any).
    pub max_initial_timestamp_index: Option<u32>,
}

impl TimestampRules {
    /// The rules for `model` with `tokenizer`'s ids and a 1.0 s initial-timestamp limit.
    /// [`WhisperError::NoTimestampTokens`] when the vocabulary ends before `<|0.00|>`.
    pub fn new<B: Backend>(model: &Whisper<B>, tokenizer: &WhisperTokenizer) -> Result<Self> {
        let vocab_size = model.config.vocab_size;
        if tokenizer.timestamp_begin as usize >= vocab_size {
            return Err(WhisperError::NoTimestampTokens {
                timestamp_begin: tokenizer.timestamp_begin,
                vocab_size,
            });
        }
        Ok(Self {
            timestamp_begin: tokenizer.timestamp_begin,
            eot: model.config.eos_token_id,
            no_timestamps: tokenizer.no_timestamps,
            max_initial_timestamp_index: Some(MAX_INITIAL_TIMESTAMP_INDEX),
        })
    }

    /// Masks (sets to `-inf`) the entries of one sample's `logits` (the whole vocabulary,
    /// suppressed tokens already `-inf`) that the rules forbid after `generated` (the tokens
    /// generated so far, without the prompt):
    ///
    /// 1. `<|notimestamps|>` is never generated;
    /// 2. after a timestamp that follows text (a segment's end), text is forbidden (another
    ///    timestamp or `<|endoftext|>`); after two timestamps, or a timestamp as the first
    ///    token (a segment's start), timestamps are forbidden;
    /// 3. timestamps never decrease, and a segment's end is later than its start: timestamps
    ///    below the last one are forbidden, and the last one itself unless it closed a
    ///    segment;
    /// 4. the first token is a timestamp, at most `max_initial_timestamp_index` steps;
    /// 5. when the probability of all timestamps together (log-sum-exp of their log-softmax)
    ///    exceeds the most probable non-timestamp token's, every non-timestamp token is
    ///    forbidden.
    pub fn apply(&self, generated: &[u32], logits: &mut [f32]) {
        let neg = f32::NEG_INFINITY;
        let n = logits.len();
        let tb = (self.timestamp_begin as usize).min(n);
        if let Some(x) = logits.get_mut(self.no_timestamps as usize) {
            *x = neg;
        }
        let is_ts = |t: u32| t >= self.timestamp_begin;
        let len = generated.len();
        let last_ts = len >= 1 && is_ts(generated[len - 1]);
        let penultimate_ts = len < 2 || is_ts(generated[len - 2]);
        if last_ts {
            if penultimate_ts {
                logits[tb..].fill(neg);
            } else {
                logits[..(self.eot as usize).min(n)].fill(neg);
            }
        }
        if let Some(&last) = generated.iter().rev().find(|&&t| is_ts(t)) {
            let upto = if last_ts && !penultimate_ts {
                last as usize
            } else {
                last as usize + 1
            };
            logits[tb..upto.clamp(tb, n)].fill(neg);
        }
        if generated.is_empty() {
            logits[..tb].fill(neg);
            if let Some(max) = self.max_initial_timestamp_index {
                let first_banned = tb + max as usize + 1;
                if first_banned < n {
                    logits[first_banned..].fill(neg);
                }
            }
        }
        // Log-softmax normalisation cancels out of the comparison.
        let timestamp_lse = log_sum_exp(&logits[tb..]);
        let max_text = logits[..tb].iter().copied().fold(neg, f32::max);
        if timestamp_lse > f64::from(max_text) {
            logits[..tb].fill(neg);
        }
    }
}

/// `log(sum(exp(x)))` in f64; `-inf` for an empty or all `-inf` slice.
fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return f64::NEG_INFINITY;
    }
    let max = f64::from(max);
    let sum: f64 = x.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    max + sum.ln()
}

/// A segment of one long-form window: times in timestamp steps (0.02 s) from the window's
/// start, and its text tokens (timestamps removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSegment {
    /// Start, in steps.
    pub start: u32,
    /// End, in steps.
    pub end: u32,
    /// The segment's tokens without timestamp tokens.
    pub text_tokens: Vec<u32>,
}

/// Splits the tokens generated for one window (without prompt and `<|endoftext|>`) into
/// segments and returns them with the seek advance in mel frames, exactly as openai-whisper's
/// `transcribe.py` (and transformers' `_retrieve_segment`):
///
/// - with consecutive timestamps (`... <|t1|><|t2|> ...`), a segment ends after each pair's
///   first timestamp; if the tokens end with a single timestamp (the last segment is
///   complete) that last segment is kept too and the input seeks by the whole window
///   (`window_frames`); otherwise the tokens after the last pair (an unfinished segment) are
///   dropped and the input seeks to the last complete segment's end timestamp (steps ×
///   [`INPUT_STRIDE`] frames);
/// - without consecutive timestamps the whole window is one segment (ending at its last
///   timestamp if that is not `<|0.00|>`, else at the window's end) and the input seeks by
///   the whole window.
///
/// `window_frames` is the number of mel frames of audio in the window (at most 3000; fewer at
/// the end of the input). The advance is at least one frame, so seeking always terminates.
pub fn segment_window(
    tokens: &[u32],
    timestamp_begin: u32,
    window_frames: usize,
) -> (Vec<WindowSegment>, usize) {
    let is_ts = |t: u32| t >= timestamp_begin;
    let step = |t: u32| t.saturating_sub(timestamp_begin);
    let text = |ts: &[u32]| -> Vec<u32> { ts.iter().copied().filter(|&t| !is_ts(t)).collect() };
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    // Indices i with tokens[i - 1] and tokens[i] both timestamps.
    let mut slices: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i]))
        .collect();
    let whole = window_frames.max(1);
    if slices.is_empty() {
        let end = match tokens.iter().rev().find(|&&t| is_ts(t)) {
            Some(&t) if t != timestamp_begin => step(t),
            _ => (window_frames / INPUT_STRIDE) as u32,
        };
        let segments = vec![WindowSegment {
            start: 0,
            end,
            text_tokens: text(tokens),
        }];
        return (segments, whole);
    }
    if single_timestamp_ending {
        slices.push(n);
    }
    let mut segments = Vec::with_capacity(slices.len());
    let mut last_slice = 0;
    for &current in &slices {
        let part = &tokens[last_slice..current];
        segments.push(WindowSegment {
            start: step(part[0]),
            end: step(part[part.len() - 1]),
            text_tokens: text(part),
        });
        last_slice = current;
    }
    let advance = if single_timestamp_ending {
        whole
    } else {
        step(tokens[last_slice - 1]) as usize * INPUT_STRIDE
    };
    (segments, if advance == 0 { whole } else { advance })
}

/// How [`transcribe`] handles audio longer than 30 s (shorter audio is one window either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LongForm {
    /// Timestamp-based seeking (openai-whisper / transformers long-form; see the module
    /// docs). Needs a model with timestamp tokens.
    #[default]
    Seek,
    /// Hard 30 s windows decoded separately, texts joined (words at a boundary may be cut).
    Split,
}

/// A piece of a transcript with its time span in the input, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Start, seconds from the input's start.
    pub start: f64,
    /// End, seconds from the input's start.
    pub end: f64,
    /// Text, trimmed.
    pub text: String,
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
    decode_loop(model, encoder_out, prompts, ranks, config, None)
}

/// [`greedy_decode`] with Whisper's timestamp rules applied after the suppressions at every
/// step (prompts without `<|notimestamps|>`, see [`WhisperTokenizer::timestamp_prompt`]). The
/// generated ids include the timestamp tokens.
pub fn greedy_decode_with_timestamps<B: Backend>(
    model: &Whisper<B>,
    encoder_out: &Tensor<B, 3>,
    prompts: &[Vec<u32>],
    ranks: &SampleRanks,
    config: &GreedyConfig,
    rules: &TimestampRules,
) -> Result<Vec<Vec<u32>>> {
    decode_loop(model, encoder_out, prompts, ranks, config, Some(rules))
}

fn decode_loop<B: Backend>(
    model: &Whisper<B>,
    encoder_out: &Tensor<B, 3>,
    prompts: &[Vec<u32>],
    ranks: &SampleRanks,
    config: &GreedyConfig,
    rules: Option<&TimestampRules>,
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
    if prompts.iter().any(|p| p.len() != prompt_len) {
        return Err(WhisperError::InvalidInput(
            "decoder prompts of different lengths in one batch".into(),
        ));
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
            let row = &last[i * vocab..(i + 1) * vocab];
            let next = match rules {
                None => argmax_allowed(row, mask),
                Some(rules) => {
                    let mut row = row.to_vec();
                    for (x, _) in row.iter_mut().zip(mask).filter(|(_, b)| **b) {
                        *x = f32::NEG_INFINITY;
                    }
                    rules.apply(&seq[prompt_len..], &mut row);
                    argmax_finite(&row).unwrap_or(config.eos_token_id)
                }
            };
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
    /// Seeking or hard windows for audio longer than 30 s.
    pub long_form: LongForm,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            max_new_tokens: 224,
            batch_size: 8,
            rank: 0,
            long_form: LongForm::Seek,
        }
    }
}

/// Transcribes 16 kHz mono inputs: audio up to 30 s as one window, longer audio by
/// timestamp-based seeking or hard windows (`options.long_form`; see the module docs). Empty
/// audio is an error; silence is decoded like any audio.
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
    let segments = transcribe_segments(model, tokenizer, audios, ranks, options, device)?;
    Ok(segments.iter().map(|s| join_segments(s)).collect())
}

/// The non-empty segment texts joined with single spaces.
pub fn join_segments(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| s.text.as_str())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Like [`transcribe_with_ranks`], returning each input's segments with their times: one
/// segment per short-form input (`0` to its length) or hard window, the timestamped segments
/// of long-form seeking (times clamped to the input's length). Segments with empty text are
/// left out.
pub fn transcribe_segments<B: Backend>(
    model: &Whisper<B>,
    tokenizer: &WhisperTokenizer,
    audios: &[(String, Vec<f32>)],
    ranks: &[usize],
    options: &TranscribeOptions,
    device: &B::Device,
) -> Result<Vec<Vec<Segment>>> {
    if ranks.len() != audios.len() {
        return Err(WhisperError::InvalidInput(format!(
            "{} ranks for {} inputs",
            ranks.len(),
            audios.len()
        )));
    }
    let mel = MelExtractor::new(model.config.num_mel_bins);
    let rate = f64::from(SAMPLE_RATE);
    // Short-form windows: (input, start in samples, samples, spectrogram); long-form inputs.
    let mut windows = Vec::new();
    let mut long = Vec::new();
    for (i, (name, samples)) in audios.iter().enumerate() {
        if samples.is_empty() {
            return Err(WhisperError::EmptyAudio {
                input: name.clone(),
            });
        }
        if samples.len() > N_SAMPLES && options.long_form == LongForm::Seek {
            long.push(i);
            continue;
        }
        for (w, chunk) in split_windows(samples).into_iter().enumerate() {
            let source = format!("{name} (window {w})");
            let m = mel.log_mel(chunk, Padding::ThirtySeconds, &source)?;
            windows.push((i, w * N_SAMPLES, chunk.len(), m));
        }
    }
    let mut out: Vec<Vec<Segment>> = vec![Vec::new(); audios.len()];
    let config = GreedyConfig::from_model(model, options.max_new_tokens);
    let batch_size = options.batch_size.max(1);
    if !windows.is_empty() {
        let prompt = tokenizer.prompt(
            model.config.is_multilingual,
            options.language.as_deref(),
            options.task,
        )?;
        for batch in windows.chunks(batch_size) {
            let mels: Vec<_> = batch.iter().map(|(_, _, _, m)| m.clone()).collect();
            let ranks = SampleRanks::new(batch.iter().map(|(i, ..)| ranks[*i]).collect());
            let enc = model.encode(model.mel_batch(&mels, device)?, &ranks)?;
            let prompts = vec![prompt.clone(); batch.len()];
            let ids = greedy_decode(model, &enc, &prompts, &ranks, &config)?;
            for ((i, start, len, _), ids) in batch.iter().zip(ids) {
                let text = tokenizer.decode(&ids)?;
                if !text.is_empty() {
                    out[*i].push(Segment {
                        start: *start as f64 / rate,
                        end: (start + len) as f64 / rate,
                        text,
                    });
                }
            }
        }
    }
    if !long.is_empty() {
        let rules = TimestampRules::new(model, tokenizer)?;
        let prompt = tokenizer.timestamp_prompt(
            model.config.is_multilingual,
            options.language.as_deref(),
            options.task,
        )?;
        // (input, seek in mel frames); finished inputs leave, waiting ones move up.
        let mut active: Vec<(usize, usize)> = long.iter().map(|&i| (i, 0)).collect();
        while !active.is_empty() {
            let n = active.len().min(batch_size);
            let mut mels = Vec::with_capacity(n);
            let mut sizes = Vec::with_capacity(n);
            for &(i, seek) in &active[..n] {
                let (name, samples) = &audios[i];
                let content = samples.len() / HOP_LENGTH;
                let size = N_FRAMES.min(content - seek);
                let start = seek * HOP_LENGTH;
                let chunk = &samples[start..start + size * HOP_LENGTH];
                let source = format!("{name} (from {:.2} s)", start as f64 / rate);
                mels.push(mel.log_mel(chunk, Padding::ThirtySeconds, &source)?);
                sizes.push(size);
            }
            let batch_ranks =
                SampleRanks::new(active[..n].iter().map(|(i, _)| ranks[*i]).collect());
            let enc = model.encode(model.mel_batch(&mels, device)?, &batch_ranks)?;
            let prompts = vec![prompt.clone(); n];
            let ids = greedy_decode_with_timestamps(
                model,
                &enc,
                &prompts,
                &batch_ranks,
                &config,
                &rules,
            )?;
            for ((entry, ids), size) in active[..n].iter_mut().zip(ids).zip(sizes) {
                let (i, seek) = *entry;
                let offset = (seek * HOP_LENGTH) as f64 / rate;
                let duration = audios[i].1.len() as f64 / rate;
                // Times past the end of the audio (a timestamp in the last window's padding)
                // are clamped to it.
                let time = |steps: u32| (offset + f64::from(steps) * TIME_PRECISION).min(duration);
                let (segments, advance) = segment_window(&ids, rules.timestamp_begin, size);
                for s in segments {
                    let text = tokenizer.decode(&s.text_tokens)?;
                    if !text.is_empty() {
                        out[i].push(Segment {
                            start: time(s.start),
                            end: time(s.end),
                            text,
                        });
                    }
                }
                entry.1 = seek + advance;
            }
            active.retain(|&(i, seek)| seek < audios[i].1.len() / HOP_LENGTH);
        }
    }
    Ok(out)
}

/// Reads host data of a float tensor as f32 (any backend float type).
pub fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    let data: TensorData = t.into_data().convert::<f32>();
    data.into_vec::<f32>()
        .map_err(|e| WhisperError::InvalidInput(format!("reading a tensor: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A toy vocabulary laid out like Whisper's: text 0..8, `<|endoftext|>` 8,
    // `<|startoftranscript|>` 9, `<|notimestamps|>` 10, timestamps `<|0.00|>` = 11 .. 19.
    const EOT: u32 = 8;
    const NO_TS: u32 = 10;
    const TB: u32 = 11;
    const VOCAB: usize = 20;

    fn rules(max_initial: Option<u32>) -> TimestampRules {
        TimestampRules {
            timestamp_begin: TB,
            eot: EOT,
            no_timestamps: NO_TS,
            max_initial_timestamp_index: max_initial,
        }
    }

    /// Ids whose logit is not `-inf` after the rules, for flat logits (every token equally
    /// likely except where `boost` raises one).
    fn allowed(rules: &TimestampRules, generated: &[u32], boost: &[(u32, f32)]) -> Vec<u32> {
        let mut row = vec![0.0f32; VOCAB];
        for &(t, v) in boost {
            row[t as usize] = v;
        }
        rules.apply(generated, &mut row);
        (0..VOCAB as u32)
            .filter(|&t| row[t as usize] > f32::NEG_INFINITY)
            .collect()
    }

    fn ts(step: u32) -> u32 {
        TB + step
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        // Flat logits: 9 timestamps outweigh the best text token, but only 0..=3 are allowed.
        assert_eq!(allowed(&rules(Some(3)), &[], &[]), vec![11, 12, 13, 14]);
        assert_eq!(
            allowed(&rules(None), &[], &[]),
            (TB..VOCAB as u32).collect::<Vec<_>>()
        );
        // Even a very likely text token or <|endoftext|> cannot come first.
        let got = allowed(
            &rules(Some(3)),
            &[],
            &[(2, 50.0), (EOT, 50.0), (NO_TS, 60.0)],
        );
        assert_eq!(got, vec![11, 12, 13, 14]);
    }

    #[test]
    fn timestamps_come_in_pairs_and_increase() {
        let r = rules(None);
        // After a segment's start timestamp: text (or <|endoftext|>), no timestamp. Flat
        // logits over 0..10 would otherwise lose to no timestamp at all.
        let got = allowed(&r, &[ts(2)], &[(3, 5.0)]);
        assert!(got.iter().all(|&t| t < TB), "{got:?}");
        assert!(got.contains(&3) && !got.contains(&NO_TS));
        // Inside a segment that started at 2: timestamps from 3 on (non-zero length).
        let got = allowed(&r, &[ts(2), 4], &[(4, 9.0)]);
        assert!(got.contains(&4));
        assert!(!got.contains(&ts(2)) && got.contains(&ts(3)), "{got:?}");
        // After a segment's end timestamp (6): no text; <|endoftext|> (or another special
        // token, which Whisper suppresses anyway) or a timestamp >= 6.
        let got = allowed(&r, &[ts(2), 4, ts(6)], &[(EOT, 3.0)]);
        assert_eq!(got, vec![EOT, 9, ts(6), ts(7), ts(8)]);
        // With flat logits the three timestamps outweigh <|endoftext|>: one is forced.
        let got = allowed(&r, &[ts(2), 4, ts(6)], &[]);
        assert_eq!(got, vec![ts(6), ts(7), ts(8)]);
        // After a pair (end 6, start 6): text only, later timestamps only after some text.
        let got = allowed(&r, &[ts(2), 4, ts(6), ts(6)], &[(5, 3.0)]);
        assert!(got.iter().all(|&t| t < TB), "{got:?}");
        let got = allowed(&r, &[ts(2), 4, ts(6), ts(6), 5], &[(5, 9.0)]);
        assert!(!got.contains(&ts(6)) && got.contains(&ts(7)), "{got:?}");
    }

    #[test]
    fn timestamp_probability_mass_forces_a_timestamp() {
        let r = rules(None);
        // Inside a segment started at 0: text token 3 has logit 5; the 8 allowed timestamps
        // (1..=8) have 4 each: log-sum-exp 4 + ln 8 = 6.08 > 5, so text is masked although
        // token 3 is the single most likely token.
        let mut boost: Vec<(u32, f32)> = (1..9).map(|s| (ts(s), 4.0)).collect();
        boost.push((3, 5.0));
        let mut row = vec![f32::NEG_INFINITY; VOCAB];
        for &(t, v) in &boost {
            row[t as usize] = v;
        }
        r.apply(&[ts(0), 2], &mut row);
        assert_eq!(argmax_finite(&row), Some(ts(1)));
        assert!(row[..TB as usize].iter().all(|&x| x == f32::NEG_INFINITY));
        // With only two timestamps at 4 (log-sum-exp 4.69 < 5), text stays and wins.
        let mut row = vec![f32::NEG_INFINITY; VOCAB];
        for (t, v) in [(3, 5.0), (ts(1), 4.0), (ts(2), 4.0)] {
            row[t as usize] = v;
        }
        r.apply(&[ts(0), 2], &mut row);
        assert_eq!(argmax_finite(&row), Some(3));
        assert_eq!(row[ts(1) as usize], 4.0);
    }

    #[test]
    fn argmax_finite_skips_masked_and_takes_first_tie() {
        let neg = f32::NEG_INFINITY;
        assert_eq!(argmax_finite(&[neg, 1.0, 3.0, 3.0]), Some(2));
        assert_eq!(argmax_finite(&[neg, neg]), None);
        assert_eq!(log_sum_exp(&[neg, neg]), f64::NEG_INFINITY);
        assert!((log_sum_exp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-12);
    }

    fn seg(start: u32, end: u32, text_tokens: Vec<u32>) -> WindowSegment {
        WindowSegment {
            start,
            end,
            text_tokens,
        }
    }

    #[test]
    fn single_timestamp_ending_seeks_the_whole_window() {
        // <|0.00|> a b <|1.00|><|1.00|> c <|2.00|>: two complete segments.
        let tokens = [ts(0), 1, 2, ts(50), ts(50), 3, ts(100)];
        let (segments, advance) = segment_window(&tokens, TB, N_FRAMES);
        assert_eq!(
            segments,
            vec![seg(0, 50, vec![1, 2]), seg(50, 100, vec![3])]
        );
        assert_eq!(advance, N_FRAMES);
        // A shorter last window seeks by its own length.
        assert_eq!(segment_window(&tokens, TB, 1234).1, 1234);
    }

    #[test]
    fn pair_ending_seeks_to_the_last_complete_segment() {
        // <|0.00|> a <|1.00|><|1.20|>: the second segment never started; seek to 1.00 s.
        let tokens = [ts(0), 1, ts(50), ts(60)];
        let (segments, advance) = segment_window(&tokens, TB, N_FRAMES);
        assert_eq!(segments, vec![seg(0, 50, vec![1])]);
        assert_eq!(advance, 50 * INPUT_STRIDE);
        assert_eq!(advance * HOP_LENGTH, 50 * 320);
        // An unfinished segment (cut by max_new_tokens or the window) is dropped: it is
        // decoded again from the next window, which starts at its start (1.40 s).
        let tokens = [ts(0), 1, ts(50), ts(50), 2, ts(70), ts(70), 3, 4];
        let (segments, advance) = segment_window(&tokens, TB, N_FRAMES);
        assert_eq!(segments, vec![seg(0, 50, vec![1]), seg(50, 70, vec![2])]);
        assert_eq!(advance, 140);
    }

    #[test]
    fn without_timestamp_pairs_the_window_is_one_segment() {
        // No timestamps at all: the whole window.
        let (segments, advance) = segment_window(&[1, 2], TB, N_FRAMES);
        assert_eq!(segments, vec![seg(0, 1500, vec![1, 2])]);
        assert_eq!(advance, N_FRAMES);
        let (segments, advance) = segment_window(&[1, 2], TB, 1000);
        assert_eq!(segments, vec![seg(0, 500, vec![1, 2])]);
        assert_eq!(advance, 1000);
        // One segment closed by a single timestamp: it ends there, the window is consumed.
        let (segments, advance) = segment_window(&[ts(0), 1, ts(70)], TB, N_FRAMES);
        assert_eq!(segments, vec![seg(0, 70, vec![1])]);
        assert_eq!(advance, N_FRAMES);
        // Only <|0.00|> (cut before the end timestamp): up to the window's end.
        let (segments, advance) = segment_window(&[ts(0), 1, 2], TB, N_FRAMES);
        assert_eq!(segments, vec![seg(0, 1500, vec![1, 2])]);
        assert_eq!(advance, N_FRAMES);
        // Nothing generated.
        let (segments, advance) = segment_window(&[], TB, N_FRAMES);
        assert_eq!(segments, vec![seg(0, 1500, vec![])]);
        assert_eq!(advance, N_FRAMES);
    }

    #[test]
    fn seeking_always_advances() {
        // A pair at <|0.00|> (impossible under the rules) would seek by 0: the window is
        // consumed instead, so the loop terminates.
        let (_, advance) = segment_window(&[ts(0), ts(0)], TB, 800);
        assert_eq!(advance, 800);
        let (_, advance) = segment_window(&[ts(0)], TB, 0);
        assert_eq!(advance, 1);
    }
}
