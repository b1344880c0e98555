//! The fuzz targets' inputs, replayed on stable: every committed seed (`fuzz/seeds/<target>/`)
//! and every input the fuzzer found a bug with (`fuzz/regressions/<target>/`) goes through the
//! same harness function the fuzz target calls (`fuzz/src/harness.rs`, included below), so a
//! fixed crash, abort or hang that comes back fails CI without running the fuzzer.
//!
//! The seeds are written by this file too (`seeds_are_current`): small valid files of every
//! format and variant (each GGUF quantisation, each CTranslate2 and safetensors dtype, sharded
//! checkpoints, PEFT adapters, WAV encodings, each data format), so the fuzzer starts from
//! inputs that reach deep into each reader. `FLEXI_WRITE_FUZZ_SEEDS=1 cargo test --workspace
//! --test fuzz_regressions` rewrites them after a format change.

#[allow(dead_code)]
#[path = "../../fuzz/src/harness.rs"]
mod harness;

#[path = "../../models/tests/ct2_common/mod.rs"]
mod ct2_common;
#[path = "../../models/tests/gguf_common/mod.rs"]
mod gguf_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use harness::SEP;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn models_fixture(rel: &str) -> Vec<u8> {
    std::fs::read(harness::fixtures().join(rel)).expect("models fixture")
}

fn datasets_fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/tests/fixtures");
    std::fs::read(path.join(name)).expect("datasets fixture")
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEP)
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

/// A tiny Llama as llama.cpp writes it: metadata, a byte-level BPE tokenizer and f32 tensors.
fn tiny_llama_gguf() -> Vec<u8> {
    let mut w = gguf_common::Writer::new(3);
    let tokens = ["<s>", "</s>", "a", "b", "Ġ", "ab", "Ġa", "c"];
    w.str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", 8)
        .u32("llama.feed_forward_length", 16)
        .u32("llama.attention.head_count", 2)
        .u32("llama.attention.head_count_kv", 1)
        .u32("llama.vocab_size", tokens.len() as u32)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .strs("tokenizer.ggml.tokens", &tokens)
        .i32s("tokenizer.ggml.token_type", &[3, 3, 1, 1, 1, 1, 1, 1])
        .strs("tokenizer.ggml.merges", &["a b", "Ġ a"])
        .u32("tokenizer.ggml.bos_token_id", 0)
        .u32("tokenizer.ggml.eos_token_id", 1)
        .bool("tokenizer.ggml.add_bos_token", true);
    let t = |w: &mut gguf_common::Writer, name: &str, ne: &[u64]| {
        let n: u64 = ne.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
        w.f32_tensor(name, ne, &v);
    };
    t(&mut w, "token_embd.weight", &[8, 8]);
    t(&mut w, "output_norm.weight", &[8]);
    for (name, ne) in [
        ("attn_norm", &[8u64][..]),
        ("ffn_norm", &[8]),
        ("attn_q", &[8, 8]),
        ("attn_k", &[8, 4]),
        ("attn_v", &[8, 4]),
        ("attn_output", &[8, 8]),
        ("ffn_gate", &[8, 16]),
        ("ffn_up", &[8, 16]),
        ("ffn_down", &[16, 8]),
    ] {
        t(&mut w, &format!("blk.0.{name}.weight"), ne);
    }
    w.bytes()
}

/// One small GGUF file per storage type the reader knows: a single tensor of one block.
fn gguf_per_type() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for id in 0..42u32 {
        let Some(ty) = models::gguf::GgmlType::from_id(id) else {
            continue;
        };
        if !ty.is_supported() {
            continue;
        }
        let n = ty.block().0.max(4);
        let size = ty.bytes_for(n).expect("whole blocks");
        // Deterministic bytes; float scales kept finite (small f16 values at every position).
        let data: Vec<u8> = (0..size).map(|i| ((i * 37 + 11) % 61) as u8).collect();
        let mut w = gguf_common::Writer::new(3);
        w.str("general.architecture", "llama")
            .tensor("t", &[n as u64], id, data);
        out.push((format!("type_{id:02}_{}", ty.name()), w.bytes()));
    }
    out
}

