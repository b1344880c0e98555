//! The CTranslate2 reader on `model.bin` files these tests write byte by byte from the format
//! `ctranslate2.specs.model_spec` serialises: header, dtypes, int8 scales, aliases, bad input;
//! and the tiny Whisper fixture written as a CTranslate2 `WhisperSpec` (fused QKV, float16,
//! aliased projection) loading into the same model as its HF directory.

mod ct2_common;

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use ct2_common::Bin;
use flexi_burn::SampleRanks;
use models::ct2::{Ct2Error, Ct2Model, load_whisper_any, load_whisper_ct2, whisper_config};
use models::whisper::{Whisper, WhisperAdapter, load_whisper};
use safetensors::SafeTensors;

type B = Flex;

#[test]
fn header_dtypes_scales_and_aliases() {
    let mut b = Bin::new("WhisperSpec", 3);
    b.f32("a/bias", &[2], &[1.5, -2.0])
        .var(
            "a/half",
            &[2],
            4,
            [half::f16::from_f32(0.25), half::f16::from_f32(-8.0)]
                .iter()
                .flat_map(|h| h.to_le_bytes())
                .collect(),
        )
        // int8 [2, 3] with per-row scales 2 and 0.5: value = q / scale.
        .var(
            "lin/weight",
            &[2, 3],
            1,
            [2i8, -4, 6, 1, 0, -1].iter().map(|&q| q as u8).collect(),
        )
        .f32("lin/weight_scale", &[2], &[2.0, 0.5])
        .var("num_heads", &[], 2, 6i16.to_le_bytes().to_vec());
    b.aliases.push(("proj/weight".into(), "lin/weight".into()));
    let m = Ct2Model::from_bytes("model.bin", b.bytes()).unwrap();
    assert_eq!(
        (m.version, m.spec.as_str(), m.revision),
        (6, "WhisperSpec", 3)
    );
    assert_eq!(m.variables().len(), 5);
    assert_eq!(m.to_f32("a/bias").unwrap(), (vec![1.5, -2.0], vec![2]));
    assert_eq!(m.to_f32("a/half").unwrap().0, vec![0.25, -8.0]);
    let (w, shape) = m.to_f32("lin/weight").unwrap();
    assert_eq!(shape, vec![2, 3]);
    assert_eq!(w, vec![1.0, -2.0, 3.0, 2.0, 0.0, -2.0]);
    assert_eq!(m.to_f32("proj/weight").unwrap().0, w);
    assert_eq!(m.scalar_i64("num_heads").unwrap(), 6);
    assert!(m.scalar_i64("a/bias").is_err());
}

#[test]
fn bad_files_are_named() {
    let mut b = Bin::new("WhisperSpec", 3);
    b.f32("x", &[4], &[0.0; 4]);
    let full = b.bytes();
    for cut in 0..full.len() {
        let e = Ct2Model::from_bytes("model.bin", full[..cut].to_vec()).unwrap_err();
        assert!(matches!(e, Ct2Error::Truncated { .. }), "cut {cut}: {e}");
    }
    let e = Ct2Model::from_bytes("model.bin", full[..full.len() - 6].to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("variable x") && e.contains("truncated"), "{e}");
    b.version = 5;
    let e = Ct2Model::from_bytes("model.bin", b.bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("version 5"), "{e}");
    // A size that does not match the shape, an unknown dtype.
    let mut b = Bin::new("WhisperSpec", 3);
    b.var("x", &[4], 0, vec![0; 12]);
    let e = Ct2Model::from_bytes("model.bin", b.bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("variable x") && e.contains("12 bytes"), "{e}");
    let mut b = Bin::new("WhisperSpec", 3);
    b.var("x", &[1], 9, vec![0]);
    let e = Ct2Model::from_bytes("model.bin", b.bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("dtype id 9"), "{e}");
}

