//! Tokenisation: the [`TextTokenizer`] trait (so that this crate needs no model code), an
//! implementation for Hugging Face `tokenizers` ([`HfTokenizer`], feature `hf-tokenizers`),
//! and encoding of prompt + target into ids and labels.
//!
//! Layout of an encoded training example: `[BOS] prompt target [EOS]`. Labels have the same
//! length as the ids (Hugging Face convention: the model shifts them by one); they are
//! [`IGNORE_INDEX`] on BOS and the prompt and equal the ids on the target and EOS, so the loss
//! covers answer tokens only.
//!
//! Truncation never touches the target: when the sequence is longer than `max_len`, tokens
//! are cut from the prompt ([`Truncation::Left`]: its start, e.g. the beginning of a long
//! context; [`Truncation::Middle`]: its middle, keeping the start and the question at the
//! end). If the target alone does not fit, encoding fails with
//! [`DataError::AnswerTooLong`]; [`encode_all`] counts such examples and either stops or
//! drops them as asked, and counts truncated prompts.

use crate::prompt::Prompted;
use crate::{DataError, Result};

/// Label value ignored by the loss (PyTorch / Burn cross-entropy convention).
pub const IGNORE_INDEX: i64 = -100;

/// The few tokenizer operations the data pipeline needs.
pub trait TextTokenizer {
    /// Token ids of `text`, without special tokens.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Text of token ids (special tokens skipped).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Beginning-of-sequence id, if the model uses one.
    fn bos_id(&self) -> Option<u32>;
    /// End-of-sequence id, if the model uses one.
    fn eos_id(&self) -> Option<u32>;
    /// Padding id (any id works: padded positions are masked).
    fn pad_id(&self) -> u32;
}

/// Which part of the prompt to cut when a sequence is too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Drop tokens from the prompt's start.
    #[default]
    Left,
    /// Drop tokens from the prompt's middle (keep its first and last halves).
    Middle,
}

/// Encoding settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Maximum sequence length including special tokens.
    pub max_len: usize,
    /// Where to cut the prompt.
    pub truncation: Truncation,
    /// Prepend BOS (when the tokenizer has one).
    pub add_bos: bool,
    /// Append EOS to training targets (when the tokenizer has one).
    pub add_eos: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            max_len: 1024,
            truncation: Truncation::Left,
            add_bos: true,
            add_eos: true,
        }
    }
}

/// One encoded example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Example id.
    pub id: String,
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Labels, same length as `input_ids` ([`IGNORE_INDEX`] outside the target).
    pub labels: Vec<i64>,
    /// Number of leading positions that are BOS + prompt.
    pub prompt_len: usize,
    /// Prompt tokens removed by truncation (0 when it fit).
    pub prompt_tokens_cut: usize,
}

impl Encoded {
    /// The prompt part (BOS + prompt), e.g. for the router or for generation.
    pub fn prompt_ids(&self) -> &[u32] {
        &self.input_ids[..self.prompt_len]
    }
}

fn cut_prompt(prompt: Vec<u32>, budget: usize, how: Truncation) -> (Vec<u32>, usize) {
    if prompt.len() <= budget {
        return (prompt, 0);
    }
    let cut = prompt.len() - budget;
    let kept = match how {
        Truncation::Left => prompt[cut..].to_vec(),
        Truncation::Middle => {
            let head = budget / 2;
            let tail = budget - head;
            let mut v = prompt[..head].to_vec();
            v.extend_from_slice(&prompt[prompt.len() - tail..]);
            v
        }
    };
    (kept, cut)
}

/// Encodes a prompt and its target for training.
pub fn encode_pair(
    tok: &dyn TextTokenizer,
    item: &Prompted,
    opts: &EncodeOptions,
) -> Result<Encoded> {
    let bos = tok.bos_id().filter(|_| opts.add_bos);
    let eos = tok.eos_id().filter(|_| opts.add_eos);
    let target = tok.encode(&item.target)?;
    let special = usize::from(bos.is_some()) + usize::from(eos.is_some());
    if target.len() + special > opts.max_len {
        return Err(DataError::AnswerTooLong {
            id: item.id.clone(),
            answer_tokens: target.len(),
            special,
            max_len: opts.max_len,
        });
    }
    let budget = opts.max_len - target.len() - special;
    let (prompt, cut) = cut_prompt(tok.encode(&item.prompt)?, budget, opts.truncation);
    let mut input_ids = Vec::with_capacity(opts.max_len);
    input_ids.extend(bos);
    input_ids.extend_from_slice(&prompt);
    let prompt_len = input_ids.len();
    input_ids.extend_from_slice(&target);
    input_ids.extend(eos);
    let mut labels = vec![IGNORE_INDEX; prompt_len];
    labels.extend(input_ids[prompt_len..].iter().map(|&t| i64::from(t)));
    Ok(Encoded {
        id: item.id.clone(),
        input_ids,
        labels,
        prompt_len,
        prompt_tokens_cut: cut,
    })
}

