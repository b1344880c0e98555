//! The GGUF reader on small files these tests write byte by byte: every metadata type, v2 and
//! v3, alignment, hand-computed quantised blocks, the Llama mapping and config, the tokenizer,
//! and bad input (truncation, magic, version, unsupported type and architecture).

mod gguf_common;

use gguf_common::{Writer, h};
use models::gguf::{
    GgmlType, GgufError, GgufFile, MetaValue, hf_tensors, llama_config_json, permute_qk_rows,
    tokenizer,
};

#[test]
fn every_metadata_type_in_v2_and_v3() {
    for version in [2, 3] {
        let mut w = Writer::new(version);
        w.raw("t.u8", 0, vec![200])
            .raw("t.i8", 1, vec![0xfe])
            .raw("t.u16", 2, 60_000u16.to_le_bytes().to_vec())
            .raw("t.i16", 3, (-300i16).to_le_bytes().to_vec())
            .u32("t.u32", 4_000_000_000)
            .raw("t.i32", 5, (-7i32).to_le_bytes().to_vec())
            .f32("t.f32", 0.5)
            .bool("t.bool", true)
            .str("t.string", "héllo")
            .strs("t.strings", &["a", "", "c d"])
            .i32s("t.i32s", &[1, -2, 3])
            .raw("t.u64", 10, u64::MAX.to_le_bytes().to_vec())
            .raw("t.i64", 11, (-5i64).to_le_bytes().to_vec())
            .raw("t.f64", 12, 2.25f64.to_le_bytes().to_vec());
        // A nested array: [[1u8, 2u8], []].
        let mut nested = 9u32.to_le_bytes().to_vec();
        nested.extend(2u64.to_le_bytes());
        nested.extend(0u32.to_le_bytes());
        nested.extend(2u64.to_le_bytes());
        nested.extend([1u8, 2]);
        nested.extend(0u32.to_le_bytes());
        nested.extend(0u64.to_le_bytes());
        w.raw("t.nested", 9, nested);
        let f = w.file();
        assert_eq!(f.version, version);
        assert_eq!(f.metadata().len(), 15);
        assert_eq!(f.get("t.u8"), Some(&MetaValue::U8(200)));
        assert_eq!(f.get("t.i8"), Some(&MetaValue::I8(-2)));
        assert_eq!(f.get_u64("t.u16").unwrap(), 60_000);
        assert_eq!(f.get("t.i16"), Some(&MetaValue::I16(-300)));
        assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
        assert_eq!(f.get("t.i32").and_then(MetaValue::as_i64), Some(-7));
        assert_eq!(f.get_f64("t.f32").unwrap(), 0.5);
        assert_eq!(f.get("t.bool").and_then(MetaValue::as_bool), Some(true));
        assert_eq!(f.get_str("t.string").unwrap(), "héllo");
        let strs: Vec<_> = f
            .get_array("t.strings")
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(strs, ["a", "", "c d"]);
        let ints: Vec<_> = f
            .get_array("t.i32s")
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(ints, [1, -2, 3]);
        assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX);
        assert_eq!(f.get("t.i64"), Some(&MetaValue::I64(-5)));
        assert_eq!(f.get_f64("t.f64").unwrap(), 2.25);
        assert_eq!(
            f.get("t.nested"),
            Some(&MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]),
                MetaValue::Array(vec![]),
            ]))
        );
        // Typed access names the key and both types.
        let e = f.get_u64("t.string").unwrap_err().to_string();
        assert!(e.contains("t.string") && e.contains("string"), "{e}");
        assert!(matches!(
            f.get_str("absent"),
            Err(GgufError::MissingKey { .. })
        ));
    }
}

