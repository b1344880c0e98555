//! Data for Flexi-LoRA fine-tuning: readers, prompts, tokenisation, batching, metrics and
//! router difficulty labels for the QA (MRQA), math (GSM8K, MetaMathQA, SVAMP, MultiArith,
//! MAWPS) and speech (LibriSpeech) tasks. No Burn dependency: everything is plain Rust data.
//!
//! Module layout:
//! - [`example`]: the common [`Example`] type every reader returns, and [`Task`].
//! - [`format`]: the [`Format`] enum (named by the user or detected from the file).
//! - [`readers`]: streaming readers ([`readers::open`], [`readers::read_all`]) with
//!   file:line errors and `skip_bad`.
//! - [`prompt`]: per-task prompt templates and the chat-template hook.
//! - [`tokenize`]: the [`TextTokenizer`] trait (with a Hugging Face `tokenizers` impl), and
//!   encoding with answer-preserving truncation and answer-only labels.
//! - [`batch`]: padding, attention masks, seeded shuffling and batching.
//! - [`metrics`]: MRQA F1 / EM, math accuracy, WER / CER, per-set tables.
//! - [`labels`]: easy / hard difficulty labels and the balanced router split (JSONL).
//! - [`speech`]: a synthetic LibriSpeech-layout speech set spoken by `espeak-ng`.
//! - [`error`]: the crate's [`DataError`].

pub mod batch;
pub mod error;
pub mod example;
pub mod format;
pub mod labels;
pub mod metrics;
pub mod prompt;
pub mod readers;
pub mod speech;
pub mod subset;
pub mod tokenize;

pub use error::{DataError, Result};
pub use example::{Example, Task};
pub use format::Format;
pub use prompt::{PromptTemplate, Prompted, Prompter};
pub use readers::{Dataset, ExampleReader, ReadOptions, detect_format, open, read_all};
pub use tokenize::{EncodeOptions, Encoded, TextTokenizer};
