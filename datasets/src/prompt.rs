//! Prompt templates per task, and the hook for a model's chat template.
//!
//! A [`PromptTemplate`] is plain text with the placeholders `{question}`, `{context}` and
//! `{source}`. The defaults are `Question: {question}\nAnswer:` (math),
//! `Context: {context}\nQuestion: {question}\nAnswer:` (QA) and an empty prompt for speech
//! (the audio is the input; the target is the transcript). The target is the example's
//! [`Example::target`] after [`PromptTemplate::target_prefix`] (a space by default).
//!
//! A model with a chat format supplies a [`ChatTemplate`]; the rendered template text then
//! becomes the user turn and the target is followed by [`ChatTemplate::end_of_turn`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{DataError, Example, Result, Task};

/// Placeholders a template may use.
pub const PLACEHOLDERS: [&str; 3] = ["question", "context", "source"];

/// Prompt text for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptTemplate {
    /// Template for examples with a context (QA).
    pub with_context: String,
    /// Template for examples without one.
    pub without_context: String,
    /// Text put before the target (a space after `Answer:`).
    pub target_prefix: String,
    /// Optional system message, used only with a chat template.
    pub system: Option<String>,
}

impl PromptTemplate {
    /// A template; see [`PromptTemplate::validate`].
    pub fn new(
        with_context: impl Into<String>,
        without_context: impl Into<String>,
    ) -> Result<Self> {
        let t = Self {
            with_context: with_context.into(),
            without_context: without_context.into(),
            target_prefix: " ".into(),
            system: None,
        };
        t.validate()?;
        Ok(t)
    }

    /// The default template of a task.
    pub fn default_for(task: Task) -> Self {
        let (with_context, without_context, prefix) = match task {
            Task::Qa => (
                "Context: {context}\nQuestion: {question}\nAnswer:",
                "Question: {question}\nAnswer:",
                " ",
            ),
            Task::Math => (
                "{context}\nQuestion: {question}\nAnswer:",
                "Question: {question}\nAnswer:",
                " ",
            ),
            Task::Speech => ("", "", ""),
        };
        Self {
            with_context: with_context.into(),
            without_context: without_context.into(),
            target_prefix: prefix.into(),
            system: None,
        }
    }

    /// Checks that every `{name}` is a known placeholder (`{{` and `}}` are literal braces).
    pub fn validate(&self) -> Result<()> {
        for t in [&self.with_context, &self.without_context] {
            let mut rest = t.as_str();
            while let Some(pos) = rest.find('{') {
                if rest[pos..].starts_with("{{") {
                    rest = &rest[pos + 2..];
                    continue;
                }
                let Some(end) = rest[pos..].find('}') else {
                    return Err(DataError::InvalidArgument(format!(
                        "template {t:?} has an unclosed `{{`"
                    )));
                };
                let name = &rest[pos + 1..pos + end];
                if !PLACEHOLDERS.contains(&name) {
                    return Err(DataError::InvalidArgument(format!(
                        "template {t:?} uses unknown placeholder {{{name}}} (known: {})",
                        PLACEHOLDERS.join(", ")
                    )));
                }
                rest = &rest[pos + end + 1..];
            }
        }
        Ok(())
    }

    /// Fills the template for an example.
    pub fn render(&self, example: &Example) -> String {
        let template = match &example.context {
            Some(_) => &self.with_context,
            None => &self.without_context,
        };
        fill(template, example)
    }
}

/// Substitutes placeholders in one pass, so that text inside a question is never expanded.
fn fill(template: &str, example: &Example) -> String {
    let mut out = String::with_capacity(template.len() + example.question.len());
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let value = PLACEHOLDERS.iter().find_map(|name| {
            let key = format!("{{{name}}}");
            tail.starts_with(&key).then(|| {
                let v = match *name {
                    "question" => example.question.as_str(),
                    "context" => example.context.as_deref().unwrap_or(""),
                    _ => example.source.as_str(),
                };
                (v, key.len())
            })
        });
        match value {
            Some((v, len)) => {
                out.push_str(v);
                rest = &tail[len..];
            }
            None => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A model's chat format, implemented by the model code (`infer` wraps the model's own
/// template); this crate has no chat format of its own, so there is one definition of each.
pub trait ChatTemplate: Send + Sync {
    /// Wraps a user message (and an optional system message) so that the text ends where the
    /// assistant's answer begins. BOS is *not* included (the encoder adds it). Errors (e.g. a
    /// template that refuses the conversation) are messages for the user.
    fn render(&self, system: Option<&str>, user: &str) -> std::result::Result<String, String>;

    /// Text that closes the assistant's turn, appended to training targets.
    fn end_of_turn(&self) -> &str {
        ""
    }
}

/// An example as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompted {
    /// Example id.
    pub id: String,
    /// The prompt (input text).
    pub prompt: String,
    /// The target (the text the loss covers).
    pub target: String,
}

/// Renders examples of any task with per-task templates and an optional chat template.
#[derive(Clone)]
pub struct Prompter {
    /// QA template.
    pub qa: PromptTemplate,
    /// Math template.
    pub math: PromptTemplate,
    /// Speech template.
    pub speech: PromptTemplate,
    chat: Option<Arc<dyn ChatTemplate>>,
}

impl fmt::Debug for Prompter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompter")
            .field("qa", &self.qa)
            .field("math", &self.math)
            .field("speech", &self.speech)
            .field("chat", &self.chat.is_some())
            .finish()
    }
}

impl Default for Prompter {
    fn default() -> Self {
        Self {
            qa: PromptTemplate::default_for(Task::Qa),
            math: PromptTemplate::default_for(Task::Math),
            speech: PromptTemplate::default_for(Task::Speech),
            chat: None,
        }
    }
}

impl Prompter {
    /// Uses a model's chat template.
    pub fn with_chat(mut self, chat: Arc<dyn ChatTemplate>) -> Self {
        self.chat = Some(chat);
        self
    }

    /// Replaces the template of one task.
    pub fn with_template(mut self, task: Task, template: PromptTemplate) -> Result<Self> {
        template.validate()?;
        *self.template_mut(task) = template;
        Ok(self)
    }

    /// The template of a task.
    pub fn template(&self, task: Task) -> &PromptTemplate {
        match task {
            Task::Qa => &self.qa,
            Task::Math => &self.math,
            Task::Speech => &self.speech,
        }
    }

    fn template_mut(&mut self, task: Task) -> &mut PromptTemplate {
        match task {
            Task::Qa => &mut self.qa,
            Task::Math => &mut self.math,
            Task::Speech => &mut self.speech,
        }
    }

    /// The prompt and target of an example.
    pub fn render(&self, example: &Example) -> Result<Prompted> {
        let t = self.template(example.task);
        let user = t.render(example);
        Ok(match &self.chat {
            Some(chat) => Prompted {
                id: example.id.clone(),
                prompt: chat.render(t.system.as_deref(), &user).map_err(|e| {
                    DataError::InvalidArgument(format!(
                        "example {}: the chat template failed: {e}",
                        example.id
                    ))
                })?,
                target: format!("{}{}", example.target, chat.end_of_turn()),
            },
            None => Prompted {
                id: example.id.clone(),
                prompt: user,
                target: format!("{}{}", t.target_prefix, example.target),
            },
        })
    }
}
