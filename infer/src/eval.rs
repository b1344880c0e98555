//! Evaluation: generate an answer for every example with the method's inference ranks, score
//! it with the task metric, and report per-set tables, the average rank and the average
//! activated LoRA parameters per input (SPEC 4).

use std::collections::HashSet;

use burn::tensor::backend::Backend;
use datasets::metrics::{EvalOptions, Evaluator, ScoreTable, sample_score};
use datasets::{Example, Task};
use flexi_burn::params::activated_params_by_rank;
use flexi_burn::params::average_activated_params_by_rank;
use flexi_burn::{RankSchedule, SampleRanks, inference_ranks};
use indicatif::ProgressBar;
use models::llama::{GenerationConfig, Llama, generate};
use serde::Serialize;

use crate::error::{InferError, Result};
use crate::text::LmText;

/// Which rank each evaluated input gets.
#[derive(Clone, Debug)]
pub enum RankPolicy {
    /// The base model alone (rank 0).
    Base,
    /// A method's inference schedule (LoRA: fixed; DyLoRA: its eval rank; DyLoRA+: random per
    /// batch, seeded): batch `i` of the evaluation (in the order batches run) gets
    /// [`flexi_burn::inference_ranks`]`(schedule, seed, i, len)`.
    Schedule {
        /// The schedule.
        schedule: RankSchedule,
        /// Seed of random draws.
        seed: u64,
    },
    /// One rank per example, in the order of the examples (Flexi-LoRA: the router's).
    PerExample(Vec<usize>),
}

