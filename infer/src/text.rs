//! From examples to token ids and back, for a Llama-family model: the task prompt (and the
//! model's chat template when it has one), answer-only training labels, generation prompts,
//! stop tokens.

use std::path::Path;
use std::sync::Arc;

use datasets::prompt::{ChatTemplate as DataChat, Prompter};
use datasets::tokenize::{EncodeOptions, Encoded, HfTokenizer, encode_pair, encode_prompt};
use datasets::{Example, TextTokenizer};
use models::llama::{ChatTemplate, Message, Tokenizer};

use crate::error::{InferError, Result};

/// A model's chat template seen through the data pipeline's interface.
struct ModelChat {
    template: ChatTemplate,
    /// The encoder adds BOS itself: a template that writes it has it removed.
    bos: Option<String>,
    end_of_turn: String,
}

impl DataChat for ModelChat {
    fn render(&self, system: Option<&str>, user: &str) -> std::result::Result<String, String> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::user(user));
        let text = self
            .template
            .apply(&messages, true)
            .map_err(|e| e.to_string())?;
        Ok(match &self.bos {
            Some(bos) => text
                .strip_prefix(bos.as_str())
                .map_or(text.clone(), str::to_string),
            None => text,
        })
    }

    fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }
}

/// The special ids the data pipeline adds (guessed among common token strings as
/// [`HfTokenizer::new_guess`] does; no EOS on targets with a chat template, whose turn ends
/// with its own token).
#[derive(Clone, Copy, Debug)]
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    pad: u32,
}

/// The model's one tokenizer seen through the data pipeline's interface (no second copy).
struct DataTok<'a>(&'a Tokenizer, SpecialIds);

impl TextTokenizer for DataTok<'_> {
    fn encode(&self, text: &str) -> datasets::Result<Vec<u32>> {
        self.0
            .encode(text, false)
            .map_err(|e| datasets::DataError::Tokenizer(e.to_string()))
    }

    fn decode(&self, ids: &[u32]) -> datasets::Result<String> {
        self.0
            .decode(ids, true)
            .map_err(|e| datasets::DataError::Tokenizer(e.to_string()))
    }

    fn bos_id(&self) -> Option<u32> {
        self.1.bos
    }

    fn eos_id(&self) -> Option<u32> {
        self.1.eos
    }

    fn pad_id(&self) -> u32 {
        self.1.pad
    }
}

/// Tokenizer, prompt templates and stop tokens of one model.
pub struct LmText {
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    special: SpecialIds,
    /// Task templates (with the chat template when used).
    pub prompter: Prompter,
    /// Generation stops on any of these.
    pub stop_ids: Vec<u32>,
    /// Whether the chat template is applied.
    pub chat: bool,
    template: Option<ChatTemplate>,
}

impl LmText {
    /// Tokenizer of a HF directory or a `.gguf` file.
    pub fn load(model: &Path, use_chat: bool) -> Result<Self> {
        Ok(Self::new(
            models::auto::load_tokenizer_any(model)?,
            use_chat,
        ))
    }

    /// Refuses a tokenizer whose ids do not fit a model of `vocab_size` embeddings (the
    /// tokenizer of another model), naming the tokenizer file and both sizes.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        Ok(self.tokenizer.check_vocab(vocab_size)?)
    }

    /// Wraps a tokenizer; the chat template is used when `use_chat` and the tokenizer has one.
    pub fn new(tokenizer: Tokenizer, use_chat: bool) -> Self {
        let chat = use_chat.then(|| tokenizer.chat_template()).flatten();
        let (bos, eos, pad) = HfTokenizer::guess_special_ids(|t| tokenizer.token_id(t));
        let mut special = SpecialIds { bos, eos, pad };
        let mut prompter = Prompter::default();
        let mut stop_ids: Vec<u32> = special.eos.into_iter().collect();
        if let Some(c) = &chat {
            for s in c.stop_tokens() {
                if let Some(id) = tokenizer.token_id(&s)
                    && !stop_ids.contains(&id)
                {
                    stop_ids.push(id);
                }
            }
            // With a chat template the turn ends with its own token (already in the target).
            special.eos = None;
            let bos = special.bos.and_then(|id| tokenizer.inner().id_to_token(id));
            prompter = prompter.with_chat(Arc::new(ModelChat {
                template: c.clone(),
                bos,
                end_of_turn: c.stop_tokens().into_iter().next().unwrap_or_default(),
            }));
        }
        Self {
            chat: chat.is_some(),
            template: chat,
            tokenizer,
            special,
            prompter,
            stop_ids,
        }
    }

    /// A name of the chat template the prompts are rendered with (`None`: plain prompts), as
    /// recorded in a router's input definition.
    pub fn chat_template_name(&self) -> Option<String> {
        self.template.as_ref().map(|t| format!("{t:?}"))
    }

    /// Padding id.
    pub fn pad_id(&self) -> u32 {
        self.special.pad
    }

    /// Prompt + answer with answer-only labels, at most `max_len` tokens (the prompt is cut
    /// from the left, never the answer).
    pub fn encode_train(&self, ex: &Example, max_len: usize) -> Result<Encoded> {
        let p = self.prompter.render(ex)?;
        let opts = EncodeOptions {
            max_len,
            ..Default::default()
        };
        Ok(encode_pair(
            &DataTok(&self.tokenizer, self.special),
            &p,
            &opts,
        )?)
    }

    /// The generation prompt of an example, leaving `reserve` tokens for the answer.
    pub fn encode_prompt(&self, ex: &Example, max_len: usize, reserve: usize) -> Result<Vec<u32>> {
        let p = self.prompter.render(ex)?;
        let opts = EncodeOptions {
            max_len,
            ..Default::default()
        };
        if max_len <= reserve {
            return Err(InferError::Invalid(format!(
                "max_len {max_len} leaves no room for a prompt with {reserve} new tokens"
            )));
        }
        Ok(encode_prompt(
            &DataTok(&self.tokenizer, self.special),
            &ex.id,
            &p.prompt,
            &opts,
            reserve,
        )?
        .input_ids)
    }

    /// Text of generated ids, cut at the first stop token, special tokens removed.
    pub fn decode_answer(&self, ids: &[u32]) -> Result<String> {
        let end = ids
            .iter()
            .position(|t| self.stop_ids.contains(t))
            .unwrap_or(ids.len());
        Ok(self.tokenizer.decode(&ids[..end], true)?.trim().to_string())
    }
}
