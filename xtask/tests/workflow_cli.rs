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
            [
                "router",
                "--model",
                tied,
                "--data",
                good,
                "--labels",
                missing,
                "--text-feature",
                "layer:9",
                "--out",
                out_s,
            ]
            .map(String::from)
            .to_vec(),
            "--text-feature \"layer:9\": expected embedding, middle, last or layer:L with L <= 2 \
             (the model's layers)"
                .into(),
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

/// `results/*.json` and `summary.json` of a study without their measured timings.
fn study_numbers(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("results"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.push(dir.join("summary.json"));
    files
        .iter()
        .map(|f| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            if let Some(t) = v.get_mut("timing") {
                *t = serde_json::Value::Null;
            }
            if let Some(ms) = v.get_mut("methods").and_then(|m| m.as_array_mut()) {
                for m in ms {
                    m["train_seconds"] = serde_json::Value::Null;
                    m["tokens_per_s"] = serde_json::Value::Null;
                }
            }
            (f.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

#[test]
fn a_study_resumed_after_interruptions_equals_an_uninterrupted_one_and_reports() {
    // Two methods (LoRA-2 and Flexi (2,4), with labels and a router per seed) x two seeds on
    // the tiny Llama, plus the base model. One study runs straight through; the other is
    // stopped after its first run, runs two of seed 2's methods alone (`--seeds 2 --methods
    // flexi-2-4,base`, in that order), is stopped again and resumed: the same results and
    // summary (timings aside). Then the report and its plots.
    let dir = scratch("study");
    let data = planted(&dir);
    let study = dir.join("study.toml");
    std::fs::write(
        &study,
        format!(
            r#"
name = "tiny"
model = "{model}"
seeds = [1, 2]
subset_seed = 5
train = {{ path = "{data}" }}
test = [{{ path = "{data}", n = 10 }}]
max_len = 64
max_new_tokens = 6
eval_batch = 4
bootstrap = 200
compare = [["flexi-2-4", "lora-2"], ["lora-2", "base"]]
training = {{ batch_size = 4, max_steps = 2, lr = 1e-2, warmup_steps = 0, save_every = 1 }}
router = {{ epochs = 50, max_len = 48 }}

[[methods]]
name = "base"

[[methods]]
name = "lora-2"
method = {{ name = "lora", rank = 2 }}

[[methods]]
name = "flexi-2-4"
method = {{ name = "flexi", class_ranks = "2,4" }}
"#,
            model = fixture("tiny_tied").display(),
            data = data.display()
        ),
    )
    .unwrap();
    let study = study.to_str().unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let out = xtask(&["study", "--config", study, "--out", a.to_str().unwrap()]);
    assert!(out.contains("| flexi-2-4 vs lora-2 |"), "{out}");
    let stopped = |n: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["study", "--config", study, "--out", b.to_str().unwrap()])
            .env("FLEXI_STUDY_STOP_AFTER", n)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(err.contains("stopped after"), "{err}");
    };
    stopped("1");
    // Then part of seed 2 alone (as a second process would run it), stopped once more, and
    // the rest.
    let err = xtask_fails(&[
        "study",
        "--config",
        study,
        "--out",
        b.to_str().unwrap(),
        "--seeds",
        "7",
    ]);
    assert!(err.contains("--seeds 7") && err.contains("[1, 2]"), "{err}");
    let err = xtask_fails(&[
        "study",
        "--config",
        study,
        "--out",
        b.to_str().unwrap(),
        "--methods",
        "lora-9",
    ]);
    assert!(
        err.contains("--methods lora-9") && err.contains("flexi-2-4"),
        "{err}"
    );
    // Seed 2's Flexi run and base only, Flexi first.
    let out = xtask(&[
        "study",
        "--config",
        study,
        "--out",
        b.to_str().unwrap(),
        "--seeds",
        "2",
        "--methods",
        "flexi-2-4,base",
    ]);
    assert!(out.contains("1 of 6 runs done"), "{out}");
    let flexi = out.find("flexi-2-4 seed 2").expect("flexi-2-4 ran");
    assert!(flexi < out.find("base seed 2").expect("base ran"), "{out}");
    assert!(!out.contains("lora-2 seed"), "{out}");
    stopped("1");
    let out = xtask(&["study", "--config", study, "--out", b.to_str().unwrap()]);
    assert!(out.contains("4 of 6 runs done"), "{out}");
    let (na, nb) = (study_numbers(&a), study_numbers(&b));
    assert_eq!(na.len(), 7, "6 results and the summary");
    assert_eq!(na, nb);
    let summary = &na[6].1;
    assert_eq!(summary["methods"].as_array().unwrap().len(), 3);
    // The base model answers 5 of the 10 test problems (planted); the 2-step LoRA-2 runs
    // none: McNemar pooled over both seeds has 0 / 10 discordant pairs, p = 2 / 2^10.
    let vs_base = &summary["comparisons"][1];
    assert_eq!(vs_base["pooled"]["only_a"], 0);
    assert_eq!(vs_base["pooled"]["only_b"], 10);
    assert!((vs_base["pooled"]["p_value"].as_f64().unwrap() - 2.0 / 1024.0).abs() < 1e-12);
    assert_eq!(vs_base["diff"]["diff"], -50.0);
    assert_eq!(
        summary["sets"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap(),
        10
    );
    // A finished study is not redone; another configuration in its directory is refused.
    let out = xtask(&["study", "--config", study, "--out", a.to_str().unwrap()]);
    assert!(out.contains("6 of 6 runs done"), "{out}");
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(study)
            .unwrap()
            .replace("seeds = [1, 2]", "seeds = [1, 3]"),
    )
    .unwrap();
    let err = xtask_fails(&[
        "study",
        "--config",
        other.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(err.contains("another configuration"), "{err}");
    // The report: tables and two SVG plots naming the methods.
    xtask(&["report", "--study", a.to_str().unwrap()]);
    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(
        md.contains("| lora-2 | 2 |") && md.contains("pareto.svg"),
        "{md}"
    );
    let svg = std::fs::read_to_string(a.join("pareto.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("flexi-2-4"),
        "{svg}"
    );
    let loss = std::fs::read_to_string(a.join("loss.svg")).unwrap();
    assert!(
        loss.contains("lora-2") && loss.contains("<polyline"),
        "{loss}"
    );
}

#[test]
fn plan_predicts_a_training_step_and_the_batch_that_fits() {
    // `cargo xtask plan` on a checkpoint's configuration (no weight read) and on a preset:
    // the table, the JSON (the library's numbers) and the largest batch for a budget.
    let dir = scratch("plan");
    let json = dir.join("plan.json");
    let out = xtask(&[
        "plan",
        "--model",
        fixture("tiny_tied").to_str().unwrap(),
        "--method",
        "lora",
        "--rank",
        "4",
        "--batch",
        "2",
        "--seq",
        "32",
        "--memory-gib",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.contains("| **peak** |") && out.contains("fits in 1.0 GiB"),
        "{out}"
    );
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(plan["tokens"], 64);
    let total = plan["total_mib"].as_f64().unwrap();
    let parts: f64 = [
        "runtime_mib",
        "weights_mib",
        "trainable_state_mib",
        "activations_mib",
        "lm_head_mib",
    ]
    .iter()
    .map(|k| plan[k].as_f64().unwrap())
    .sum();
    assert!((total - parts).abs() < 1e-6);
    // Llama-3.2-1B full fine-tuning in f32 (1.24 B weights, AdamW state and gradients) does
    // not fit 8 GiB; LoRA-8 does, and checkpointing lets a larger batch fit.
    let out = xtask(&[
        "plan",
        "--shape",
        "llama-3.2-1b",
        "--method",
        "full",
        "--batch",
        "1",
        "--seq",
        "128",
        "--memory-gib",
        "8",
    ]);
    assert!(out.contains("does NOT fit in 8.0 GiB"), "{out}");
    // Full fine-tuning in bf16 trains the half-stored matrices on f32 masters: planned so.
    let out = xtask(&[
        "plan",
        "--method",
        "full",
        "--precision",
        "bf16",
        "--batch",
        "1",
        "--seq",
        "128",
    ]);
    assert!(
        out.contains("bf16 matrices on f32 masters")
            && out.contains("optimizer state + gradients + f32 masters"),
        "{out}"
    );
    let largest = |ckpt: bool| {
        let mut args = vec![
            "plan",
            "--shape",
            "llama-3.2-1b",
            "--batch",
            "1",
            "--seq",
            "512",
            "--memory-gib",
            "24",
        ];
        if ckpt {
            args.push("--checkpoint-activations");
        }
        let out = xtask(&args);
        out.lines()
            .find_map(|l| l.split("that fits: ").nth(1))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{out}"))
    };
    assert!(largest(true) > largest(false));
    let err = xtask_fails(&["plan", "--shape", "llama-9b"]);
    assert!(err.contains("unknown --shape \"llama-9b\""), "{err}");
    let err = xtask_fails(&["plan", "--batch", "0"]);
    assert!(err.contains("--batch must be at least 1"), "{err}");
}

#[test]
fn label_by_answer_cross_entropy_writes_balanced_labels_a_router_can_use() {
    // `label --score answer-nll`: no generation, every example scored by the base model's
    // answer cross-entropy, split at the median (6 easy, 6 hard of 12), and a router trains
    // on the result; the options it cannot combine with are refused.
    let dir = scratch("answer-nll");
    let data = planted(&dir);
    let (tiny, data) = (fixture("tiny_tied"), data.to_str().unwrap().to_string());
    let labels = dir.join("labels");
    let out = xtask(&[
        "label",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        labels.to_str().unwrap(),
        "--score",
        "answer-nll",
        "--max-len",
        "64",
    ]);
    assert!(
        out.contains("6 easy, 6 hard -> 12 in the balanced router set"),
        "{out}"
    );
    let lines = std::fs::read_to_string(labels.join("labels.jsonl")).unwrap();
    let scores: Vec<f64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["score"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(scores.len(), 12);
    assert!(scores.iter().all(|s| *s > 0.0), "{scores:?}");
    xtask(&[
        "router",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        &data,
        "--labels",
        labels.join("router_train.jsonl").to_str().unwrap(),
        "--out",
        dir.join("router").to_str().unwrap(),
        "--max-len",
        "48",
    ]);
    assert!(dir.join("router").join("router.json").exists());
    let err = xtask_fails(&[
        "label",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        dir.join("l2").to_str().unwrap(),
        "--score",
        "answer-nll",
        "--reference-run",
        dir.join("router").to_str().unwrap(),
    ]);
    assert!(
        err.contains("--reference-run goes with --score metric"),
        "{err}"
    );
    let err = xtask_fails(&[
        "label",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        dir.join("l3").to_str().unwrap(),
        "--score",
        "loss",
    ]);
    assert!(
        err.contains("--score \"loss\": expected metric or answer-nll"),
        "{err}"
    );
}

#[test]
fn a_study_can_label_by_answer_cross_entropy() {
    // `label_score = "answer-nll"` in a study file: the labels split the 12 training
    // examples at the median (6 / 6) and the Flexi run trains on a router from those
    // labels. A value that is neither score is refused when the file is read.
    let dir = scratch("study-nll");
    let data = planted(&dir);
    let study = dir.join("study.toml");
    let text = format!(
        r#"
name = "tiny-nll"
model = "{model}"
seeds = [1]
train = {{ path = "{data}" }}
test = [{{ path = "{data}", n = 4 }}]
max_len = 64
max_new_tokens = 4
eval_batch = 4
label_score = "answer-nll"
training = {{ batch_size = 4, max_steps = 1, lr = 1e-2, warmup_steps = 0 }}
router = {{ epochs = 5, max_len = 48 }}

[[methods]]
name = "flexi-2-4"
method = {{ name = "flexi", class_ranks = "2,4" }}
"#,
        model = fixture("tiny_tied").display(),
        data = data.display()
    );
    std::fs::write(&study, &text).unwrap();
    let out_dir = dir.join("out");
    let out = xtask(&[
        "study",
        "--config",
        study.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.contains("6 easy, 6 hard -> 12 in the balanced router set"),
        "{out}"
    );
    assert!(out_dir.join("results").join("flexi-2-4-s1.json").exists());
    std::fs::write(&study, text.replace("answer-nll", "loss")).unwrap();
    let err = xtask_fails(&["study", "--config", study.to_str().unwrap()]);
    assert!(
        err.contains("label_score: \"loss\": expected metric or answer-nll"),
        "{err}"
    );
}

#[test]
fn mixed_precision_trains_evaluates_and_generates_from_the_command_line() {
    let dir = scratch("mixed");
    let tiny = fixture("tiny_tied");
    let tiny = tiny.to_str().unwrap();
    let data = dir.join("qa.jsonl");
    write_qa(
        &data,
        &(0..8).map(|i| WORDS[i].to_string()).collect::<Vec<_>>(),
    );
    let data = data.to_str().unwrap();
    let run = dir.join("run");
    let train = |precision: &str, method: &str, out: &Path| {
        [
            "train",
            "--model",
            tiny,
            "--data",
            data,
            "--method",
            method,
            "--rank",
            "4",
            "--precision",
            precision,
            "--set",
            "batch_size=4",
            "--set",
            "max_steps=3",
            "--set",
            "max_len=64",
            "--set",
            "lr=1e-2",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let args = train("f16", "lora", &run);
    xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["config"]["precision"], "f16", "{info}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().all(|l| l.contains("\"loss_scale\":65536")),
        "{metrics}"
    );
    // eval runs in the run's precision unless told otherwise, and says which.
    let eval = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "eval",
            "--run",
            run.to_str().unwrap(),
            "--data",
            data,
            "--max-new-tokens",
            "4",
            "--eval-batch",
            "4",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        xtask(&args);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
        v
    };
    let half = eval(&[], &dir.join("eval-f16"));
    assert_eq!(half["precision"], "f16");
    let full = eval(&["--precision", "f32"], &dir.join("eval-f32"));
    assert!(full.get("precision").is_none(), "{full}");
    let n = |v: &serde_json::Value| v["reports"][0]["predictions"].as_array().unwrap().len();
    assert_eq!((n(&half), n(&full)), (8, 8));
    let out = xtask(&[
        "generate",
        "--model",
        tiny,
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
        "--raw",
        "--precision",
        "bf16",
    ]);
    assert!(!out.trim().is_empty());
    // Refusals name the setting.
    let err = xtask_fails(&[
        "generate",
        "--model",
        tiny,
        "--prompt",
        "hello",
        "--precision",
        "f8",
    ]);
    assert!(err.contains("f32, bf16 or f16"), "{err}");
    // Full fine-tuning in bf16: the matrices train in bf16 on f32 masters; the checkpoint
    // holds the masters (f32), and eval of the run loads them in its precision.
    let full_run = dir.join("full");
    let mut args = train("bf16", "full", &full_run);
    // One shard (one copy of the gradients); zero shards is refused.
    args.extend(["--shards", "0"].map(String::from));
    let err = xtask_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--shards"), "{err}");
    args.pop();
    args.push("1".into());
    xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let metrics = std::fs::read_to_string(full_run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    let ckpt = std::fs::read_dir(full_run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let weights = infer::weights::read_safetensors(&ckpt.join("weights.safetensors")).unwrap();
    let q = &weights["layers.0.self_attn.q_proj.Plain.weight"];
    assert!(
        q.values
            .iter()
            .any(|v| half::bf16::from_f32(*v).to_f32() != *v),
        "the checkpoint holds bf16-rounded weights, not the f32 masters"
    );
    let eval_full = dir.join("eval-full");
    let args = [
        "eval",
        "--run",
        full_run.to_str().unwrap(),
        "--data",
        data,
        "--max-new-tokens",
        "4",
        "--eval-batch",
        "4",
        "--out",
        eval_full.to_str().unwrap(),
    ];
    xtask(&args);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eval_full.join("eval.json")).unwrap()).unwrap();
    assert_eq!(v["precision"], "bf16", "{v}");
    assert_eq!(n(&v), 8);
}
