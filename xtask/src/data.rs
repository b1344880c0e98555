//! `cargo xtask data ...`: look at data files and make the synthetic speech set.
//!
//! - `data inspect FILE [--format NAME] [--skip-bad] [--show N]`: the reader used, the number
//!   of examples (and of skipped records), and the first examples as the model sees them.
//! - `data speech --out DIR --n N [--seed S] [--speakers K] [--part all|train|test]`: speak N
//!   built-in sentences with espeak-ng into a 16 kHz LibriSpeech-layout tree (`apt-get
//!   install -y espeak-ng`); `--part train` and `--part test` draw from disjoint sentences.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use datasets::prompt::Prompter;
use datasets::speech::{SpeechConfig, synthesize};
use datasets::{Format, ReadOptions, open};

/// `data` subcommands.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Read a data file (or LibriSpeech tree) and show what the model will see.
    Inspect(InspectArgs),
    /// Synthesize a LibriSpeech-layout speech set with espeak-ng.
    Speech(SpeechArgs),
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// File (.jsonl, .jsonl.gz, .json, .csv) or LibriSpeech directory.
    file: PathBuf,
    /// Reader to use instead of detecting it (mrqa, gsm8k, metamathqa, svamp, multiarith,
    /// instruction, mawps-json, mawps-csv, librispeech).
    #[arg(long)]
    format: Option<Format>,
    /// Skip malformed records (and report how many) instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// How many examples to print.
    #[arg(long, default_value_t = 1)]
    show: usize,
    /// Data set name to give the examples (default: from the file).
    #[arg(long)]
    source: Option<String>,
}

#[derive(Args, Debug)]
struct SpeechArgs {
    /// Output directory (the split is written below it).
    #[arg(long)]
    out: PathBuf,
    /// Number of utterances.
    #[arg(long)]
    n: usize,
    /// Seed for sentences and speakers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of speakers (voice / speed / pitch combinations).
    #[arg(long, default_value_t = 8)]
    speakers: usize,
    /// Split directory name.
    #[arg(long, default_value = "synthetic")]
    split: String,
    /// Replace an existing split directory.
    #[arg(long)]
    overwrite: bool,
    /// Sentences to draw from: all, or train / test (a fixed partition, so a training set
    /// and a test set never share a sentence).
    #[arg(long, default_value = "all")]
    part: String,
}

/// Runs a `data` subcommand.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Inspect(a) => inspect(a),
        DataCommand::Speech(a) => speech(a),
    }
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let options = ReadOptions {
        format: a.format,
        skip_bad: a.skip_bad,
        source: a.source,
    };
    let mut reader = open(&a.file, &options)?;
    let how = if a.format.is_some() {
        "named"
    } else {
        "detected"
    };
    println!("file:     {}", a.file.display());
    println!(
        "reader:   {} ({how}; task {})",
        reader.format(),
        reader.format().task()
    );
    let prompter = Prompter::default();
    let mut shown = Vec::new();
    let mut count = 0usize;
    let mut sources = std::collections::BTreeMap::<String, usize>::new();
    for ex in reader.by_ref() {
        let ex = ex?;
        count += 1;
        *sources.entry(ex.source.clone()).or_default() += 1;
        if shown.len() < a.show {
            shown.push(ex);
        }
    }
    println!("examples: {count}");
    let sets: Vec<String> = sources.iter().map(|(s, n)| format!("{s} ({n})")).collect();
    println!("sets:     {}", sets.join(", "));
    if a.skip_bad {
        println!("skipped:  {} malformed records", reader.skipped());
        for e in reader.skipped_errors() {
            println!("  - {e}");
        }
        if reader.skipped() > reader.skipped_errors().len() {
            println!(
                "  - ... ({} more)",
                reader.skipped() - reader.skipped_errors().len()
            );
        }
    }
    for (i, ex) in shown.iter().enumerate() {
        let p = prompter.render(ex)?;
        println!(
            "\n--- example {} (id {}, set {}) ---",
            i + 1,
            ex.id,
            ex.source
        );
        if let Some(audio) = &ex.audio {
            println!("[audio]  {}", audio.display());
        }
        println!("[prompt]\n{}", p.prompt);
        println!("[target]\n{}", p.target);
        println!("[gold answers] {:?}", ex.answers);
    }
    Ok(())
}

fn speech(a: SpeechArgs) -> anyhow::Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let cfg = SpeechConfig {
        out: a.out,
        split: a.split,
        n: a.n,
        speakers: a.speakers.max(1),
        seed: a.seed,
        overwrite: a.overwrite,
        part: a.part.parse()?,
    };
    let report = synthesize(&cfg).context("synthesizing speech")?;
    println!(
        "wrote {} utterances ({:.1} s of 16 kHz audio) by {} speakers to {}",
        report.utterances,
        report.seconds,
        report.speakers.len(),
        report.root.display()
    );
    for s in &report.speakers {
        println!(
            "  speaker {}: voice {}, {} wpm, pitch {}",
            s.id, s.voice, s.speed, s.pitch
        );
    }
    Ok(())
}
