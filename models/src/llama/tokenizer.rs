//! The tokenizer (`tokenizer.json`, Hugging Face `tokenizers`) and chat templates: the model's
//! own Jinja `chat_template` (from `tokenizer_config.json` or GGUF metadata) when it ships one,
//! rendered as transformers renders it; built-in Llama 3 instruct and ChatML (SmolLM2) as the
//! fallback for vocabularies without a template.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{LlamaError, Result};

/// A `tokenizer.json` tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    template: Option<JinjaChat>,
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
        let config = path.with_file_name("tokenizer_config.json");
        let template = if config.is_file() {
            jinja_from_config(&config)?
        } else {
            None
        };
        Ok(Self {
            inner,
            path,
            template,
        })
    }

    /// Wraps a tokenizer built elsewhere (e.g. from GGUF metadata by `models::gguf`);
    /// `origin` names its source in messages.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, origin: impl Into<PathBuf>) -> Self {
        Self {
            inner,
            path: origin.into(),
            template: None,
        }
    }

    /// Uses `template` as the model's chat template (e.g. GGUF's `tokenizer.chat_template`).
    pub fn with_chat_template(mut self, template: JinjaChat) -> Self {
        self.template = Some(template);
        self
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

    /// Refuses a tokenizer whose token ids do not fit a model of `vocab_size` embeddings (the
    /// tokenizer of another model): [`LlamaError::Tokenizer`] naming the file and both sizes.
    /// A model may have more embeddings than the tokenizer has tokens (padded vocabularies).
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        let max_id = self.inner.get_vocab(true).into_values().max();
        match max_id {
            Some(id) if id as usize >= vocab_size => Err(self.err(format!(
                "has token ids up to {id}, but the model's vocab_size is {vocab_size}: it is \
                 the tokenizer of another model"
            ))),
            _ => Ok(()),
        }
    }

    /// The model's chat template: its own Jinja template when it ships one, else the one the
    /// vocabulary implies (Llama 3 if it has `<|start_header_id|>`, ChatML if it has
    /// `<|im_start|>`), none otherwise.
    pub fn chat_template(&self) -> Option<ChatTemplate> {
        if let Some(t) = &self.template {
            Some(ChatTemplate::Jinja(t.clone()))
        } else if self.token_id("<|start_header_id|>").is_some() {
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

/// The `chat_template` of a `tokenizer_config.json` (a string, or a list of named templates of
/// which `default` is used), with its `bos_token` / `eos_token` (strings or `{"content": ..}`).
fn jinja_from_config(path: &Path) -> Result<Option<JinjaChat>> {
    let bad = |message: String| LlamaError::ChatTemplate {
        origin: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| LlamaError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let source = match v.get("chat_template") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .ok_or_else(
                || bad("chat_template: a list without a template named \"default\"".into()),
            )?
            .to_string(),
        Some(other) => {
            return Err(bad(format!(
                "chat_template: expected a string or a list of {{name, template}}, found {other}"
            )));
        }
    };
    let token = |key: &str| -> String {
        match v.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    };
    JinjaChat::new(source, token("bos_token"), token("eos_token"), path).map(Some)
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
    /// The model's own Jinja template.
    Jinja(JinjaChat),
}
/// A model's own chat template: the Jinja source of `tokenizer_config.json`'s `chat_template`
/// (or GGUF's `tokenizer.chat_template`), rendered with `minijinja` the way transformers'
/// `apply_chat_template` renders it (`trim_blocks`, `lstrip_blocks`, Python string methods,
/// `raise_exception`, `strftime_now`, `bos_token` / `eos_token` in the context).
#[derive(Clone)]
pub struct JinjaChat {
    source: String,
    bos_token: String,
    eos_token: String,
    env: Arc<minijinja::Environment<'static>>,
}

impl std::fmt::Debug for JinjaChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A short, stable identity: the template's hash (routers record it).
        // The FNV-1a the project also uses for stable parameter ids.
        write!(
            f,
            "Jinja(fnv1a {:016x})",
            flexi_burn::adapters::path_hash(&self.source)
        )
    }
}

impl PartialEq for JinjaChat {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.bos_token == other.bos_token
            && self.eos_token == other.eos_token
    }
}

impl Eq for JinjaChat {}

/// Today's date as `strftime` would format it with the directives chat templates use
/// (`%d %b %Y`, `%Y-%m-%d`, ...), from the system clock in UTC.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('b') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl JinjaChat {
    /// Compiles a template; `origin` names its file in errors.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
        origin: &Path,
    ) -> Result<Self> {
        let source = source.into();
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| LlamaError::ChatTemplate {
                origin: origin.to_path_buf(),
                message: e.to_string(),
            })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_function("strftime_now", |format: String| strftime_now(&format));
        env.add_template_owned("chat_template", source.clone())
            .map_err(|e| LlamaError::ChatTemplate {
                origin: origin.to_path_buf(),
                message: format!("not a valid Jinja template: {e:#}"),
            })?;
        Ok(Self {
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            env: Arc::new(env),
        })
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let err = |e: minijinja::Error| LlamaError::ChatTemplate {
            origin: PathBuf::from("chat_template"),
            message: format!("{e:#}"),
        };
        let t = self.env.get_template("chat_template").map_err(err)?;
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                minijinja::context! { role => m.role.clone(), content => m.content.clone() }
            })
            .collect();
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        })
        .map_err(err)
    }

    /// End-of-turn markers the template writes, in the order they appear, then its eos token.
    fn stop_tokens(&self) -> Vec<String> {
        let mut found: Vec<(usize, &str)> = [
            "<|eot_id|>",
            "<|eom_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|end_of_text|>",
            "<|endoftext|>",
        ]
        .iter()
        .filter_map(|m| self.source.find(m).map(|i| (i, *m)))
        .collect();
        found.sort();
        let mut out: Vec<String> = found.into_iter().map(|(_, m)| m.to_string()).collect();
        if !self.eos_token.is_empty() && !out.contains(&self.eos_token) {
            out.push(self.eos_token.clone());
        }
        out
    }
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

    /// The end-of-turn tokens generation should stop on; the first closes an assistant turn.
    pub fn stop_tokens(&self) -> Vec<String> {
        let fixed: &[&str] = match self {
            ChatTemplate::Llama3 { .. } => &["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"],
            ChatTemplate::ChatMl { .. } => &["<|im_end|>", "<|endoftext|>"],
            ChatTemplate::Jinja(t) => return t.stop_tokens(),
        };
        fixed.iter().map(|s| s.to_string()).collect()
    }

    /// Renders `messages` as the prompt text; with `add_generation_prompt`, ends with the
    /// assistant header. Encode the result with `add_special_tokens = false` (the template
    /// writes `<|begin_of_text|>` itself). Only a Jinja template can fail (e.g. its
    /// `raise_exception` on a conversation it does not accept).
    pub fn apply(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut out = String::new();
        match self {
            ChatTemplate::Jinja(t) => return t.render(messages, add_generation_prompt),
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
        Ok(out)
    }
}
