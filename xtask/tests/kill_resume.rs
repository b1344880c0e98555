//! `kill -9` during training: `xtask train --resume` is started as a child process and killed
//! with SIGKILL at many points (between steps, inside steps and while checkpoints are written:
//! every step is checkpointed, so a good share of the run is spent writing them); after each
//! kill the run directory must hold nothing that resume would trust and that is not whole, and
//! the run resumed to its end must give bit-identical weights, state and losses to a
//! run that was never interrupted.
//!
//! The number of kills is `FLEXI_KILLS` (default 20; 6 when `CI` is set).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xtask-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const WORDS: [&str; 10] = [
    "apple", "river", "stone", "cloud", "green", "music", "table", "window", "light", "paper",
];

/// A small QA file in the MRQA layout.
fn write_qa(path: &Path, n: usize) {
    let mut lines = vec![r#"{"header": {"dataset": "Tiny", "split": "train"}}"#.to_string()];
    for i in 0..n {
        let ctx: Vec<&str> = (0..6).map(|j| WORDS[(i + j) % 10]).collect();
        lines.push(
            serde_json::json!({
                "id": format!("c{i}"),
                "context": ctx.join(" "),
                "qas": [{"qid": format!("q{i}"), "question": format!("What is word {i}?"),
                         "answers": [WORDS[(i * 3) % 10]]}]
            })
            .to_string(),
        );
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

const STEPS: usize = 10;

fn train(data: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(["train", "--model"])
        .arg(fixture("tiny_tied"))
        .arg("--data")
        .arg(data)
        .args(["--method", "lora", "--rank", "4"])
        .args([
            "--set",
            "batch_size=2",
            "--set",
            "max_len=48",
            "--set",
            "lr=1e-2",
        ])
        .args([
            "--set",
            &format!("max_steps={STEPS}"),
            "--set",
            "save_every=1",
        ])
        .arg("--out")
        .arg(out)
        .arg("--resume")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The files resume reads, from the checkpoint `latest` names.
fn checkpoint_files(out: &Path) -> Option<(String, Vec<Vec<u8>>)> {
    let root = out.join("checkpoints");
    let name = std::fs::read_to_string(root.join("latest")).ok()?;
    let dir = root.join(name.trim());
    let files = ["weights.safetensors", "optimizer.mpk", "state.json"]
        .iter()
        .map(|f| {
            std::fs::read(dir.join(f)).unwrap_or_else(|e| {
                panic!(
                    "`latest` names {} but its {f} is unreadable: {e}",
                    dir.display()
                )
            })
        })
        .collect();
    Some((name.trim().to_string(), files))
}

/// What resume would trust must be whole: `latest` names a complete checkpoint whose
/// weights parse as safetensors and whose state parses and agrees with its name.
fn assert_resumable(out: &Path, after: &str) {
    let Some((name, files)) = checkpoint_files(out) else {
        return;
    };
    safetensors::SafeTensors::deserialize(&files[0])
        .unwrap_or_else(|e| panic!("{after}: {name}/weights.safetensors is torn: {e}"));
    assert!(
        !files[1].is_empty(),
        "{after}: {name}/optimizer.mpk is empty"
    );
    let state: serde_json::Value = serde_json::from_slice(&files[2])
        .unwrap_or_else(|e| panic!("{after}: {name}/state.json is torn: {e}"));
    assert_eq!(
        format!("step-{:06}", state["step"].as_u64().unwrap()),
        name,
        "{after}"
    );
    // A run.json, once there, is whole.
    if let Ok(bytes) = std::fs::read(out.join("run.json")) {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|e| panic!("{after}: run.json is torn: {e}"));
    }
}

/// `(step, loss)` of every line of `metrics.jsonl`.
fn losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// A small deterministic generator for the kill times.
struct Lcg(u64);
impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn training_killed_at_random_points_resumes_to_bit_identical_weights() {
    let kills: usize = std::env::var("FLEXI_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("CI").is_some() {
            6
        } else {
            20
        });
    let dir = scratch("run");
    let data = dir.join("qa.jsonl");
    write_qa(&data, 12);

    // The uninterrupted run, timed: kill times are drawn over its length.
    let reference = dir.join("reference");
    let began = Instant::now();
    let o = train(&data, &reference).output().unwrap();
    let full = began.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ref_name, ref_files) = checkpoint_files(&reference).expect("reference checkpoint");
    assert_eq!(ref_name, format!("step-{STEPS:06}"));

    // Episodes: a fresh run killed at a random time, resumed and killed again at another,
    // then resumed to its end, which must equal the reference.
    let mut rng = Lcg(0x5eed);
    let (mut killed, mut mid_write) = (0, 0);
    for k in 0..kills {
        let run = dir.join(format!("killed-{k}"));
        for attempt in 0..2 {
            let mut child = train(&data, &run).spawn().unwrap();
            let wait = full.mul_f64(0.8 * rng.unit());
            let deadline = Instant::now() + wait;
            let mut finished = false;
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    finished = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if finished {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed += 1;
            // A checkpoint being written when the kill came leaves its `.tmp` directory.
            if std::fs::read_dir(run.join("checkpoints")).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            }) {
                mid_write += 1;
            }
            assert_resumable(&run, &format!("episode {k}, kill {attempt} after {wait:?}"));
        }
        // Resume to the end.
        let o = train(&data, &run).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_same_as_reference(&run, &reference, &ref_files, &format!("episode {k}"));
        let _ = std::fs::remove_dir_all(&run);
    }
    eprintln!(
        "{kills} episodes: {killed} kills ({mid_write} while a checkpoint was being written), \
         uninterrupted run {full:?}"
    );
    assert!(killed >= kills, "only {killed} kills in {kills} episodes");
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_same_as_reference(run: &Path, reference: &Path, ref_files: &[Vec<u8>], what: &str) {
    let (name, files) = checkpoint_files(run).expect("final checkpoint");
    assert_eq!(name, format!("step-{STEPS:06}"), "{what}");
    assert!(
        files[0] == ref_files[0],
        "{what}: weights differ from the uninterrupted run's"
    );
    // optimizer.mpk is not compared byte for byte: it keys the moments by parameter ids,
    // which each process draws anew. Equal weights after the last step need the restored
    // moments: every AdamW step reads them.
    let state: serde_json::Value = serde_json::from_slice(&files[2]).unwrap();
    let ref_state: serde_json::Value = serde_json::from_slice(&ref_files[2]).unwrap();
    assert_eq!(state, ref_state, "{what}");
    // One metrics line per step, each with the uninterrupted run's loss.
    assert_eq!(losses(run), losses(reference), "{what}");
}
