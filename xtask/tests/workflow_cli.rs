//! The workflow from the command line (`label -> router -> train --method flexi -> eval`) on
//! the tiny Llama fixture, and the library's example programs (`train/examples`) against the
//! CLI: `cargo xtask eval` of the run the example trained gives exactly the example's own
//! evaluation (every answer, rank and the accuracy).
//!
//! The examples are built by `cargo test --workspace` (the README's test command).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xtask-workflow-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn xtask(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("xtask runs");
    ok(o, &format!("xtask {}", args.join(" ")))
}

/// An example program of the `train` crate, built next to this test's binaries.
fn example(name: &str, args: &[&str]) -> String {
    let exe = Path::new(env!("CARGO_BIN_EXE_xtask"))
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        exe.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`",
        exe.display()
    );
    let o = Command::new(&exe)
        .args(args)
        .output()
        .expect("example runs");
    ok(o, name)
}

const WORDS: [&str; 10] = [
    "apple", "river", "stone", "cloud", "green", "music", "table", "window", "light", "paper",
];

fn write_qa(path: &Path, answers: &[String]) {
    let mut lines = vec![r#"{"header": {"dataset": "Tiny", "split": "train"}}"#.to_string()];
    for (i, a) in answers.iter().enumerate() {
        let ctx: Vec<&str> = (0..6).map(|j| WORDS[(i + j) % 10]).collect();
        lines.push(
            serde_json::json!({
                "id": format!("c{i}"),
                "context": ctx.join(" "),
                "qas": [{"qid": format!("q{i}"), "question": format!("What is word {i}?"), "answers": [a]}]
            })
            .to_string(),
        );
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn predictions(eval_json: &Path) -> (f64, Vec<(String, usize, String)>) {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(eval_json).unwrap()).unwrap();
    let report = &v["reports"][0];
    let preds = report["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["rank"].as_u64().unwrap() as usize,
                p["prediction"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (v["average"].as_f64().unwrap(), preds)
}

/// A QA set the base model answers right on the even examples (their gold answer is its own
/// greedy answer), wrong on the odd ones: labelling gives both classes.
fn planted(dir: &Path) -> PathBuf {
    let tiny = fixture("tiny_tied");
    let data = dir.join("qa.jsonl");
    let n = 12;
    write_qa(
        &data,
        &(0..n)
            .map(|i| WORDS[i % 10].to_string())
            .collect::<Vec<_>>(),
    );
    let base = dir.join("base");
    xtask(&[
        "eval",
        "--base",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--max-len",
        "64",
        "--max-new-tokens",
        "6",
        "--eval-batch",
        "4",
        "--out",
        base.to_str().unwrap(),
    ]);
    let (_, preds) = predictions(&base.join("eval.json"));
    let answers: Vec<String> = preds
        .iter()
        .enumerate()
        .map(|(i, (_, _, p))| {
            if i % 2 == 0 {
                p.clone()
            } else {
                format!("zebra{i} quartz{i}")
            }
        })
        .collect();
    write_qa(&data, &answers);
    data
}

#[test]
fn the_cli_runs_the_flexi_workflow_end_to_end() {
    let dir = scratch("cli");
    let tiny = fixture("tiny_tied");
    let tiny = tiny.to_str().unwrap();
    let data = planted(&dir);
    let data = data.to_str().unwrap();
    let (labels, router, run) = (dir.join("labels"), dir.join("router"), dir.join("run"));
    let out = xtask(&[
        "label",
        "--model",
        tiny,
        "--data",
        data,
        "--out",
        labels.to_str().unwrap(),
        "--max-len",
        "64",
        "--max-new-tokens",
        "6",
        "--eval-batch",
        "4",
    ]);
    assert!(
        out.contains("labels (threshold 0.5000): 6 easy, 6 hard -> 12 in the balanced router set"),
        "{out}"
    );
    let out = xtask(&[
        "router",
        "--model",
        tiny,
        "--data",
        data,
        "--labels",
        labels.join("router_train.jsonl").to_str().unwrap(),
        "--ranks",
        "2,8",
        "--epochs",
        "200",
        "--max-len",
        "48",
        "--out",
        router.to_str().unwrap(),
    ]);
    assert!(out.contains("router (text): 12 examples"), "{out}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(router.join("router.json")).unwrap()).unwrap();
    assert_eq!(meta["input"]["modality"], "text");
    assert_eq!(meta["input"]["max_len"], 48);
    assert_eq!(meta["input"]["d_model"], 64);
    xtask(&[
        "train",
        "--model",
        tiny,
        "--data",
        data,
        "--method",
        "flexi",
        "--ranks",
        "2,8",
        "--router",
        router.to_str().unwrap(),
        "--set",
        "batch_size=4",
        "--set",
        "max_steps=3",
        "--set",
        "max_len=64",
        "--set",
        "lr=1e-2",
        "--out",
        run.to_str().unwrap(),
    ]);
    let out = xtask(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--data",
        data,
        "--max-new-tokens",
        "6",
        "--eval-batch",
        "4",
    ]);
    assert!(out.contains("flexi2,8 on"), "{out}");
    let (_, preds) = predictions(&run.join("eval.json"));
    assert_eq!(preds.len(), 12);
    assert!(
        preds.iter().all(|(_, r, _)| [2, 8].contains(r)),
        "{preds:?}"
    );
    // Labels from a trained run as a reference adapter (SPEC 2.2): each example's score is the
    // run's own score of it, as `eval` with the same generation settings gave it. The Flexi
    // run above answers nothing right on this tiny model (all hard: no balanced set, an
    // error); a LoRA run that barely moved from the base answers as the base does.
    // `label --reference-run RUN --out OUT` with the generation settings `eval` used.
    let label_ref = |out: &Path, reference: &Path| -> Vec<String> {
        let (out, reference) = (out.to_str().unwrap(), reference.to_str().unwrap());
        [
            "label",
            "--model",
            tiny,
            "--data",
            data,
            "--out",
            out,
            "--reference-run",
            reference,
            "--max-len",
            "64",
            "--max-new-tokens",
            "6",
            "--eval-batch",
            "4",
        ]
        .map(String::from)
        .to_vec()
    };
    let args = label_ref(&dir.join("all_hard"), &run);
    let err = xtask_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("cannot balance: 0 easy and 12 hard"), "{err}");
    let ref_run = dir.join("ref_run");
    xtask(&[
        "train",
        "--model",
        tiny,
        "--data",
        data,
        "--method",
        "lora",
        "--rank",
        "2",
        "--set",
        "batch_size=4",
        "--set",
        "max_steps=1",
        "--set",
        "max_len=64",
        "--set",
        "lr=1e-9",
        "--out",
        ref_run.to_str().unwrap(),
    ]);
    xtask(&[
        "eval",
        "--run",
        ref_run.to_str().unwrap(),
        "--data",
        data,
        "--max-new-tokens",
        "6",
        "--eval-batch",
        "4",
    ]);
    let ref_labels = dir.join("ref_labels");
    let args = label_ref(&ref_labels, &ref_run);
    let out = xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("reference run"), "{out}");
    let eval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ref_run.join("eval.json")).unwrap()).unwrap();
    let eval_scores: std::collections::HashMap<String, f64> = eval["reports"][0]["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let text = std::fs::read_to_string(ref_labels.join("labels.jsonl")).unwrap();
    let labelled: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(labelled.len(), 12);
    for l in &labelled {
        let id = l["id"].as_str().unwrap();
        assert_eq!(l["score"].as_f64(), eval_scores.get(id).copied(), "{id}");
    }
    // A reference run on another base model is refused.
    let err = xtask_fails(&[
        "label",
        "--model",
        fixture("tiny_untied").to_str().unwrap(),
        "--data",
        data,
        "--out",
        dir.join("wrong_ref").to_str().unwrap(),
        "--reference-run",
        run.to_str().unwrap(),
    ]);
    assert!(err.contains("the reference run was trained on"), "{err}");
    // The run as a PEFT adapter at the easy class's rank, served by the PEFT reader.
    let peft = dir.join("peft");
    let out = xtask(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--format",
        "peft",
        "--rank",
        "2",
        "--out",
        peft.to_str().unwrap(),
    ]);
    assert!(
        out.contains("r = 2, lora_alpha = 16, use_rslora = false, 8 layers"),
        "{out}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(peft.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 2);
    let logits = dir.join("logits.safetensors");
    xtask(&[
        "logits",
        "--model",
        tiny,
        "--adapter",
        peft.to_str().unwrap(),
        "--ids",
        "1,2,3",
        "--out",
        logits.to_str().unwrap(),
    ]);
    assert!(logits.is_file());
}

#[test]
fn the_library_example_and_the_cli_agree_on_the_same_run() {
    let dir = scratch("example");
    let data = planted(&dir);
    let data = data.to_str().unwrap();
    let out = dir.join("out");
    let log = example(
        "flexi_fine_tune",
        &[
            fixture("tiny_tied").to_str().unwrap(),
            data,
            out.to_str().unwrap(),
        ],
    );
    assert!(log.contains("labels: 6 easy, 6 hard"), "{log}");
    let run = out.join("run");
    let printed = example("flexi_evaluate", &[run.to_str().unwrap(), data]);
    let cli = dir.join("cli-eval");
    xtask(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--data",
        data,
        "--max-new-tokens",
        "6",
        "--eval-batch",
        "4",
        "--out",
        cli.to_str().unwrap(),
    ]);
    let (average, preds) = predictions(&cli.join("eval.json"));
    let mut lines = printed.lines();
    let head = lines.next().unwrap();
    assert_eq!(
        head.split(": ").nth(1).unwrap().split(' ').next().unwrap(),
        format!("{average:.4}")
    );
    let from_example: Vec<(String, usize, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '\t').collect();
            let answer: String = serde_json::from_str(f[2]).unwrap();
            (f[0].to_string(), f[1].parse().unwrap(), answer)
        })
        .collect();
    println!("{head}\n{from_example:?}");
    assert_eq!(from_example, preds);
    assert!(
        preds.iter().any(|p| p.1 == 2) && preds.iter().any(|p| p.1 == 8),
        "{preds:?}"
    );
}

/// `xtask ARGS` that must fail: its stderr, after checking the exit status and that nothing
/// panicked.
fn xtask_fails(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("xtask runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}

#[test]
fn bad_workflow_input_exits_non_zero_without_panicking() {
    let dir = scratch("bad-input");
    let tied = fixture("tiny_tied");
    let tied = tied.to_str().unwrap();
    let whisper = fixture("whisper_tiny");
    let whisper = whisper.to_str().unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/tests/fixtures");
    let good = data.join("gsm8k.jsonl");
    let good = good.to_str().unwrap();
    let malformed = data.join("bad_gsm8k.jsonl");
    let malformed = malformed.to_str().unwrap();
    let empty = data.join("empty.jsonl");
    let empty = empty.to_str().unwrap();
    let missing = dir.join("no-such-train.jsonl");
    let missing = missing.to_str().unwrap();
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let not_audio = dir.join("notes.wav");
    std::fs::write(&not_audio, "hello, this is not audio").unwrap();
    let empty_audio = dir.join("empty.wav");
    std::fs::write(&empty_audio, b"").unwrap();
    let train = |data: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["train", "--model", tied, "--data", data, "--out", out_s]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--method", "lora", "--rank", "2"].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            train(missing, &[]),
            format!("{missing}: cannot read: No such file or directory"),
        ),
        (
            train(malformed, &[]),
            format!("{malformed}:2: malformed record: "),
        ),
        (
            train(empty, &[]),
            format!("{empty}: the file holds no records (it is empty or holds only a header)"),
        ),
        (
            train(good, &["--set", "lr=-1"]),
            "config lr: -1 is not a positive number".into(),
        ),
        (
            ["eval", "--run", missing, "--data", good]
                .map(String::from)
                .to_vec(),
            format!("{missing}/run.json: No such file or directory"),
        ),
        (
            [
                "transcribe",
                "--model",
                whisper,
                not_audio.to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
            format!("{}: unsupported audio: unknown format", not_audio.display()),
        ),
        (
            [
                "transcribe",
                "--model",
                whisper,
                empty_audio.to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
            format!(
                "{} (empty file): the audio has no samples",
                empty_audio.display()
            ),
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = xtask_fails(&args);
        assert!(
            stderr.contains(&needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
        assert!(!stderr.contains("empty training set"), "{args:?}: {stderr}");
        println!("{} -> {}", args[0], stderr.trim().replace('\n', " | "));
    }
    // Nothing was written for the failed runs.
    assert!(!out.join("run.json").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_peft_adapter_imported_from_the_cli_serves_eval_generate_and_further_training() {
    // PEFT's own adapter (regex targets, rank and alpha patterns) -> `import` -> a run that
    // `eval` reads; `generate --adapter` reads the same directory; `train
    // --resume-from-adapter` continues from it; a bad adapter exits non-zero, naming the file.
    let dir = scratch("import");
    let tiny = fixture("tiny_tied");
    let tiny = tiny.to_str().unwrap();
    let adapter = fixture("tiny_tied/peft_import_lora");
    let adapter = adapter.to_str().unwrap();
    let run = dir.join("run");
    let out = xtask(&[
        "import",
        "--adapter",
        adapter,
        "--model",
        tiny,
        "--out",
        run.to_str().unwrap(),
        "--max-len",
        "64",
    ]);
    assert!(
        out.contains("imported 7 module(s) as a LoRA-6 run"),
        "{out}"
    );
    let data = dir.join("qa.jsonl");
    write_qa(
        &data,
        &(0..4).map(|i| WORDS[i].to_string()).collect::<Vec<_>>(),
    );
    let data = data.to_str().unwrap();
    xtask(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--data",
        data,
        "--max-new-tokens",
        "4",
        "--eval-batch",
        "4",
    ]);
    let eval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval["method"], "lora-6", "{eval}");
    let generated = xtask(&[
        "generate",
        "--model",
        tiny,
        "--adapter",
        adapter,
        "--prompt",
        "What is word 1?",
        "--raw",
        "--max-new-tokens",
        "4",
    ]);
    assert!(!generated.trim().is_empty());
    let trained = dir.join("trained");
    let out = xtask(&[
        "train",
        "--model",
        tiny,
        "--data",
        data,
        "--method",
        "lora",
        "--rank",
        "8",
        "--set",
        "adapter.targets=q_proj,k_proj,v_proj,down_proj",
        "--set",
        "batch_size=4",
        "--set",
        "max_steps=1",
        "--set",
        "max_len=64",
        "--resume-from-adapter",
        adapter,
        "--out",
        trained.to_str().unwrap(),
    ]);
    assert!(!out.is_empty());
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(trained.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["adapter_from"], adapter);
    let err = xtask_fails(&[
        "import",
        "--adapter",
        fixture("whisper_tiny/peft_lora").to_str().unwrap(),
        "--model",
        tiny,
        "--out",
        dir.join("wrong").to_str().unwrap(),
    ]);
    assert!(
        err.contains("adapter_model.safetensors") && err.contains("cannot adapt"),
        "{err}"
    );
}