/// Encodes a prompt alone (generation, router input); labels are all [`IGNORE_INDEX`].
/// `reserve` tokens are kept free for generation.
pub fn encode_prompt(
    tok: &dyn TextTokenizer,
    id: &str,
    prompt: &str,
    opts: &EncodeOptions,
    reserve: usize,
) -> Result<Encoded> {
    let bos = tok.bos_id().filter(|_| opts.add_bos);
    let budget = opts
        .max_len
        .checked_sub(reserve + usize::from(bos.is_some()))
        .ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "max_len {} leaves no room for the prompt",
                opts.max_len
            ))
        })?;
    let (prompt, cut) = cut_prompt(tok.encode(prompt)?, budget, opts.truncation);
    let mut input_ids: Vec<u32> = bos.into_iter().collect();
    input_ids.extend_from_slice(&prompt);
    Ok(Encoded {
        id: id.to_string(),
        labels: vec![IGNORE_INDEX; input_ids.len()],
        prompt_len: input_ids.len(),
        input_ids,
        prompt_tokens_cut: cut,
    })
}

/// What to do with examples whose answer alone exceeds `max_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TooLong {
    /// Fail with [`DataError::AnswersTooLong`] (counting all of them).
    #[default]
    Error,
    /// Leave them out; their ids are reported in [`EncodeReport::dropped`].
    Drop,
}

/// The result of encoding a set.
#[derive(Debug, Clone, Default)]
pub struct EncodeReport {
    /// Encoded examples, in input order.
    pub encoded: Vec<Encoded>,
    /// How many prompts were truncated.
    pub truncated: usize,
    /// Ids of examples left out because their answer did not fit.
    pub dropped: Vec<String>,
}

/// Encodes many examples for training, counting truncations and answers that do not fit.
pub fn encode_all(
    tok: &dyn TextTokenizer,
    items: &[Prompted],
    opts: &EncodeOptions,
    too_long: TooLong,
) -> Result<EncodeReport> {
    let mut report = EncodeReport::default();
    for item in items {
        match encode_pair(tok, item, opts) {
            Ok(e) => {
                report.truncated += usize::from(e.prompt_tokens_cut > 0);
                report.encoded.push(e);
            }
            Err(DataError::AnswerTooLong { id, .. }) => report.dropped.push(id),
            Err(e) => return Err(e),
        }
    }
    if too_long == TooLong::Error
        && let Some(first_id) = report.dropped.first()
    {
        return Err(DataError::AnswersTooLong {
            count: report.dropped.len(),
            total: items.len(),
            max_len: opts.max_len,
            first_id: first_id.clone(),
        });
    }
    Ok(report)
}

/// A Hugging Face `tokenizers::Tokenizer` with its special-token ids.
#[cfg(feature = "hf-tokenizers")]
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: u32,
}

#[cfg(feature = "hf-tokenizers")]
impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

#[cfg(feature = "hf-tokenizers")]
impl HfTokenizer {
    /// Common BOS token strings, tried in order by [`HfTokenizer::new_guess`].
    pub const BOS_TOKENS: [&'static str; 3] = ["<|begin_of_text|>", "<s>", "<bos>"];
    /// Common EOS token strings.
    pub const EOS_TOKENS: [&'static str; 4] = ["<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"];
    /// Common padding token strings.
    pub const PAD_TOKENS: [&'static str; 3] = ["<pad>", "<|finetune_right_pad_id|>", "[PAD]"];

    /// Wraps a tokenizer with explicit special ids.
    pub fn new(inner: tokenizers::Tokenizer, bos: Option<u32>, eos: Option<u32>, pad: u32) -> Self {
        Self {
            inner,
            bos,
            eos,
            pad,
        }
    }

    /// Wraps a tokenizer, finding BOS / EOS / PAD among common token strings (PAD falls back
    /// to EOS, then 0).
    pub fn new_guess(inner: tokenizers::Tokenizer) -> Self {
        let (bos, eos, pad) = Self::guess_special_ids(|t| inner.token_to_id(t));
        Self {
            inner,
            bos,
            eos,
            pad,
        }
    }

    /// `(bos, eos, pad)` among the common token strings ([`Self::BOS_TOKENS`], ...), given a
    /// token-string -> id lookup; PAD falls back to EOS, then 0.
    pub fn guess_special_ids(id: impl Fn(&str) -> Option<u32>) -> (Option<u32>, Option<u32>, u32) {
        let find = |names: &[&str]| names.iter().find_map(|n| id(n));
        let eos = find(&Self::EOS_TOKENS);
        (
            find(&Self::BOS_TOKENS),
            eos,
            find(&Self::PAD_TOKENS).or(eos).unwrap_or(0),
        )
    }

    /// Loads `tokenizer.json` and guesses the special ids ([`HfTokenizer::new_guess`]).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| DataError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::new_guess(inner))
    }

    /// Overrides the EOS id (e.g. `<|eot_id|>` for chat models).
    pub fn with_eos(mut self, eos: Option<u32>) -> Self {
        self.eos = eos;
        self
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(feature = "hf-tokenizers")]
impl TextTokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| DataError::Tokenizer(e.to_string()))
    }

    fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    fn pad_id(&self) -> u32 {
        self.pad
    }
}
