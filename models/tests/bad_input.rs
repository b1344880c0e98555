//! Bad input gives typed errors that name the file and the tensor or field.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use common::fixture;
use flexi_burn::SampleRanks;
use models::format::FormatError;
use models::llama::{
    AdapterConfig, GenerationConfig, LlamaConfig, LlamaError, PaddedBatch, generate, load_llama,
    load_llama_with_peft,
};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

type B = Flex;

/// A copy of the tiny_tied fixture in a temporary directory.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny_tied");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let dir = tmp.path().to_path_buf();
    (tmp, dir)
}

fn load(dir: &Path) -> Result<models::llama::Llama<B>, LlamaError> {
    load_llama::<B>(dir, &AdapterConfig::none(), &Default::default())
}

/// Rewrites `model.safetensors` through `edit(name -> (shape, f32 bytes))`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (shape, data))| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn missing_config_json_names_the_file() {
    let (_tmp, dir) = copy_fixture();
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(&err, LlamaError::Io { path, .. } if path.ends_with("config.json")));
    println!("{err}");
}

#[test]
fn unknown_rope_scaling_type_names_field_and_type() {
    let (_tmp, dir) = copy_fixture();
    edit_config(&dir, |v| v["rope_scaling"]["rope_type"] = "yarn".into());
    let err = load(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, LlamaError::UnknownRopeScaling { kind, .. } if kind == "yarn"));
    assert!(
        msg.contains("config.json") && msg.contains("rope_scaling"),
        "{msg}"
    );
    println!("{msg}");
}

#[test]
fn bad_config_fields_are_named() {
    let cases: [(&str, serde_json::Value, &str); 4] = [
        ("num_key_value_heads", 3.into(), "num_key_value_heads"),
        ("hidden_size", "64".into(), "hidden_size"),
        ("vocab_size", serde_json::Value::Null, "vocab_size"),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "rope_scaling.low_freq_factor",
        ),
    ];
    for (field, value, named) in cases {
        let text = std::fs::read_to_string(fixture("tiny_tied").join("config.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[field] = value;
        let err =
            LlamaConfig::from_json_str(&v.to_string(), Path::new("x/config.json")).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, LlamaError::ConfigField { field, .. } if field == named),
            "{msg}"
        );
        assert!(msg.contains("x/config.json"), "{msg}");
        println!("{msg}");
    }
}

#[test]
fn truncated_and_corrupt_safetensors_name_the_file() {
    let (_tmp, dir) = copy_fixture();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(&err, LlamaError::Format(FormatError::Safetensors { path: p, .. }) if p == &path),
        "{err}"
    );
    println!("{err}");

    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(&err, LlamaError::Format(FormatError::Safetensors { .. })),
        "{err}"
    );
    println!("{err}");

    std::fs::remove_file(&path).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(&err, LlamaError::Format(FormatError::NoWeights { .. })),
        "{err}"
    );
    println!("{err}");
}

#[test]
fn wrong_shape_missing_and_unexpected_tensors_are_named() {
    let (_tmp, dir) = copy_fixture();
    let name = "model.layers.1.mlp.up_proj.weight";
    edit_weights(&dir, |t| {
        let (shape, _) = t.get_mut(name).unwrap();
        shape.reverse(); // [96, 64] -> [64, 96]
    });
    let err = load(&dir).unwrap_err();
    match &err {
        LlamaError::Format(FormatError::ShapeMismatch {
            tensor,
            expected,
            got,
            path,
        }) => {
            assert_eq!(tensor, name);
            assert_eq!(
                (expected.as_slice(), got.as_slice()),
                (&[96, 64][..], &[64, 96][..])
            );
            assert!(path.ends_with("model.safetensors"));
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
    println!("{err}");

    let (_tmp, dir) = copy_fixture();
    edit_weights(&dir, |t| {
        t.remove("model.norm.weight");
    });
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(&err, LlamaError::Format(FormatError::MissingTensor { tensor, .. }) if tensor == "model.norm.weight")
    );
    println!("{err}");

    let (_tmp, dir) = copy_fixture();
    edit_weights(&dir, |t| {
        t.insert("model.extra.weight".into(), (vec![2], vec![0; 8]));
    });
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(&err, LlamaError::Format(FormatError::UnexpectedTensors { tensors, .. }) if tensors == &["model.extra.weight"])
    );
    println!("{err}");
}

#[test]
fn missing_shard_names_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny_untied");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let shard = tmp.path().join("model-00003-of-00005.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, LlamaError::Format(FormatError::Io { path, .. }) if path == &shard),
        "{err}"
    );
    println!("{err}");
}