impl RankPolicy {
    /// The ranks of one batch: `batch_index` counts the batches run so far, `members` are the
    /// indices of the batch's examples.
    pub fn batch_ranks(&self, batch_index: usize, members: &[usize]) -> Result<SampleRanks> {
        Ok(match self {
            RankPolicy::Base => SampleRanks::uniform(members.len(), 0),
            RankPolicy::Schedule { schedule, seed } => {
                inference_ranks(schedule, *seed, batch_index, members.len(), None)?
            }
            RankPolicy::PerExample(ranks) => SampleRanks::new(
                members
                    .iter()
                    .map(|&i| {
                        ranks.get(i).copied().ok_or_else(|| {
                            InferError::Invalid(format!(
                                "{} per-example ranks for example {} and beyond",
                                ranks.len(),
                                i + 1
                            ))
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// Checks that the policy covers `n` examples.
    fn check(&self, n: usize) -> Result<()> {
        match self {
            RankPolicy::PerExample(r) if r.len() != n => Err(InferError::Invalid(format!(
                "{} per-example ranks for {n} examples",
                r.len()
            ))),
            _ => Ok(()),
        }
    }
}

/// Errors on the first id that occurs twice in `examples` (predictions, labels and router
/// ranks are keyed by id, so a repeated id would silently overwrite another example's).
pub fn check_unique_ids(examples: &[Example], origin: &str) -> Result<()> {
    let mut seen = HashSet::with_capacity(examples.len());
    for e in examples {
        if !seen.insert(e.id.as_str()) {
            return Err(InferError::DuplicateId {
                origin: origin.to_string(),
                id: e.id.clone(),
            });
        }
    }
    Ok(())
}

/// Generation and batching settings.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// Prompts per generation batch.
    pub batch_size: usize,
    /// Longest answer.
    pub max_new_tokens: usize,
    /// Longest prompt + answer.
    pub max_len: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// One evaluated example.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// Example id.
    pub id: String,
    /// Data set.
    pub source: String,
    /// Rank used.
    pub rank: usize,
    /// Generated answer.
    pub prediction: String,
    /// Per-sample score (F1 / correct / WER).
    pub score: f64,
    /// The generation reached `max_new_tokens` without a stop token: the answer was cut, and
    /// the score read whatever the cut text held.
    pub truncated: bool,
}

/// Everything an evaluation run measured.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// One table per task: every set and the average.
    pub tables: Vec<ScoreTable>,
    /// Mean rank over the inputs.
    pub mean_rank: f64,
    /// Average activated LoRA parameters per input.
    pub activated_params: f64,
    /// Per-example results.
    pub predictions: Vec<Prediction>,
    /// How many generations were cut at `max_new_tokens` (see [`Prediction::truncated`]).
    pub truncated: usize,
    /// The generation limit the report was made with (0 where nothing was generated here,
    /// e.g. a report scored from given answers).
    pub max_new_tokens: usize,
}

impl EvalReport {
    /// The main metric: the first value of the first table's average row (accuracy, F1 or
    /// WER, in percent).
    pub fn main_metric(&self) -> f64 {
        self.tables
            .first()
            .and_then(|t| t.average.as_ref().or(t.rows.last()))
            .and_then(|row| row.values.first().copied())
            .unwrap_or(f64::NAN)
    }

    /// The average of the metric named `name` (e.g. `"WER"`, `"CER"`) in the first table that
    /// has it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.tables.iter().find_map(|t| {
            let col = t.metrics.iter().position(|m| m == name)?;
            let row = t.average.as_ref().or(t.rows.last())?;
            row.values.get(col).copied()
        })
    }
}

/// Generates and scores every example.
pub fn evaluate<B: Backend>(
    model: &Llama<B>,
    text: &LmText,
    examples: &[Example],
    policy: &RankPolicy,
    settings: &EvalSettings,
    title: &str,
) -> Result<EvalReport> {
    if examples.is_empty() {
        return Err(InferError::Invalid("no example to evaluate".into()));
    }
    if settings.batch_size == 0 {
        return Err(InferError::Invalid("batch_size must be at least 1".into()));
    }
    check_unique_ids(examples, title)?;
    policy.check(examples.len())?;
    // Encode first (clear errors before any generation), then batch by length. Prompt and
    // answer never ask for more than the model's context: a longer prompt is cut (from the
    // left, as in training) to leave room for the answer.
    let max_len = settings.max_len.min(model.config.max_position_embeddings);
    let prompts: Vec<Vec<u32>> = examples
        .iter()
        .map(|ex| text.encode_prompt(ex, max_len, settings.max_new_tokens))
        .collect::<Result<_>>()?;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());

    let pb = if settings.progress {
        crate::progress::bar(
            examples.len() as u64,
            "{prefix} [{bar:30}] {pos}/{len} [{elapsed}<{eta}]",
            format!("eval {title}"),
        )
    } else {
        ProgressBar::hidden()
    };
    let gen_config = GenerationConfig {
        pad_token_id: text.pad_id(),
        ..GenerationConfig::greedy(settings.max_new_tokens, text.stop_ids.clone())
    };
    let mut answers: Vec<(String, usize)> = vec![(String::new(), 0); examples.len()];
    let mut truncated = vec![false; examples.len()];
    for (batch_index, chunk) in order.chunks(settings.batch_size).enumerate() {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let ranks = policy.batch_ranks(batch_index, chunk)?;
        let out = generate(model, &batch, &ranks, &gen_config)?;
        for (j, (&i, tokens)) in chunk.iter().zip(&out.tokens).enumerate() {
            answers[i] = (text.decode_answer(tokens)?, ranks.as_slice()[j]);
            truncated[i] = was_truncated(tokens, out.stopped_on_eos[j], text, settings);
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();

    let mut report = score(examples, &answers, title, &activated_params_by_rank(model));
    mark_truncated(&mut report, &truncated, settings.max_new_tokens);
    Ok(report)
}

/// Whether a generation was cut at the limit: it never produced a stop token and used up
/// every new token it was allowed.
pub fn was_truncated(
    tokens: &[u32],
    stopped: bool,
    text: &LmText,
    settings: &EvalSettings,
) -> bool {
    !stopped
        && !tokens.iter().any(|t| text.stop_ids.contains(t))
        && tokens.len() >= settings.max_new_tokens
}

/// Records which answers of `report` were cut at `max_new_tokens` (one flag per prediction).
pub fn mark_truncated(report: &mut EvalReport, truncated: &[bool], max_new_tokens: usize) {
    for (p, &t) in report.predictions.iter_mut().zip(truncated) {
        p.truncated = t;
    }
    report.truncated = truncated.iter().filter(|&&t| t).count();
    report.max_new_tokens = max_new_tokens;
}

/// A generation limit that fits the task's answers: GSM8K-style reasoning runs to a few
/// hundred tokens (its reference solutions average ~120 Llama-3 tokens, the longest ~400), an
/// extractive QA answer is a short span, a transcript of a 30 s window is at most Whisper's
/// 224-token decoder budget. Cut answers are counted in every report
/// ([`EvalReport::truncated`]).
pub fn default_max_new_tokens(task: Task) -> usize {
    match task {
        Task::Math => 256,
        Task::Qa => 32,
        Task::Speech => 224,
    }
}

/// Scores `answers` (text and rank, one per example) with each example's task metric: the
/// report of [`evaluate`] and of speech evaluation alike.
pub fn score(
    examples: &[Example],
    answers: &[(String, usize)],
    title: &str,
    activated_by_rank: &[usize],
) -> EvalReport {
    let options = EvalOptions::default();
    let mut evaluator = Evaluator::new(options);
    let mut predictions = Vec::with_capacity(examples.len());
    for (ex, (pred, rank)) in examples.iter().zip(answers) {
        evaluator.add(ex, pred);
        predictions.push(Prediction {
            id: ex.id.clone(),
            source: ex.source.clone(),
            rank: *rank,
            prediction: pred.clone(),
            score: sample_score(ex, pred, &options),
            truncated: false,
        });
    }
    let ranks: Vec<usize> = answers.iter().map(|(_, r)| *r).collect();
    EvalReport {
        tables: evaluator.tables(title),
        mean_rank: ranks.iter().sum::<usize>() as f64 / ranks.len().max(1) as f64,
        activated_params: average_activated_params_by_rank(activated_by_rank, &ranks),
        predictions,
        truncated: 0,
        max_new_tokens: 0,
    }
}