/// CTranslate2 `model.bin` files: every dtype, an int8 weight with its scale, an alias.
fn ct2_files() -> Vec<(String, Vec<u8>)> {
    let mut b = ct2_common::Bin::new("WhisperSpec", 3);
    b.f32("encoder/layer_0/linear/bias", &[2], &[0.5, -1.0])
        .var(
            "encoder/layer_0/linear/weight",
            &[2, 2],
            1,
            vec![1, 255, 3, 4],
        )
        .f32("encoder/layer_0/linear/weight_scale", &[2], &[0.5, 2.0])
        .var("a/i16", &[2], 2, vec![1, 0, 255, 255])
        .var("a/i32", &[], 3, 7i32.to_le_bytes().to_vec())
        .var(
            "a/f16",
            &[2],
            4,
            [gguf_common::h(1.5), gguf_common::h(-2.0)].concat(),
        )
        .var("a/bf16", &[2], 5, vec![0x80, 0x3f, 0x00, 0xc0]);
    b.aliases
        .push(("decoder/proj_out/weight".into(), "a/f16".into()));
    let mut empty = ct2_common::Bin::new("TransformerSpec", 1);
    empty.f32("x", &[1], &[1.0]);
    vec![
        ("whisper_dtypes.bin".into(), b.bytes()),
        ("other_spec.bin".into(), empty.bytes()),
    ]
}

fn safetensors_bytes(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .expect("consistent test tensor");
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialisable")
}

fn safetensors_files() -> Vec<(String, Vec<u8>)> {
    use safetensors::Dtype::*;
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let single = safetensors_bytes(&[
        ("a.f32", F32, vec![2, 2], f32s(&[1.0, 2.0, 3.0, 4.0])),
        (
            "b.f16",
            F16,
            vec![2],
            [gguf_common::h(0.5), gguf_common::h(2.0)].concat(),
        ),
        ("c.bf16", BF16, vec![1], vec![0x80, 0x3f]),
        ("d.f64", F64, vec![1], 1.5f64.to_le_bytes().to_vec()),
    ]);
    let shard1 = safetensors_bytes(&[("x.weight", F32, vec![2], f32s(&[1.0, -1.0]))]);
    let shard2 = safetensors_bytes(&[("y.weight", F16, vec![1], gguf_common::h(3.0).to_vec())]);
    let index = br#"{"metadata": {"total_size": 10}, "weight_map": {"x.weight": "model-00001-of-00002.safetensors", "y.weight": "model-00002-of-00002.safetensors"}}"#;
    vec![
        ("single.bin".into(), with_mode(0, &single)),
        (
            "sharded.bin".into(),
            with_mode(1, &join(&[index, &shard1, &shard2])),
        ),
        (
            "tiny_untied_index.bin".into(),
            with_mode(
                1,
                &models_fixture("tiny_untied/model.safetensors.index.json"),
            ),
        ),
    ]
}

fn wav(spec: hound::WavSpec, frames: usize) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cursor, spec).expect("wav header");
    for i in 0..frames * spec.channels as usize {
        let x = ((i as f32) * 0.05).sin() * 0.5;
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, _) => w.write_sample(x).expect("sample"),
            (_, 8) => w.write_sample((x * 127.0) as i8).expect("sample"),
            (_, 16) => w.write_sample((x * 32767.0) as i16).expect("sample"),
            (_, bits) => w
                .write_sample((x * ((1i32 << (bits - 1)) - 1) as f32) as i32)
                .expect("sample"),
        }
    }
    w.finalize().expect("wav");
    cursor.into_inner()
}

fn audio_files() -> Vec<(String, Vec<u8>)> {
    use hound::SampleFormat::{Float, Int};
    let spec = |channels, sample_rate, bits_per_sample, sample_format| hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample,
        sample_format,
    };
    vec![
        (
            "pcm16_mono_16k.wav".into(),
            wav(spec(1, 16000, 16, Int), 400),
        ),
        ("pcm8_stereo_8k.wav".into(), wav(spec(2, 8000, 8, Int), 200)),
        (
            "pcm24_mono_44k.wav".into(),
            wav(spec(1, 44100, 24, Int), 441),
        ),
        (
            "float_stereo_48k.wav".into(),
            wav(spec(2, 48000, 32, Float), 480),
        ),
        (
            "fixture_1s.flac".into(),
            models_fixture("whisper_tiny/audio_1s.flac"),
        ),
    ]
}

