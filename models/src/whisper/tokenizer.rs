//! Whisper's `tokenizer.json` (through the `tokenizers` crate) and the special-token prompt.
//!
//! Multilingual models are prompted with
//! `<|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>` (or `<|translate|>`);
//! English-only models (`*.en`) with `<|startoftranscript|> <|notimestamps|>`, as
//! transformers' `generate` does for them. Long-form transcription prompts without
//! `<|notimestamps|>` ([`WhisperTokenizer::timestamp_prompt`]) so that the model writes
//! timestamp tokens `<|0.00|>`, `<|0.02|>`, ... `<|30.00|>`: they follow `<|notimestamps|>`
//! (transformers' `timestamp_begin = no_timestamps_token_id + 1`). Many `tokenizer.json` files
//! do not list them (they are ids past the text vocabulary); where one does, its `<|0.00|>`
//! id is used.

use std::path::{Path, PathBuf};

use super::error::{Result, WhisperError};

/// The task token of a multilingual prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Task {
    /// `<|transcribe|>`: text in the spoken language.
    #[default]
    Transcribe,
    /// `<|translate|>`: English text.
    Translate,
}

/// A Whisper tokenizer with its special-token ids.
#[derive(Clone)]
pub struct WhisperTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|endoftext|>`.
    pub eot: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`, the first timestamp token (`<|notimestamps|>` + 1 unless the tokenizer
    /// lists `<|0.00|>`); ids from here on are timestamps in 0.02 s steps.
    pub timestamp_begin: u32,
}

impl std::fmt::Debug for WhisperTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperTokenizer")
            .field("path", &self.path)
            .field("sot", &self.sot)
            .field("eot", &self.eot)
            .field("no_timestamps", &self.no_timestamps)
            .field("timestamp_begin", &self.timestamp_begin)
            .finish_non_exhaustive()
    }
}

impl WhisperTokenizer {
    /// Reads `dir/tokenizer.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("tokenizer.json"))
    }

    /// Reads a `tokenizer.json`; it must define `<|startoftranscript|>`, `<|endoftext|>` and
    /// `<|notimestamps|>`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(WhisperError::Tokenizer {
                path,
                reason: "file not found".into(),
            });
        }
        let inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| WhisperError::Tokenizer {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let special = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| WhisperError::Tokenizer {
                    path: path.clone(),
                    reason: format!("no special token {token}: not a Whisper tokenizer"),
                })
        };
        let sot = special("<|startoftranscript|>")?;
        let eot = special("<|endoftext|>")?;
        let no_timestamps = special("<|notimestamps|>")?;
        let timestamp_begin = inner
            .token_to_id("<|0.00|>")
            .unwrap_or(no_timestamps.saturating_add(1));
        Ok(Self {
            sot,
            eot,
            no_timestamps,
            timestamp_begin,
            inner,
            path,
        })
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The decoder prompt. `multilingual` (see [`super::WhisperConfig::is_multilingual`])
    /// adds the language (`"en"`, `"de"`, ... or `"<|en|>"`; default English) and task tokens;
    /// an English-only model gets neither.
    pub fn prompt(
        &self,
        multilingual: bool,
        language: Option<&str>,
        task: Task,
    ) -> Result<Vec<u32>> {
        if !multilingual {
            return Ok(vec![self.sot, self.no_timestamps]);
        }
        let lang = language.unwrap_or("en");
        let lang_token = if lang.starts_with("<|") {
            lang.to_string()
        } else {
            format!("<|{lang}|>")
        };
        let lang_id = self
            .token_id(&lang_token)
            .ok_or_else(|| WhisperError::Tokenizer {
                path: self.path.clone(),
                reason: format!("unknown language token {lang_token}"),
            })?;
        let task_token = match task {
            Task::Transcribe => "<|transcribe|>",
            Task::Translate => "<|translate|>",
        };
        let task_id = self
            .token_id(task_token)
            .ok_or_else(|| WhisperError::Tokenizer {
                path: self.path.clone(),
                reason: format!("no task token {task_token}"),
            })?;
        Ok(vec![self.sot, lang_id, task_id, self.no_timestamps])
    }

    /// The prompt of long-form decoding with timestamps: [`Self::prompt`] without the final
    /// `<|notimestamps|>` (`<|startoftranscript|>` alone for English-only models).
    pub fn timestamp_prompt(
        &self,
        multilingual: bool,
        language: Option<&str>,
        task: Task,
    ) -> Result<Vec<u32>> {
        let mut prompt = self.prompt(multilingual, language, task)?;
        prompt.retain(|&t| t != self.no_timestamps);
        Ok(prompt)
    }

    /// Whether `id` is a timestamp token (`<|0.00|>` or later).
    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.timestamp_begin
    }

    /// Text of `ids`, without special tokens, trimmed.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map(|s| s.trim().to_string())
            .map_err(|e| WhisperError::Tokenizer {
                path: self.path.clone(),
                reason: format!("decoding {} ids: {e}", ids.len()),
            })
    }

    /// Ids of `text` without special tokens (e.g. training targets).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| WhisperError::Tokenizer {
                path: self.path.clone(),
                reason: format!("encoding: {e}"),
            })
    }

    /// The underlying tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
