//! One writer per run directory (`train::RunLock` on `DIR/.lock`): `xtask train`, `label`,
//! `router` and `eval` refuse a directory another process holds, with its pid, instead of
//! interleaving their files; a holder that was SIGKILLed releases it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use train::RunLock;
use train::lock::{LOCK_FILE, LockHolder};

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/tiny_tied")
        .to_string_lossy()
        .into_owned()
}

/// A small QA set in MRQA's format.
fn qa(dir: &Path) -> String {
    let mut lines = vec![r#"{"header": {"dataset": "Tiny", "split": "train"}}"#.to_string()];
    for i in 0..8 {
        lines.push(
            serde_json::json!({
                "id": format!("c{i}"),
                "context": format!("apple river stone {i} cloud green music"),
                "qas": [{"qid": format!("q{i}"), "question": format!("What is word {i}?"), "answers": ["stone"]}]
            })
            .to_string(),
        );
    }
    let path = dir.join("qa.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_string_lossy().into_owned()
}

fn xtask(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args).env("RUST_BACKTRACE", "0");
    c
}

fn train_args<'a>(data: &'a str, out: &'a str, tiny: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
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
        "max_len=64",
        "--set",
        steps,
        "--out",
        out,
    ]
}

fn refused(o: &Output, what: &str, expected: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "{what} ran on a held directory:\n{}\n{stderr}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        stderr.contains(expected),
        "{what}: stderr lacks {expected:?}:\n{stderr}"
    );
}

fn message(dir: &Path, holder: &LockHolder) -> String {
    format!(
        "{} is in use by another run ({holder}); wait for it to finish or choose another output \
         directory",
        dir.display()
    )
}

fn holder(dir: &Path) -> Option<LockHolder> {
    serde_json::from_slice(&std::fs::read(dir.join(LOCK_FILE)).ok()?).ok()
}

#[test]
fn every_command_refuses_a_directory_another_run_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = qa(tmp.path());
    let tiny = tiny();
    let held = tmp.path().join("run");
    let lock = RunLock::acquire(&held).unwrap();
    let me = holder(&held).unwrap();
    assert_eq!(me.pid, std::process::id());
    let expected = message(&held, &me);
    let out = held.to_str().unwrap();

    let o = xtask(&train_args(&data, out, &tiny, "max_steps=2"))
        .output()
        .unwrap();
    refused(&o, "train", &expected);
    let o = xtask(&["label", "--model", &tiny, "--data", &data, "--out", out])
        .output()
        .unwrap();
    refused(&o, "label", &expected);
    let labels = tmp.path().join("labels.jsonl");
    let o = xtask(&[
        "router",
        "--model",
        &tiny,
        "--data",
        &data,
        "--labels",
        labels.to_str().unwrap(),
        "--ranks",
        "2,8",
        "--out",
        out,
    ])
    .output()
    .unwrap();
    refused(&o, "router", &expected);
    let o = xtask(&["eval", "--run", out, "--data", &data])
        .output()
        .unwrap();
    refused(&o, "eval", &expected);
    // Nothing was written next to the lock.
    let names: Vec<String> = std::fs::read_dir(&held)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [LOCK_FILE]);

    // Released: the same training runs.
    drop(lock);
    let o = xtask(&train_args(&data, out, &tiny, "max_steps=2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(held.join("run.json").is_file());
}

#[test]
fn a_running_train_holds_its_directory_until_it_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = qa(tmp.path());
    let tiny = tiny();
    let dir = tmp.path().join("run");
    let out = dir.to_str().unwrap();
    // A run that would take hours.
    let mut first = xtask(&train_args(&data, out, &tiny, "max_steps=1000000"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    let t0 = Instant::now();
    let running = loop {
        if let Some(h) = holder(&dir).filter(|h| h.pid == pid) {
            break h;
        }
        if let Some(status) = first.try_wait().unwrap() {
            let o = first.wait_with_output().unwrap();
            panic!(
                "the first train exited ({status}) before locking {out}:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the first train did not lock {out} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let second = xtask(&train_args(&data, out, &tiny, "max_steps=2"))
        .output()
        .unwrap();
    let still_running = first.try_wait().unwrap().is_none();
    refused(&second, "the second train", &message(&dir, &running));
    assert!(
        still_running,
        "the first train ended before the second was refused"
    );

    // SIGKILL: no destructor runs, the record stays, the operating system drops the lock.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(holder(&dir), Some(running));
    let lock = RunLock::acquire(&dir).unwrap();
    assert_eq!(holder(&dir).map(|h| h.pid), Some(std::process::id()));
    drop(lock);
}