/// Every seed, by target and file name.
fn seeds() -> BTreeMap<&'static str, Vec<(String, Vec<u8>)>> {
    let mut s = BTreeMap::new();
    let mut gguf = vec![("tiny_llama".to_string(), tiny_llama_gguf())];
    gguf.extend(gguf_per_type());
    s.insert("gguf", gguf);
    s.insert("ct2", ct2_files());
    s.insert("safetensors", safetensors_files());
    s.insert(
        "peft_adapter",
        ["adapter", "peft_import_lora", "peft_import_adalora"]
            .iter()
            .map(|d| {
                (
                    format!("tiny_tied_{d}.bin"),
                    join(&[
                        &models_fixture(&format!("tiny_tied/{d}/adapter_config.json")),
                        &models_fixture(&format!("tiny_tied/{d}/adapter_model.safetensors")),
                    ]),
                )
            })
            .collect(),
    );
    s.insert(
        "llama_config",
        vec![
            (
                "tiny_tied.json".into(),
                models_fixture("tiny_tied/config.json"),
            ),
            (
                "tiny_untied.json".into(),
                models_fixture("tiny_untied/config.json"),
            ),
        ],
    );
    s.insert(
        "whisper_config",
        vec![(
            "whisper_tiny.bin".into(),
            join(&[
                &models_fixture("whisper_tiny/config.json"),
                &models_fixture("whisper_tiny/generation_config.json"),
            ]),
        )],
    );
    s.insert("audio", audio_files());
    s.insert(
        "data_json",
        vec![
            (
                "gsm8k.bin".into(),
                with_mode(0, &datasets_fixture("gsm8k.jsonl")),
            ),
            (
                "metamathqa.bin".into(),
                with_mode(9, &datasets_fixture("metamathqa.json")),
            ),
            (
                "svamp.bin".into(),
                with_mode(10, &datasets_fixture("svamp.json")),
            ),
            (
                "multiarith.bin".into(),
                with_mode(11, &datasets_fixture("multiarith.json")),
            ),
            (
                "instruction.bin".into(),
                with_mode(12, &datasets_fixture("instruction.json")),
            ),
            (
                "mawps.bin".into(),
                with_mode(13, &datasets_fixture("mawps_trainset.json")),
            ),
            (
                "detect_gsm8k.bin".into(),
                with_mode(6, &datasets_fixture("gsm8k.jsonl")),
            ),
            (
                "bad_gsm8k_skip.bin".into(),
                with_mode(16, &datasets_fixture("bad_gsm8k.jsonl")),
            ),
        ],
    );
    s.insert(
        "data_mrqa",
        vec![
            (
                "plain.bin".into(),
                with_mode(0, &datasets_fixture("mrqa_squad.jsonl")),
            ),
            (
                "gzip.bin".into(),
                with_mode(1, &datasets_fixture("mrqa_squad.jsonl")),
            ),
        ],
    );
    s.insert(
        "data_mawps_csv",
        vec![(
            "mawps_cv.bin".into(),
            with_mode(0, &datasets_fixture("mawps_cv.csv")),
        )],
    );
    s.insert(
        "data_librispeech",
        vec![(
            "two_utterances.bin".into(),
            with_mode(
                0,
                b"84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n",
            ),
        )],
    );
    s
}

#[test]
fn seeds_are_current() {
    let write = std::env::var_os("FLEXI_WRITE_FUZZ_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, files) in seeds() {
        let dir = fuzz_dir().join("seeds").join(target);
        if write {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (name, bytes) in files {
            let path = dir.join(&name);
            if write {
                std::fs::write(&path, &bytes).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds differ from what this test writes (rewrite them with \
         FLEXI_WRITE_FUZZ_SEEDS=1 cargo test --workspace --test fuzz_regressions): {stale:?}"
    );
}

fn target_fn(name: &str) -> fn(&[u8]) {
    match name {
        "gguf" => harness::gguf,
        "ct2" => harness::ct2,
        "safetensors" => harness::safetensors,
        "peft_adapter" => harness::peft_adapter,
        "llama_config" => harness::llama_config,
        "whisper_config" => harness::whisper_config,
        "audio" => harness::audio,
        "data_json" => harness::data_json,
        "data_mrqa" => harness::data_mrqa,
        "data_mawps_csv" => harness::data_mawps_csv,
        "data_librispeech" => harness::data_librispeech,
        other => panic!("fuzz/{other}: no such fuzz target"),
    }
}

/// Runs every file under `fuzz/<kind>/<target>/` through its target; returns how many ran.
fn replay(kind: &str) -> usize {
    let root = fuzz_dir().join(kind);
    let Ok(targets) = std::fs::read_dir(&root) else {
        return 0;
    };
    let mut n = 0;
    let mut targets: Vec<PathBuf> = targets.map(|e| e.unwrap().path()).collect();
    targets.sort();
    for dir in targets {
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        let run = target_fn(&target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(
                outcome.is_ok(),
                "{} panicked in fuzz target {target}",
                file.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn every_seed_runs_through_its_target() {
    let n = replay("seeds");
    assert!(n >= 30, "expected the committed seeds, found {n} files");
}

#[test]
fn every_input_a_bug_was_found_with_stays_fixed() {
    replay("regressions");
}
