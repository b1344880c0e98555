//! `cargo xtask generate` / `logits` end to end on the tiny Llama fixtures: outputs, and bad
//! input exiting non-zero with a message instead of a panic.

use std::path::PathBuf;
use std::process::{Command, Output};

use safetensors::{Dtype, SafeTensors};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("xtask runs")
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xtask-llama-{}-{name}", std::process::id()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn logits_match_the_transformers_reference() {
    let dir = fixture("tiny_tied");
    let reference = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&reference).unwrap();
    let ids = reference.tensor("input_ids").unwrap();
    let seq = ids.shape()[1];
    // Sample 0 of the reference batch has no padding.
    let ids: Vec<i64> = i64s(ids.data())[..seq].to_vec();
    let want = reference.tensor("logits").unwrap();
    let vocab = want.shape()[2];
    let want = &f32s(want.data())[..seq * vocab];

    let out = scratch("logits.safetensors");
    let ids_arg = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let o = xtask(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        &ids_arg,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).ok();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), Dtype::F32);
    assert_eq!(logits.shape(), &[seq, vocab]);
    let input_ids = st.tensor("input_ids").unwrap();
    assert_eq!(input_ids.dtype(), Dtype::I64);
    assert_eq!(i64s(input_ids.data()), ids);
    let diff = f32s(logits.data())
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("xtask logits vs transformers: max abs diff {diff:.3e}");
    assert!(diff <= 1e-4);
}

#[test]
fn generate_prints_a_completion() {
    let dir = fixture("tiny_tied");
    let o = xtask(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Hello, world",
        "--raw",
        "--max-new-tokens",
        "4",
        "--adapter",
        dir.join("adapter").to_str().unwrap(),
        "--rank",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!o.stdout.is_empty());
}

#[test]
fn bad_input_exits_non_zero_without_panicking() {
    let tied = fixture("tiny_tied");
    let tied = tied.to_str().unwrap();
    let long = "Hello world ".repeat(40);
    let bad_dir = scratch("bad-model");
    std::fs::create_dir_all(&bad_dir).unwrap();
    std::fs::copy(
        fixture("tiny_tied").join("tokenizer.json"),
        bad_dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        fixture("tiny_tied").join("config.json"),
        bad_dir.join("config.json"),
    )
    .unwrap();
    std::fs::write(bad_dir.join("model.safetensors"), b"\x08\x00\x00\x00").unwrap();
    let bad = bad_dir.to_str().unwrap();
    let out = scratch("never.safetensors");
    let out = out.to_str().unwrap();
    // tiny_tied's weights with the tokenizer of a larger vocabulary (100 more tokens).
    let other_tok = scratch("other-tokenizer");
    std::fs::create_dir_all(&other_tok).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_tied").join(f), other_tok.join(f)).unwrap();
    }
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_tied").join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    let vocab = v["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len();
    for i in 0..100 {
        vocab.insert(format!("extra{i}"), (n + i).into());
    }
    std::fs::write(other_tok.join("tokenizer.json"), v.to_string()).unwrap();
    let other_tok_s = other_tok.to_str().unwrap();
    let whisper = fixture("whisper_tiny");
    let whisper = whisper.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["generate", "--model", whisper, "--prompt", "x"],
            "field `model_type`: is \"whisper\", expected \"llama\" (this is not a Llama checkpoint)",
        ),
        (
            vec!["generate", "--model", other_tok_s, "--prompt", "x"],
            "has token ids up to 399, but the model's vocab_size is 320: it is the tokenizer of another model",
        ),
        (
            vec!["generate", "--model", "/nonexistent/model", "--prompt", "x"],
            "/nonexistent/model",
        ),
        (
            vec!["generate", "--model", bad, "--prompt", "x", "--raw"],
            "model.safetensors",
        ),
        (
            vec!["generate", "--model", tied, "--prompt", &long, "--raw"],
            "context",
        ),
        (
            vec![
                "logits",
                "--model",
                tied,
                "--ids",
                "1,2,99999",
                "--out",
                out,
            ],
            "99999",
        ),
        (
            vec!["logits", "--model", tied, "--ids", "1,x", "--out", out],
            "invalid value",
        ),
        (
            vec!["generate", "--model", tied, "--prompt", "x", "--rank", "3"],
            "--adapter",
        ),
        (
            vec![
                "generate",
                "--model",
                tied,
                "--prompt",
                "x",
                "--backend",
                "tpu",
            ],
            "tpu",
        ),
    ];
    for (args, needle) in cases {
        let o = xtask(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
        println!("{args:?} -> {}", stderr.lines().next().unwrap_or(""));
    }
    std::fs::remove_dir_all(&bad_dir).ok();
    std::fs::remove_dir_all(&other_tok).ok();
}
