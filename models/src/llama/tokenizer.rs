//! The tokenizer (`tokenizer.json`, Hugging Face `tokenizers`) and chat templates applied in
//! Rust: Llama 3 instruct and ChatML (SmolLM2).

use std::path::{Path, PathBuf};

use super::error::{LlamaError, Result};

/// A `tokenizer.json` tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` (or the file itself).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = if dir.is_dir() {
            dir.join("tokenizer.json")
        } else {
            dir.to_path_buf()
        };
        if !path.is_file() {
            return Err(LlamaError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| LlamaError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { inner, path })
    }

    /// Wraps a tokenizer built elsewhere (e.g. from GGUF metadata by `models::gguf`);
    /// `origin` names its source in messages.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, origin: impl Into<PathBuf>) -> Self {
        Self {
            inner,
            path: origin.into(),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> LlamaError {
        LlamaError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (e.g. Llama 3's
    /// `<|begin_of_text|>`). Special tokens written in `text` are recognised either way.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, optionally without special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.err(e))
    }

    /// The id of a token such as `<|eot_id|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The chat template the vocabulary implies: Llama 3 if it has `<|start_header_id|>`,
    /// ChatML if it has `<|im_start|>`, none otherwise.
    pub fn chat_template(&self) -> Option<ChatTemplate> {
        if self.token_id("<|start_header_id|>").is_some() {
            Some(ChatTemplate::llama3())
        } else if self.token_id("<|im_start|>").is_some() {
            Some(ChatTemplate::smollm2())
        } else {
            None
        }
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with a role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
}

/// The chat formats of the models this project fine-tunes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// Llama 3.1 / 3.2 instruct. With `date`, the system block starts with
    /// `Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n` and is always present
    /// (as in Meta's template; transformers fills today's date, "26 Jul 2024" without one);
    /// without it, the Llama 3.0 form (a system block only when a system message is given).
    Llama3 {
        /// The "Today Date" line, e.g. `26 Jul 2024`.
        date: Option<String>,
    },
    /// ChatML (`<|im_start|>role\n...<|im_end|>\n`), with an optional default system message
    /// inserted when the conversation has none (SmolLM2's template does this).
    ChatMl {
        /// Default system prompt.
        default_system: Option<String>,
    },
}

impl ChatTemplate {
    /// Llama 3.2 instruct with the template's fallback date.
    pub fn llama3() -> Self {
        ChatTemplate::Llama3 {
            date: Some("26 Jul 2024".into()),
        }
    }

    /// SmolLM2-Instruct's ChatML with its default system prompt.
    pub fn smollm2() -> Self {
        ChatTemplate::ChatMl {
            default_system: Some(
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into(),
            ),
        }
    }

    /// The end-of-turn tokens generation should stop on.
    pub fn stop_tokens(&self) -> &'static [&'static str] {
        match self {
            ChatTemplate::Llama3 { .. } => &["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"],
            ChatTemplate::ChatMl { .. } => &["<|im_end|>", "<|endoftext|>"],
        }
    }

    /// Renders `messages` as the prompt text; with `add_generation_prompt`, ends with the
    /// assistant header. Encode the result with `add_special_tokens = false` (the template
    /// writes `<|begin_of_text|>` itself).
    pub fn apply(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        match self {
            ChatTemplate::Llama3 { date } => {
                out.push_str("<|begin_of_text|>");
                let (system, rest) = match messages.first() {
                    Some(m) if m.role == "system" => (Some(m.content.trim()), &messages[1..]),
                    _ => (None, messages),
                };
                let header = |out: &mut String, role: &str| {
                    out.push_str("<|start_header_id|>");
                    out.push_str(role);
                    out.push_str("<|end_header_id|>\n\n");
                };
                match date {
                    Some(date) => {
                        header(&mut out, "system");
                        out.push_str("Cutting Knowledge Date: December 2023\nToday Date: ");
                        out.push_str(date);
                        out.push_str("\n\n");
                        out.push_str(system.unwrap_or(""));
                        out.push_str("<|eot_id|>");
                    }
                    None => {
                        if let Some(system) = system {
                            header(&mut out, "system");
                            out.push_str(system);
                            out.push_str("<|eot_id|>");
                        }
                    }
                }
                for m in rest {
                    header(&mut out, &m.role);
                    out.push_str(m.content.trim());
                    out.push_str("<|eot_id|>");
                }
                if add_generation_prompt {
                    header(&mut out, "assistant");
                }
            }
            ChatTemplate::ChatMl { default_system } => {
                if let Some(system) = default_system
                    && messages.first().is_none_or(|m| m.role != "system")
                {
                    out.push_str("<|im_start|>system\n");
                    out.push_str(system);
                    out.push_str("<|im_end|>\n");
                }
                for m in messages {
                    out.push_str("<|im_start|>");
                    out.push_str(&m.role);
                    out.push('\n');
                    out.push_str(&m.content);
                    out.push_str("<|im_end|>\n");
                }
                if add_generation_prompt {
                    out.push_str("<|im_start|>assistant\n");
                }
            }
        }
        out
    }
}
