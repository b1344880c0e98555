//! A results table like the paper's: one row per data set and the unweighted average
//! across sets. Prints itself (Markdown) and serialises to JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One data set's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// Data set name.
    pub dataset: String,
    /// Number of samples scored.
    pub n: usize,
    /// One value per metric of the table, in the table's metric order.
    pub values: Vec<f64>,
}

/// Scores per data set for a list of metrics (e.g. `["F1", "EM"]`), plus their average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreTable {
    /// Caption (method or run name).
    pub title: String,
    /// Metric names, one per column.
    pub metrics: Vec<String>,
    /// Rows, one per data set.
    pub rows: Vec<ScoreRow>,
    /// Unweighted mean of the rows (as in the paper's "Avg." column); `None` when empty.
    pub average: Option<ScoreRow>,
}

impl ScoreTable {
    /// An empty table.
    pub fn new(title: impl Into<String>, metrics: &[&str]) -> Self {
        Self {
            title: title.into(),
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            rows: Vec::new(),
            average: None,
        }
    }

    /// Adds a row and refreshes the average.
    ///
    /// # Panics
    /// Never; rows with a wrong number of values are padded with `NaN` / truncated.
    pub fn push(&mut self, dataset: impl Into<String>, n: usize, mut values: Vec<f64>) {
        values.resize(self.metrics.len(), f64::NAN);
        self.rows.push(ScoreRow {
            dataset: dataset.into(),
            n,
            values,
        });
        self.average = self.compute_average();
    }

    fn compute_average(&self) -> Option<ScoreRow> {
        if self.rows.is_empty() {
            return None;
        }
        let k = self.rows.len() as f64;
        let values = (0..self.metrics.len())
            .map(|m| self.rows.iter().map(|r| r.values[m]).sum::<f64>() / k)
            .collect();
        Some(ScoreRow {
            dataset: "average".into(),
            n: self.rows.iter().map(|r| r.n).sum(),
            values,
        })
    }

    /// The value of `metric` for `dataset` (`"average"` for the average row).
    pub fn get(&self, dataset: &str, metric: &str) -> Option<f64> {
        let m = self.metrics.iter().position(|x| x == metric)?;
        self.rows
            .iter()
            .chain(self.average.iter())
            .find(|r| r.dataset == dataset)
            .map(|r| r.values[m])
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl fmt::Display for ScoreTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.title.is_empty() {
            writeln!(f, "{}", self.title)?;
        }
        write!(f, "| dataset | n |")?;
        for m in &self.metrics {
            write!(f, " {m} |")?;
        }
        writeln!(f)?;
        write!(f, "| --- | ---: |")?;
        for _ in &self.metrics {
            write!(f, " ---: |")?;
        }
        writeln!(f)?;
        for r in self.rows.iter().chain(self.average.iter()) {
            write!(f, "| {} | {} |", r.dataset, r.n)?;
            for v in &r.values {
                write!(f, " {v:.2} |")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