/// F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors with values computed by hand, at a custom
/// alignment.
#[test]
fn tensors_dequantise_to_hand_computed_values() {
    let mut w = Writer::new(3);
    w.alignment = 64;
    w.u32("general.alignment", 64);
    // [2, 3] f32 row-major: ne = [3, 2].
    w.f32_tensor("f32", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    w.tensor("f16", &[2], 1, [h(0.5), h(-1.25)].concat());
    w.tensor(
        "bf16",
        &[2],
        30,
        [
            half::bf16::from_f32(3.0).to_le_bytes(),
            half::bf16::from_f32(-0.5).to_le_bytes(),
        ]
        .concat(),
    );
    // Q8_0: d = 0.5, q = -16..16.
    let mut q8 = h(0.5).to_vec();
    q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
    w.tensor("q8_0", &[32], 8, q8);
    // Q4_0: d = 2, nibbles: low = 8 (-> 0) and high = 9 (-> +2) for every byte, except byte 0
    // whose low nibble is 0 (-> -16).
    let mut q4 = h(2.0).to_vec();
    q4.extend((0..16).map(|j| if j == 0 { 0x90u8 } else { 0x98 }));
    w.tensor("q4_0", &[32], 2, q4);
    // Q4_1, two blocks as a [2, 32] matrix: block r has d = 1, m = r: x = q + r, q = j % 16.
    let mut q41 = vec![];
    for r in 0..2 {
        q41.extend(h(1.0));
        q41.extend(h(r as f32));
        q41.extend((0..16u8).map(|j| j | (j << 4)));
    }
    w.tensor("q4_1", &[32, 2], 3, q41);
    let f = w.file();
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_start % 64, 0);
    let t = f.tensor_info("f32").unwrap();
    assert_eq!((t.shape(), t.ggml_type), (vec![2, 3], GgmlType::F32));
    assert_eq!(
        f.dequantize("f32").unwrap().0,
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(f.dequantize("f16").unwrap().0, vec![0.5, -1.25]);
    assert_eq!(f.dequantize("bf16").unwrap().0, vec![3.0, -0.5]);
    let q8 = f.dequantize("q8_0").unwrap().0;
    assert_eq!((q8[0], q8[16], q8[31]), (-8.0, 0.0, 7.5));
    let q4 = f.dequantize("q4_0").unwrap().0;
    assert_eq!(q4[0], -16.0);
    assert!(q4[1..16].iter().all(|&v| v == 0.0));
    assert!(q4[16..].iter().all(|&v| v == 2.0));
    let (q41, shape) = f.dequantize("q4_1").unwrap();
    assert_eq!(shape, vec![2, 32]);
    for r in 0..2 {
        for j in 0..32 {
            assert_eq!(q41[32 * r + j], (j % 16) as f32 + r as f32);
        }
    }
}

#[test]
fn offsets_and_sizes_that_overflow_are_errors_not_wraparounds() {
    // One f32 tensor "a" of 4 elements, no metadata: its u64 offset is bytes 49..57 (magic,
    // version, two counts = 24; name = 8 + 1; n_dims 4; ne 8; type 4).
    let mut w = Writer::new(3);
    w.f32_tensor("a", &[4], &[1.0; 4]);
    let good = w.bytes();
    GgufFile::from_bytes("t.gguf", good.clone()).unwrap();
    assert_eq!(&good[49..57], &0u64.to_le_bytes());
    // An aligned offset that wraps data_start + offset around to a small position.
    let mut bad = good.clone();
    bad[49..57].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    let e = GgufFile::from_bytes("t.gguf", bad).unwrap_err();
    assert!(
        matches!(e, GgufError::Malformed { .. }) && e.to_string().contains("overflows"),
        "{e}"
    );
    // Dimensions whose element count overflows u64: an error, not a panic or a wrap.
    let mut w = Writer::new(3);
    w.tensor("b", &[1 << 40, 1 << 40], 0, vec![0; 4]);
    let e = GgufFile::from_bytes("t.gguf", w.bytes()).unwrap_err();
    assert!(
        matches!(e, GgufError::Malformed { .. }) && e.to_string().contains("overflow"),
        "{e}"
    );
}

#[test]
fn truncated_files_name_what_is_cut() {
    let mut w = Writer::new(3);
    w.str("general.architecture", "llama");
    w.f32_tensor("blk.0.attn_norm.weight", &[64], &[1.0; 64]);
    let full = w.bytes();
    GgufFile::from_bytes("t.gguf", full.clone()).unwrap();
    // Cut inside the tensor data.
    let e = GgufFile::from_bytes("t.gguf", full[..full.len() - 10].to_vec()).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("t.gguf") && msg.contains("blk.0.attn_norm.weight"),
        "{msg}"
    );
    // Cut inside the metadata and inside the header: every prefix fails cleanly.
    for cut in 0..full.len() - 256 {
        let e = GgufFile::from_bytes("t.gguf", full[..cut].to_vec()).unwrap_err();
        assert!(
            matches!(e, GgufError::Truncated { .. } | GgufError::BadMagic { .. }),
            "cut at {cut}: {e}"
        );
    }
    // A corrupt array length fails without allocating.
    let mut w = Writer::new(3);
    let mut p = 8u32.to_le_bytes().to_vec();
    p.extend(u64::MAX.to_le_bytes());
    w.raw("huge", 9, p);
    let e = GgufFile::from_bytes("t.gguf", w.bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated") && e.contains("huge"), "{e}");
}

#[test]
fn bad_magic_version_and_types_are_named() {
    let e = GgufFile::from_bytes("x.bin", b"PK\x03\x04rest".to_vec()).unwrap_err();
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    let mut w = Writer::new(1);
    w.u32("a", 1);
    let e = GgufFile::from_bytes("v1.gguf", w.bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("version 1"), "{e}");
    // An importance-matrix quant (IQ2_XXS, 66 bytes per 256) parses but does not dequantise.
    let mut w = Writer::new(3);
    w.tensor("w", &[256], 16, vec![0; 66]);
    let f = w.file();
    let e = f.dequantize("w").unwrap_err();
    assert!(matches!(e, GgufError::UnsupportedType { .. }));
    let msg = e.to_string();
    assert!(msg.contains("IQ2_XXS") && msg.contains("tensor w"), "{msg}");
    // An id ggml does not define.
    let mut w = Writer::new(3);
    w.tensor("w", &[4], 4, vec![0; 16]);
    let e = GgufFile::from_bytes("t.gguf", w.bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown ggml type id 4") && e.contains("tensor w"),
        "{e}"
    );
    // A row that is not whole blocks.
    let mut w = Writer::new(3);
    w.tensor("w", &[16], 8, vec![0; 34]);
    let e = GgufFile::from_bytes("t.gguf", w.bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocks of 32"), "{e}");
    // Unknown metadata type.
    let mut w = Writer::new(3);
    w.raw("k", 13, vec![]);
    let e = GgufFile::from_bytes("t.gguf", w.bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown metadata value type 13") && e.contains("k"),
        "{e}"
    );
}

/// A tiny Llama: 2 heads of head_dim 4 (hidden 8), 1 kv head, 1 layer, ffn 4, vocab 6.
fn tiny_llama(arch: &str, with_output: bool) -> (Writer, Vec<f32>, Vec<f32>) {
    let (hidden, heads, kv_heads, ffn, vocab) = (8u64, 2usize, 1usize, 4u64, 6u64);
    let mut w = Writer::new(3);
    w.str("general.architecture", arch)
        .u32(&format!("{arch}.block_count"), 1)
        .u32(&format!("{arch}.context_length"), 128)
        .u32(&format!("{arch}.embedding_length"), hidden as u32)
        .u32(&format!("{arch}.feed_forward_length"), ffn as u32)
        .u32(&format!("{arch}.attention.head_count"), heads as u32)
        .u32(&format!("{arch}.attention.head_count_kv"), kv_heads as u32)
        .f32(&format!("{arch}.rope.freq_base"), 100_000.0)
        .f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5)
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2);
    let seq = |n: u64, base: f32| -> Vec<f32> { (0..n).map(|i| base + i as f32).collect() };
    // HF q [8, 8] and k [4, 8]; GGUF stores them permuted.
    let q_hf = seq(hidden * hidden, 0.0);
    let k_hf = seq(4 * hidden, 1000.0);
    w.f32_tensor(
        "token_embd.weight",
        &[hidden, vocab],
        &seq(hidden * vocab, 0.0),
    )
    .f32_tensor("blk.0.attn_norm.weight", &[hidden], &[1.0; 8])
    .f32_tensor(
        "blk.0.attn_q.weight",
        &[hidden, hidden],
        &permute_qk_rows(&q_hf, 8, heads),
    )
    .f32_tensor(
        "blk.0.attn_k.weight",
        &[hidden, 4],
        &permute_qk_rows(&k_hf, 8, kv_heads),
    )
    .f32_tensor("blk.0.attn_v.weight", &[hidden, 4], &seq(32, 0.0))
    .f32_tensor("blk.0.attn_output.weight", &[hidden, hidden], &seq(64, 0.0))
    .f32_tensor("blk.0.ffn_norm.weight", &[hidden], &[1.0; 8])
    .f32_tensor("blk.0.ffn_gate.weight", &[hidden, ffn], &seq(32, 0.0))
    .f32_tensor("blk.0.ffn_up.weight", &[hidden, ffn], &seq(32, 0.0))
    .f32_tensor("blk.0.ffn_down.weight", &[ffn, hidden], &seq(32, 0.0))
    .f32_tensor("output_norm.weight", &[hidden], &[1.0; 8]);
    if with_output {
        w.f32_tensor("output.weight", &[hidden, vocab], &seq(48, 0.0));
    }
    (w, q_hf, k_hf)
}