#[test]
fn a_truncated_model_bin_on_disk_names_its_path() {
    // A download cut short: the loader names the file on disk and the variable that is cut.
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bin::new("WhisperSpec", 3);
    b.f32("x", &[4], &[0.0; 4]);
    let full = b.bytes();
    let path = tmp.path().join("model.bin");
    std::fs::write(&path, &full[..full.len() - 6]).unwrap();
    let e = load_whisper_ct2::<B>(tmp.path(), &WhisperAdapter::none(), &Default::default())
        .unwrap_err();
    assert!(matches!(e, Ct2Error::Truncated { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&path.display().to_string())
            && msg.contains("variable x")
            && msg.contains("truncated"),
        "{msg}"
    );
    println!("{msg}");
}

#[test]
fn other_specs_and_revisions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (spec, rev) in [("WhisperSpec", 2), ("TransformerSpec", 3)] {
        let b = Bin::new(spec, rev);
        std::fs::write(tmp.path().join("model.bin"), b.bytes()).unwrap();
        let e = load_whisper_ct2::<B>(tmp.path(), &WhisperAdapter::none(), &Default::default())
            .unwrap_err();
        assert!(matches!(e, Ct2Error::UnsupportedSpec { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{spec} revision {rev}"))
                && msg.contains("WhisperSpec revision 3"),
            "{msg}"
        );
    }
}

/// The HF Whisper fixture written as a CTranslate2 `WhisperSpec` directory, the way
/// `ctranslate2.converters.TransformersConverter` lays it out.
fn convert(hf: &Path, out: &Path) {
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    let raw = |n: &str| -> (Vec<u32>, Vec<u8>) {
        let v = st.tensor(n).unwrap();
        assert_eq!(v.dtype(), safetensors::Dtype::F16);
        (
            v.shape().iter().map(|&d| d as u32).collect(),
            v.data().to_vec(),
        )
    };
    let mut b = Bin::new("WhisperSpec", 3);
    let put = |b: &mut Bin, ct2: &str, hf: &str| {
        let (shape, data) = raw(hf);
        b.var(ct2, &shape, 4, data);
    };
    // Fused rows: weights concatenated; biases with zeros where HF has none (k_proj).
    let fuse = |b: &mut Bin, ct2: &str, hf: &str, projs: &[&str]| {
        let mut w = Vec::new();
        let mut bias = Vec::new();
        let mut rows = 0;
        let mut cols = 0;
        for p in projs {
            let (shape, data) = raw(&format!("{hf}.{p}.weight"));
            rows += shape[0];
            cols = shape[1];
            w.extend(data);
            match st.tensor(&format!("{hf}.{p}.bias")) {
                Ok(v) => bias.extend(v.data()),
                Err(_) => bias.extend(vec![0u8; 2 * shape[0] as usize]),
            }
        }
        b.var(&format!("{ct2}/weight"), &[rows, cols], 4, w);
        b.var(&format!("{ct2}/bias"), &[rows], 4, bias);
    };
    let n = |k: &str| config[k].as_u64().unwrap() as usize;
    for stack in ["encoder", "decoder"] {
        let hf_stack = format!("model.{stack}");
        for i in 0..n(&format!("{stack}_layers")) {
            let (c, h) = (
                format!("{stack}/layer_{i}"),
                format!("{hf_stack}.layers.{i}"),
            );
            fuse(
                &mut b,
                &format!("{c}/self_attention/linear_0"),
                &format!("{h}.self_attn"),
                &["q_proj", "k_proj", "v_proj"],
            );
            for q in ["weight", "bias"] {
                put(
                    &mut b,
                    &format!("{c}/self_attention/linear_1/{q}"),
                    &format!("{h}.self_attn.out_proj.{q}"),
                );
                put(
                    &mut b,
                    &format!("{c}/ffn/linear_0/{q}"),
                    &format!("{h}.fc1.{q}"),
                );
                put(
                    &mut b,
                    &format!("{c}/ffn/linear_1/{q}"),
                    &format!("{h}.fc2.{q}"),
                );
            }
            for (ct2, hf) in [("gamma", "weight"), ("beta", "bias")] {
                put(
                    &mut b,
                    &format!("{c}/self_attention/layer_norm/{ct2}"),
                    &format!("{h}.self_attn_layer_norm.{hf}"),
                );
                put(
                    &mut b,
                    &format!("{c}/ffn/layer_norm/{ct2}"),
                    &format!("{h}.final_layer_norm.{hf}"),
                );
                if stack == "decoder" {
                    put(
                        &mut b,
                        &format!("{c}/attention/layer_norm/{ct2}"),
                        &format!("{h}.encoder_attn_layer_norm.{hf}"),
                    );
                }
            }
            if stack == "decoder" {
                fuse(
                    &mut b,
                    &format!("{c}/attention/linear_0"),
                    &format!("{h}.encoder_attn"),
                    &["q_proj"],
                );
                fuse(
                    &mut b,
                    &format!("{c}/attention/linear_1"),
                    &format!("{h}.encoder_attn"),
                    &["k_proj", "v_proj"],
                );
                for q in ["weight", "bias"] {
                    put(
                        &mut b,
                        &format!("{c}/attention/linear_2/{q}"),
                        &format!("{h}.encoder_attn.out_proj.{q}"),
                    );
                }
            }
        }
        put(
            &mut b,
            &format!("{stack}/layer_norm/gamma"),
            &format!("{hf_stack}.layer_norm.weight"),
        );
        put(
            &mut b,
            &format!("{stack}/layer_norm/beta"),
            &format!("{hf_stack}.layer_norm.bias"),
        );
        put(
            &mut b,
            &format!("{stack}/position_encodings/encodings"),
            &format!("{hf_stack}.embed_positions.weight"),
        );
        let heads = n(&format!("{stack}_attention_heads")) as i16;
        b.var(
            &format!("{stack}/num_heads"),
            &[],
            2,
            heads.to_le_bytes().to_vec(),
        );
    }
    for conv in ["conv1", "conv2"] {
        for q in ["weight", "bias"] {
            put(
                &mut b,
                &format!("encoder/{conv}/{q}"),
                &format!("model.encoder.{conv}.{q}"),
            );
        }
    }
    put(
        &mut b,
        "decoder/embeddings/weight",
        "model.decoder.embed_tokens.weight",
    );
    b.var("decoder/activation", &[], 1, vec![3]);
    b.var("decoder/pre_norm", &[], 1, vec![1]);
    b.var("decoder/scale_embeddings", &[], 1, vec![0]);
    b.var("decoder/alibi", &[], 1, vec![0]);
    b.vars.sort_by(|a, b| a.0.cmp(&b.0));
    b.aliases.push((
        "decoder/projection/weight".into(),
        "decoder/embeddings/weight".into(),
    ));
    std::fs::write(out.join("model.bin"), b.bytes()).unwrap();
    let generation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("generation_config.json")).unwrap())
            .unwrap();
    let ct2_config = serde_json::json!({
        "suppress_ids": generation["suppress_tokens"],
        "suppress_ids_begin": generation["begin_suppress_tokens"],
    });
    std::fs::write(out.join("config.json"), ct2_config.to_string()).unwrap();
    std::fs::copy(hf.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
}

#[test]
fn tiny_whisper_from_ct2_equals_the_hf_directory() {
    let hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whisper_tiny");
    let tmp = tempfile::tempdir().unwrap();
    convert(&hf, tmp.path());
    let device = Default::default();
    let none = WhisperAdapter::none();
    let from_hf: Whisper<B> = load_whisper(&hf, &none, &device).unwrap();
    let from_ct2: Whisper<B> = load_whisper_ct2(tmp.path(), &none, &device).unwrap();
    let model = Ct2Model::open(tmp.path()).unwrap();
    let c = whisper_config(&model, tmp.path()).unwrap();
    let h = models::whisper::WhisperConfig::from_dir(&hf).unwrap();
    assert_eq!(
        (
            c.d_model,
            c.encoder_layers,
            c.decoder_layers,
            c.encoder_attention_heads
        ),
        (
            h.d_model,
            h.encoder_layers,
            h.decoder_layers,
            h.encoder_attention_heads
        )
    );
    assert_eq!(
        (
            c.vocab_size,
            c.num_mel_bins,
            c.max_source_positions,
            c.max_target_positions
        ),
        (
            h.vocab_size,
            h.num_mel_bins,
            h.max_source_positions,
            h.max_target_positions
        )
    );
    assert_eq!(
        (
            c.decoder_start_token_id,
            c.eos_token_id,
            &c.suppress_tokens,
            &c.begin_suppress_tokens
        ),
        (
            h.decoder_start_token_id,
            h.eos_token_id,
            &h.suppress_tokens,
            &h.begin_suppress_tokens
        )
    );
    let mel: Tensor<B, 3> = Tensor::random([1, 80, 3000], Distribution::Normal(0.0, 1.0), &device);
    let ids = from_hf
        .ids_tensor(&[vec![301, 302, 306, 5, 17, 42]], &device)
        .unwrap();
    let ranks = SampleRanks::new(vec![0]);
    let a = from_hf.forward(mel.clone(), ids.clone(), &ranks).unwrap();
    let b = from_ct2.forward(mel, ids, &ranks).unwrap();
    let worst = (a - b).abs().max().into_scalar();
    println!("tiny Whisper, HF directory vs CTranslate2: max |logit diff| = {worst:e}");
    assert_eq!(worst, 0.0);
    // One entry point for both layouts.
    load_whisper_any::<B>(&hf, &none, &device).unwrap();
    load_whisper_any::<B>(tmp.path(), &none, &device).unwrap();
}
