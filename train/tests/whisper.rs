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
            parallel: None,
            recompute_layers: false,
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

#[test]
fn flexi_ranks_of_a_mixed_batch_reach_every_adapted_projection() {
    use burn::module::AutodiffModule;
    use flexi_burn::Adapters;
    use models::whisper::WhisperAdapter;
    // Flexi (1,4) on every target: encoder self-attention and MLP, decoder self- and
    // cross-attention and MLP. Four utterances at ranks [1, 4, 4, 1]. With labels on the
    // rank-1 utterances only, column 0 of every B learns and no column beyond it; with labels
    // on the rank-4 utterances only, columns 0..4 learn everywhere.
    let cfg = TrainConfig {
        method: Method::Flexi {
            class_ranks: "(1,4)".into(),
        },
        adapter: train::config::AdapterSettings {
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
        ..Default::default()
    };
    let device = Default::default();
    let model = load_whisper_for_training::<B>(&fixture(), &cfg, &device).unwrap();
    let tok = WhisperTokenizer::from_dir(fixture()).unwrap();
    let prompt = transcribe_prompt(&model.config, &tok).unwrap();
    let (wav, flac) = (
        fixture().join("audio_1s.wav"),
        fixture().join("audio_1s.flac"),
    );
    let items: Vec<(String, &Path, String)> = [
        (&wav, "hello there"),
        (&flac, "good morning"),
        (&wav, "a short sound"),
        (&flac, "hello"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (p, t))| (i.to_string(), p.as_path(), t.to_string()))
    .collect();
    let batch = AsrBatch::from_files(&items, &tok, &prompt, model.config.num_mel_bins).unwrap();
    let n = batch.ids[0].len();
    let ranks = SampleRanks::new(vec![1, 4, 4, 1]);
    let paths: Vec<String> = model.adapters().into_iter().map(|(p, _)| p).collect();
    for part in [
        "encoder.layers.",
        "decoder.layers.",
        "self_attn",
        "encoder_attn",
        "fc1",
    ] {
        assert!(
            paths.iter().any(|p| p.contains(part)),
            "{part} is adapted: {paths:?}"
        );
    }
    for (keep, want_cols) in [(vec![0usize, 3], 1usize), (vec![1, 2], 4)] {
        let mut b = batch.clone();
        for i in 0..4 {
            if !keep.contains(&i) {
                b.labels[i * n..(i + 1) * n].fill(-100);
            }
        }
        let grads = Seq2Seq.loss(&model, &b, &ranks).unwrap().backward();
        for (path, f) in model.adapters() {
            let g = f
                .lora_b
                .grad(&grads)
                .unwrap_or_else(|| panic!("{path}: no gradient"))
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let r_max = f.r_max();
            for col in 0..r_max {
                let learns = (0..f.d_output()).any(|o| g[o * r_max + col] != 0.0);
                assert_eq!(
                    learns,
                    col < want_cols,
                    "{path} column {col} (utterances {keep:?})"
                );
            }
        }
    }

    // Rank 0 in a mixed batch is the base model exactly, whatever the adapter holds.
    let mut adapted = model.valid();
    for (_, f) in adapted.adapters_mut() {
        let [d_out, r] = f.lora_b.dims();
        let values: Vec<f32> = (0..d_out * r)
            .map(|i| 0.05 * ((i % 7) as f32 - 3.0))
            .collect();
        f.lora_b = burn::module::Param::from_tensor(burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(values, [d_out, r]),
            &device,
        ));
    }
    let base = models::ct2::load_whisper_any::<Flex>(&fixture(), &WhisperAdapter::none(), &device)
        .unwrap();
    let logits = |m: &models::whisper::Whisper<Flex>, ranks: Vec<usize>| {
        let mel = m.mel_batch(&batch.mels, &device).unwrap();
        let ids = m.ids_tensor(&batch.ids, &device).unwrap();
        m.forward(mel, ids, &SampleRanks::new(ranks))
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let want = logits(&base, vec![0; 4]);
    let mixed = logits(&adapted, vec![0, 4, 1, 0]);
    let per = want.len() / 4;
    for i in [0, 3] {
        assert_eq!(
            mixed[i * per..(i + 1) * per],
            want[i * per..(i + 1) * per],
            "utterance {i} at rank 0"
        );
    }
    for i in [1, 2] {
        assert_ne!(mixed[i * per..(i + 1) * per], want[i * per..(i + 1) * per]);
    }
}