#[test]
fn a_shard_outside_the_checkpoint_directory_is_refused() {
    // An index from the internet must not make the loader read other files: HF writes shard
    // names as plain file names next to the index.
    for bad in [
        "../model-00001-of-00005.safetensors",
        "/etc/passwd",
        "sub/x.safetensors",
        "..",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixture("tiny_untied");
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
        }
        let index = tmp.path().join("model.safetensors.index.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
        let map = json["weight_map"].as_object_mut().unwrap();
        let first = map.keys().min().unwrap().clone();
        map.insert(first.clone(), serde_json::Value::String(bad.into()));
        std::fs::write(&index, serde_json::to_vec(&json).unwrap()).unwrap();
        let err = load(tmp.path()).unwrap_err();
        match &err {
            LlamaError::Format(FormatError::ConfigField {
                path,
                field,
                reason,
            }) => {
                assert_eq!(path, &index);
                assert_eq!(field, &format!("weight_map.{first}"));
                assert!(reason.contains("not a plain file name"), "{reason}");
            }
            other => panic!("{bad}: {other}"),
        }
    }
}

#[test]
fn prompt_longer_than_context_and_bad_tokens_are_refused() {
    let model = load(&fixture("tiny_tied")).unwrap();
    let max = model.config.max_position_embeddings;
    let long: Vec<u32> = (0..max as u32 + 1).map(|i| 10 + i % 100).collect();
    let ranks = SampleRanks::new(vec![0, 0]);
    let err = generate(
        &model,
        &[vec![5, 6], long.clone()],
        &ranks,
        &GenerationConfig::greedy(4, vec![]),
    )
    .unwrap_err();
    assert!(
        matches!(err, LlamaError::ContextOverflow { sample: 1, len, max: m } if len == max + 1 && m == max)
    );
    println!("{err}");
    let err = model
        .forward(
            &PaddedBatch::left_pad(&[long], 0),
            &SampleRanks::new(vec![0]),
        )
        .unwrap_err();
    assert!(matches!(err, LlamaError::ContextOverflow { .. }), "{err}");

    let err = model
        .forward(
            &PaddedBatch::left_pad(&[vec![1, 2, 9999]], 0),
            &SampleRanks::new(vec![0]),
        )
        .unwrap_err();
    assert!(
        matches!(err, LlamaError::TokenOutOfRange { id: 9999, .. }),
        "{err}"
    );
    println!("{err}");

    // A rank above the adapter's r_max, or one rank for a batch of two.
    let err = model
        .forward(
            &PaddedBatch::left_pad(&[vec![1, 2]], 0),
            &SampleRanks::new(vec![0, 0]),
        )
        .unwrap_err();
    assert!(matches!(err, LlamaError::Flexi(_)), "{err}");
    let dir = fixture("tiny_tied");
    let lora = load_llama_with_peft::<B>(&dir, dir.join("adapter"), &Default::default()).unwrap();
    let err = generate(
        &lora,
        &[vec![1, 2]],
        &SampleRanks::new(vec![5]),
        &GenerationConfig::greedy(2, vec![]),
    )
    .unwrap_err();
    assert!(matches!(err, LlamaError::Flexi(_)), "{err}");
    println!("{err}");
    let err = lora
        .forward(
            &PaddedBatch::left_pad(&[vec![1, 2]], 0),
            &SampleRanks::new(vec![5]),
        )
        .unwrap_err();
    assert!(matches!(err, LlamaError::Flexi(_)), "{err}");
}

#[test]
fn a_whisper_checkpoint_is_not_a_llama() {
    // A Whisper directory given where a Llama is expected: refused by its model_type, not
    // reported as a missing Llama field.
    let dir = fixture("whisper_tiny");
    let err = load(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, LlamaError::ConfigField { field, .. } if field == "model_type"),
        "{msg}"
    );
    assert!(
        msg.contains(&dir.join("config.json").display().to_string())
            && msg.contains(
                "field `model_type`: is \"whisper\", expected \"llama\" (this is not a Llama checkpoint)"
            ),
        "{msg}"
    );
}

/// A copy of tiny_tied's `tokenizer.json` with `extra` more tokens (ids 300..300 + extra),
/// as the tokenizer of a model with a larger vocabulary would have.
fn tokenizer_with_extra_tokens(dir: &Path, extra: usize) {
    let src = fixture("tiny_tied").join("tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    let vocab = v["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len();
    for i in 0..extra {
        vocab.insert(format!("extra{i}"), (n + i).into());
    }
    std::fs::write(dir.join("tokenizer.json"), v.to_string()).unwrap();
}

#[test]
fn a_tokenizer_of_another_model_is_refused() {
    let (_tmp, dir) = copy_fixture();
    let vocab_size = LlamaConfig::from_dir(&dir).unwrap().vocab_size;
    let own = models::llama::Tokenizer::from_dir(&dir).unwrap();
    own.check_vocab(vocab_size).unwrap();
    tokenizer_with_extra_tokens(&dir, 100);
    let tok = models::llama::Tokenizer::from_dir(&dir).unwrap();
    let err = tok.check_vocab(vocab_size).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LlamaError::Tokenizer { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "tokenizer {}: has token ids up to 399, but the model's vocab_size is 320: it is the \
             tokenizer of another model",
            dir.join("tokenizer.json").display()
        )
    );
}