#[test]
fn llama_config_and_hf_tensors() {
    let (w, q_hf, k_hf) = tiny_llama("llama", false);
    let f = w.file();
    let c = llama_config_json(&f).unwrap();
    assert_eq!(c["hidden_size"], 8);
    assert_eq!(c["num_hidden_layers"], 1);
    assert_eq!(c["num_attention_heads"], 2);
    assert_eq!(c["num_key_value_heads"], 1);
    assert_eq!(c["head_dim"], 4);
    assert_eq!(c["intermediate_size"], 4);
    assert_eq!(c["vocab_size"], 6);
    assert_eq!(c["rope_theta"], 100_000.0);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["max_position_embeddings"], 128);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], 2);
    let tensors = hf_tensors(&f).unwrap();
    let get = |n: &str| tensors.iter().find(|t| t.name == n).unwrap();
    let q = get("model.layers.0.self_attn.q_proj.weight");
    assert_eq!((q.values.clone(), q.shape.clone()), (q_hf, vec![8, 8]));
    let k = get("model.layers.0.self_attn.k_proj.weight");
    assert_eq!((k.values.clone(), k.shape.clone()), (k_hf, vec![4, 8]));
    assert_eq!(get("model.embed_tokens.weight").shape, vec![6, 8]);
    assert_eq!(get("model.layers.0.mlp.down_proj.weight").shape, vec![8, 4]);
    assert!(tensors.iter().all(|t| t.name != "lm_head.weight"));

    let (w, _, _) = tiny_llama("llama", true);
    let f = w.file();
    assert_eq!(llama_config_json(&f).unwrap()["tie_word_embeddings"], false);
    assert!(
        hf_tensors(&f)
            .unwrap()
            .iter()
            .any(|t| t.name == "lm_head.weight")
    );
}

