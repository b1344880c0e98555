//! Task metrics and their aggregation.
//!
//! - [`qa`]: MRQA official F1 / EM.
//! - [`math`]: final-answer extraction and numeric comparison.
//! - [`wer`]: WER / CER with Whisper-style normalisation.
//! - [`table`]: per-data-set tables with the average across sets.
//!
//! [`Evaluator`] scores `(example, prediction)` pairs of any task, keeps per-sample scores
//! (for difficulty labels) and builds one [`ScoreTable`] per task: QA `F1, EM`; math `Acc`;
//! speech `WER, CER, ACC` (ACC = 100 - WER). All table values are percentages.

pub mod math;
pub mod qa;
pub mod table;
pub mod wer;

use std::collections::BTreeMap;

pub use self::table::{ScoreRow, ScoreTable};
use self::wer::{EditCounts, Normalizer};
use crate::{Example, Task};

/// One scored sample: the per-sample score used for difficulty labels is
/// QA: F1 in 0..1; math: 1.0 correct / 0.0 wrong; speech: WER as a fraction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleScore {
    /// Example id.
    pub id: String,
    /// Data set name.
    pub source: String,
    /// Task of the example.
    pub task: Task,
    /// The score (see the type's docs).
    pub score: f64,
}

/// The per-sample score of a prediction (see [`SampleScore`]).
pub fn sample_score(example: &Example, prediction: &str, options: &EvalOptions) -> f64 {
    match example.task {
        Task::Qa => qa::score(prediction, &example.answers).f1,
        Task::Math => f64::from(u8::from(math::is_correct(
            prediction,
            &example.answers,
            options.tolerance,
        ))),
        Task::Speech => {
            let reference = example.answers.first().unwrap_or(&example.target);
            wer::wer(reference, prediction, options.normalizer)
        }
    }
}

/// Settings of the evaluator.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalOptions {
    /// Numeric tolerance for math answers.
    pub tolerance: math::Tolerance,
    /// Text normalisation for WER / CER.
    pub normalizer: Normalizer,
}

#[derive(Debug, Clone, Default)]
struct Accumulator {
    n: usize,
    em: f64,
    f1: f64,
    correct: usize,
    words: EditCounts,
    chars: EditCounts,
}

/// Accumulates scores per task and data set.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    options: EvalOptions,
    by_set: BTreeMap<(Task, String), Accumulator>,
    samples: Vec<SampleScore>,
}

impl Evaluator {
    /// A new evaluator.
    pub fn new(options: EvalOptions) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// Scores one prediction and returns its per-sample score.
    pub fn add(&mut self, example: &Example, prediction: &str) -> f64 {
        let acc = self
            .by_set
            .entry((example.task, example.source.clone()))
            .or_default();
        acc.n += 1;
        let score = match example.task {
            Task::Qa => {
                let s = qa::score(prediction, &example.answers);
                acc.em += s.em;
                acc.f1 += s.f1;
                s.f1
            }
            Task::Math => {
                let ok = math::is_correct(prediction, &example.answers, self.options.tolerance);
                acc.correct += usize::from(ok);
                f64::from(u8::from(ok))
            }
            Task::Speech => {
                let reference = example.answers.first().unwrap_or(&example.target);
                let w = wer::word_edits(reference, prediction, self.options.normalizer);
                acc.words.add(w);
                acc.chars.add(wer::char_edits(
                    reference,
                    prediction,
                    self.options.normalizer,
                ));
                w.rate()
            }
        };
        self.samples.push(SampleScore {
            id: example.id.clone(),
            source: example.source.clone(),
            task: example.task,
            score,
        });
        score
    }

    /// Per-sample scores in the order they were added.
    pub fn samples(&self) -> &[SampleScore] {
        &self.samples
    }

    /// The table of one task (`None` if no sample of that task was scored). Speech WER / CER
    /// are corpus-level (total errors / total reference length per set).
    pub fn table(&self, task: Task, title: &str) -> Option<ScoreTable> {
        let metrics: &[&str] = match task {
            Task::Qa => &["F1", "EM"],
            Task::Math => &["Acc"],
            Task::Speech => &["WER", "CER", "ACC"],
        };
        let mut table = ScoreTable::new(title, metrics);
        for ((t, set), acc) in &self.by_set {
            if *t != task {
                continue;
            }
            let n = acc.n.max(1) as f64;
            let values = match task {
                Task::Qa => vec![100.0 * acc.f1 / n, 100.0 * acc.em / n],
                Task::Math => vec![100.0 * acc.correct as f64 / n],
                Task::Speech => {
                    let w = 100.0 * acc.words.rate();
                    vec![w, 100.0 * acc.chars.rate(), 100.0 - w]
                }
            };
            table.push(set.clone(), acc.n, values);
        }
        (!table.rows.is_empty()).then_some(table)
    }

    /// One table per task that has samples.
    pub fn tables(&self, title: &str) -> Vec<ScoreTable> {
        [Task::Qa, Task::Math, Task::Speech]
            .into_iter()
            .filter_map(|t| self.table(t, title))
            .collect()
    }
}
