//! Load a trained run in another program, on a plain (non-autodiff) backend, and evaluate it
//! with the run's own rank policy (for Flexi-LoRA: its router).
//!
//! ```text
//! cargo run --release -p train --example flexi_evaluate -- RUN DATA
//! ```
//!
//! Prints the main metric and one line per example: id, rank, answer (JSON string).

use std::path::PathBuf;

use anyhow::Result;
use burn::backend::Flex;
use infer::EvalSettings;
use train::FlexiRun;
use train::workflow::read_examples;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [run, data] = <[String; 2]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: flexi_evaluate RUN DATA"))?;
    let device = Default::default();
    let run = FlexiRun::<Flex>::load(&PathBuf::from(run), &device)?;
    let examples = read_examples(&PathBuf::from(data), None)?;
    let settings = EvalSettings {
        batch_size: 4,
        max_new_tokens: 6,
        max_len: run.max_len,
        progress: false,
    };
    let report = run.evaluate(&examples, &settings, &examples[0].source)?;
    let main = report
        .tables
        .first()
        .and_then(|t| t.average.as_ref().or(t.rows.last()))
        .and_then(|row| row.values.first().copied())
        .unwrap_or(f64::NAN);
    println!(
        "{}: {main:.4} (mean rank {:.2})",
        run.method(),
        report.mean_rank
    );
    for p in &report.predictions {
        // The answer as a JSON string (answers of a tiny random model hold control bytes).
        println!(
            "{}\t{}\t{}",
            p.id,
            p.rank,
            serde_json::to_string(&p.prediction)?
        );
    }
    Ok(())
}