#[test]
fn other_architectures_and_unknown_tensors_are_refused() {
    let (w, _, _) = tiny_llama("phi3", false);
    let e = llama_config_json(&w.file()).unwrap_err();
    assert!(matches!(e, GgufError::UnsupportedArchitecture { .. }));
    let msg = e.to_string();
    assert!(msg.contains("\"phi3\"") && msg.contains("llama"), "{msg}");
    let (mut w, _, _) = tiny_llama("llama", false);
    w.f32_tensor("blk.0.attn_qkv.weight", &[8], &[0.0; 8]);
    let e = hf_tensors(&w.file()).unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_qkv.weight"), "{e}");
}

#[test]
fn tokenizer_from_metadata() {
    // Byte-level symbols: "Ġ" is the space. Merges build "he", "ll", "hell", "hello", "Ġw".
    let tokens = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "h",
        "e",
        "l",
        "o",
        "Ġ",
        "w",
        "r",
        "d",
        "1",
        "2",
        "he",
        "ll",
        "hell",
        "hello",
        "Ġw",
        "12",
    ];
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "1 2"];
    let mut types = vec![1i32; tokens.len()];
    types[..3].copy_from_slice(&[3, 3, 3]);
    let mut w = Writer::new(3);
    w.str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .strs("tokenizer.ggml.tokens", &tokens)
        .strs("tokenizer.ggml.merges", &merges)
        .i32s("tokenizer.ggml.token_type", &types)
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2)
        .u32("tokenizer.ggml.padding_token_id", 2)
        .bool("tokenizer.ggml.add_bos_token", false);
    let tok = tokenizer(&w.file()).unwrap();
    let ids = |text: &str| tok.encode(text, true).unwrap().get_ids().to_vec();
    assert_eq!(ids("hello"), vec![16]);
    assert_eq!(ids("hello world"), vec![16, 17, 6, 9, 5, 10]);
    // Specials are matched in text; digits are split one by one (SmolLM's pre-tokenizer).
    assert_eq!(ids("<|im_start|>hello<|im_end|>"), vec![1, 16, 2]);
    assert_eq!(ids("12"), vec![11, 12]);
    assert_eq!(tok.decode(&[1, 16, 17, 6], true).unwrap(), "hello wo");

    // add_bos_token puts the bos id first.
    w.bool("tokenizer.ggml.add_bos_token", true);
    w.kv.retain(|(k, v)| k != "tokenizer.ggml.add_bos_token" || v[4] == 1);
    let tok = tokenizer(&w.file()).unwrap();
    assert_eq!(tok.encode("hello", true).unwrap().get_ids(), &[1, 16]);

    // Unsupported models and pre-tokenizers are named.
    let mut w2 = Writer::new(3);
    w2.str("tokenizer.ggml.model", "llama");
    let e = tokenizer(&w2.file()).unwrap_err().to_string();
    assert!(e.contains("\"llama\""), "{e}");
    let mut w3 = Writer::new(3);
    w3.str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "qwen2");
    let e = tokenizer(&w3.file()).unwrap_err().to_string();
    assert!(e.contains("\"qwen2\""), "{e}");
}
