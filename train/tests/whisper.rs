//! Whisper fine-tuning on the tiny fixture: the seq2seq loss on transcript tokens falls for
//! LoRA, DyLoRA and Flexi-LoRA ranks, and a rank-0 sample leaves the base model's loss.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use flexi_burn::SampleRanks;
use models::whisper::WhisperTokenizer;
use train::asr::{AsrBatch, Seq2Seq, load_whisper_for_training, transcribe_prompt};
use train::{Method, Objective, TrainConfig, Trainer};

type B = Autodiff<Flex>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/whisper_tiny")
}

fn batches(cfg: &TrainConfig, routed: Option<Vec<usize>>) -> Vec<AsrBatch> {
    let device = Default::default();
    let model = load_whisper_for_training::<B>(&fixture(), cfg, &device).unwrap();
    let tok = WhisperTokenizer::from_dir(fixture()).unwrap();
    let prompt = transcribe_prompt(&model.config, &tok).unwrap();
    let wav = fixture().join("audio_1s.wav");
    let flac = fixture().join("audio_1s.flac");
    let items = vec![
        ("a".to_string(), wav.as_path(), "hello there".to_string()),
        ("b".to_string(), flac.as_path(), "good morning".to_string()),
    ];
    let mut b = AsrBatch::from_files(&items, &tok, &prompt, model.config.num_mel_bins).unwrap();
    b.routed = routed;
    vec![b]
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-asr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn whisper_methods_lower_the_transcript_loss() {
    for (name, method, routed) in [
        ("lora", Method::Lora { rank: 4 }, None),
        (
            "flexi",
            Method::Flexi {
                class_ranks: "(1,4)".into(),
            },
            Some(vec![1, 4]),
        ),
    ] {
        let cfg = TrainConfig {
            method,
            lr: 1e-2,
            warmup_steps: 1,
            max_steps: 6,
            batch_size: 2,
            save_every: 0,
            adapter: train::config::AdapterSettings {
                targets: ["q_proj", "v_proj", "fc1", "fc2"]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            },
            ..Default::default()
        };
        let data = batches(&cfg, routed);
        let device = Default::default();
        let model = load_whisper_for_training::<B>(&fixture(), &cfg, &device).unwrap();
        let trainer = Trainer::<B> {
            config: &cfg,
            out: tmp(name),
            device,
            progress: false,
            stop_at: None,
            save_checkpoints: true,
            shards: 1,
        };
        let (_, s) = trainer.fit(&Seq2Seq, model, &data, false).unwrap();
        let (first, last) = (s.losses[0], *s.losses.last().unwrap());
        assert!(
            last < 0.7 * first,
            "{name}: loss {first:.4} -> {last:.4} ({:?})",
            s.losses
        );
    }
}

#[test]
fn rank_zero_is_the_base_model() {
    let cfg = TrainConfig {
        method: Method::Lora { rank: 4 },
        ..Default::default()
    };
    let device = Default::default();
    let mut model = load_whisper_for_training::<B>(&fixture(), &cfg, &device).unwrap();
    // Make the adapter non-trivial: B != 0 in every adapted layer.
    let base_loss = |m: &models::whisper::Whisper<B>, r: usize| {
        let b = batches(&cfg, None).remove(0);
        Seq2Seq
            .loss(m, &b, &SampleRanks::uniform(2, r))
            .unwrap()
            .into_scalar()
    };
    let before = base_loss(&model, 0);
    let tensors = train::params::trainable_tensors(&model);
    let bumped: std::collections::BTreeMap<_, _> = tensors
        .into_iter()
        .map(|(k, mut t)| {
            if k.ends_with("lora_b") {
                t.values
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = 0.05 * ((i % 7) as f32 - 3.0));
            }
            (k, t)
        })
        .collect();
    model = train::params::load_tensors(model, &bumped, Path::new("test")).unwrap();
    assert_eq!(base_loss(&model, 0), before, "rank 0 ignores the adapter");
    assert_ne!(base_loss(&model, 4), before, "rank 4 uses it");
}
