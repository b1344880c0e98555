//! Per-layer recomputation for Whisper (`Seq2Seq::recompute_layers`, `train
//! --checkpoint-activations layers` on a Whisper model): the gradients of a batch are those of
//! one ordinary backward pass through encoder and decoder (adapters at mixed per-sample ranks,
//! every weight of full fine-tuning, convolutions and both embeddings included), the trainer
//! trains the same weights with it over two shards, and with adapter dropout every recomputed
//! layer draws the masks its first forward drew.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use flexi_burn::SampleRanks;
use flexi_burn::schedule::mix;
use models::llama::causal_lm_loss;
use models::whisper::attention::{DecoderCache, causal_mask};
use models::whisper::{Whisper, WhisperTokenizer};
use train::asr::{AsrBatch, Seq2Seq, load_whisper_for_training, transcribe_prompt};
use train::lm::IGNORE_INDEX;
use train::params::trainable_tensors;
use train::{Method, Objective, TrainConfig, Trainer};

mod common;
use common::{by_path, compare};

type B = Autodiff<Flex>;

/// The backend's RNG is global to the process: the dropout test must not share it with a
/// test running beside it, so the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/whisper_tiny")
}

fn config(method: Method, steps: usize) -> TrainConfig {
    TrainConfig {
        method,
        lr: 1e-2,
        warmup_steps: 1,
        max_steps: steps,
        batch_size: 4,
        save_every: 0,
        seed: 11,
        adapter: train::config::AdapterSettings {
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Four utterances (the fixture's two recordings, two transcripts each) in one batch.
fn batch(cfg: &TrainConfig) -> AsrBatch {
    let model = load_whisper_for_training::<B>(&fixture(), cfg, &Default::default()).unwrap();
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
    let mut b = AsrBatch::from_files(&items, &tok, &prompt, model.config.num_mel_bins).unwrap();
    b.routed = Some(vec![1, 4, 4, 1]);
    b
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-recompute-asr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn trainer(cfg: &TrainConfig, out: PathBuf, shards: usize, recompute: bool) -> Trainer<'_, B> {
    Trainer {
        config: cfg,
        out,
        device: Default::default(),
        progress: false,
        stop_at: None,
        save_checkpoints: false,
        shards,
        parallel: None,
        recompute_layers: recompute,
    }
}

/// A model of `cfg`'s method whose adapters have trained two steps (LoRA's `B = 0` start
/// would give the `A` factors no gradient to compare).
fn warmed(cfg: &TrainConfig, data: &AsrBatch, name: &str) -> Whisper<B> {
    let model = load_whisper_for_training::<B>(&fixture(), cfg, &Default::default()).unwrap();
    if cfg.method == Method::Full {
        return model;
    }
    let warm = TrainConfig {
        max_steps: 2,
        ..cfg.clone()
    };
    let (model, _) = trainer(&warm, tmp(name), 1, false)
        .fit(&Seq2Seq, model, std::slice::from_ref(data), false)
        .unwrap();
    model
}

#[test]
fn recomputed_gradients_equal_one_backward_pass() {
    let _turn = serial();
    let cases = [
        Method::Lora { rank: 4 },
        Method::Flexi {
            class_ranks: "(1,4)".into(),
        },
        Method::Full,
    ];
    for method in cases {
        let label = method.label();
        let cfg = config(method, 2);
        let data = batch(&cfg);
        let model = warmed(&cfg, &data, &label.replace(['(', ')', ','], "_"));
        let ranks = match cfg.method {
            Method::Flexi { .. } => SampleRanks::new(vec![1, 4, 4, 1]),
            Method::Full => SampleRanks::uniform(4, 0),
            _ => SampleRanks::uniform(4, 4),
        };
        let loss = Seq2Seq.loss(&model, &data, &ranks).unwrap();
        let plain_value: f64 = loss.clone().into_scalar().into();
        let plain = GradientsParams::from_grads(loss.mul_scalar(3.0).backward(), &model);
        let (value, recomputed) = Seq2Seq
            .recompute_layers(&model, &data, &ranks, &|l| l.mul_scalar(3.0), None)
            .unwrap();
        let (plain, recomputed) = (by_path(&model, &plain), by_path(&model, &recomputed));
        // Every trainable parameter has its gradient (full fine-tuning: all of them, the
        // convolutions, positions and the tied token table included).
        let trainable = trainable_tensors(&model).len();
        assert_eq!(plain.len(), trainable, "{label}");
        for part in ["encoder.layers.0.", "decoder.layers.1.encoder_attn"] {
            assert!(
                recomputed.keys().any(|k| k.starts_with(part)),
                "{label}: {part} has gradients"
            );
        }
        if cfg.method == Method::Full {
            for k in [
                "encoder.conv1.weight",
                "encoder.embed_positions",
                "decoder.embed_tokens.weight",
            ] {
                assert!(recomputed.contains_key(k), "{label}: {k}");
            }
        }
        let (diff, scale) = compare(&plain, &recomputed);
        assert!(
            scale > 1e-3,
            "{label}: gradients to compare (max {scale:e})"
        );
        assert!(
            diff <= 1e-6 * scale.max(1.0),
            "{label}: max |diff| {diff:e} (max |g| {scale:e})"
        );
        assert_eq!(value, plain_value, "{label}: the same loss");
        eprintln!("{label}: {trainable} tensors, max |diff| {diff:e}, max |g| {scale:e}");
    }
}

#[test]
fn the_trainer_trains_the_same_weights_with_recomputation() {
    let _turn = serial();
    for method in [Method::Lora { rank: 4 }, Method::Full] {
        let label = method.label();
        let cfg = config(method, 3);
        let data = vec![batch(&cfg)];
        let trained = |recompute: bool| {
            let model =
                load_whisper_for_training::<B>(&fixture(), &cfg, &Default::default()).unwrap();
            let out = tmp(&format!("{label}-{recompute}"));
            let (model, summary) = trainer(&cfg, out, 2, recompute)
                .fit(&Seq2Seq, model, &data, false)
                .unwrap();
            (trainable_tensors(&model), summary.losses)
        };
        let (plain, plain_losses) = trained(false);
        let (recomputed, losses) = trained(true);
        let mut worst = 0f32;
        let mut worst_at = String::new();
        for (k, t) in &plain {
            for (i, (a, b)) in t.values.iter().zip(&recomputed[k].values).enumerate() {
                if (a - b).abs() > worst {
                    worst = (a - b).abs();
                    worst_at = format!("{k}[{i}]: {a} vs {b}");
                }
            }
        }
        let (mut over, mut total) = (0usize, 0usize);
        for (k, t) in &plain {
            for (a, b) in t.values.iter().zip(&recomputed[k].values) {
                total += 1;
                over += usize::from((a - b).abs() > 1e-6);
            }
        }
        eprintln!("{label}: max |diff| {worst:e} ({worst_at}); {over} of {total} over 1e-6");
        // The encoder output's gradient is summed over the decoder layers in another order
        // than one backward pass sums it (gradients within 6e-8, the test above). AdamW then
        // normalises every component's update (`m / (sqrt(v) + eps)`, about `lr` in size
        // whatever the gradient's): a component whose gradient is near zero, where that
        // rounding is a large part of it, moves by a visibly different amount. Full
        // fine-tuning has a few such components among ~400k (29 measured here, at most
        // 1.2e-5, about a thousandth of one step's `lr`); the adapters none (max 8.3e-7).
        assert!(
            over * 10_000 <= total,
            "{label}: {over} of {total} over 1e-6"
        );
        assert!(worst <= 1e-4, "{label}: max |diff| {worst:e} ({worst_at})");
        assert_eq!(plain_losses.len(), 3);
        for (a, b) in plain_losses.iter().zip(&losses) {
            assert!((a - b).abs() <= 1e-6 * a.abs(), "{label}: loss {a} vs {b}");
        }
    }
}

/// The gradients of one ordinary backward pass through the layers run one by one, the
/// backend seeded from `seed` and the layer's index (encoder layers first, then the decoder's)
/// before each layer: what per-layer recomputation with `reseed = seed` must reproduce.
fn seeded_plain_grads(
    model: &Whisper<B>,
    data: &AsrBatch,
    ranks: &SampleRanks,
    seed: u64,
) -> GradientsParams {
    let device = Default::default();
    let n_enc = model.encoder.layers.len();
    let mel = model.mel_batch(&data.mels, &device).unwrap();
    let ids = model.ids_tensor(&data.ids, &device).unwrap();
    let [b, n] = ids.dims();
    let (mut xs, parts) = model.encoder.stem_parts(mel).unwrap();
    for (l, layer) in model.encoder.layers.iter().enumerate() {
        B::seed(&device, mix(seed, l as u64));
        xs = layer.forward_parts(xs, &parts, ranks);
    }
    let enc = model.encoder.norm_parts(xs, &parts);
    let mut x = model.decoder.embed(ids, 0).unwrap();
    let mask = causal_mask::<B>(0, n, &device);
    for (l, layer) in model.decoder.layers.iter().enumerate() {
        B::seed(&device, mix(seed, (n_enc + l) as u64));
        let mut cache = DecoderCache::<B>::new(1);
        x = layer.forward(x, &enc, &mut cache.layers[0], mask.clone(), ranks);
    }
    let labels =
        Tensor::<B, 2, Int>::from_data(TensorData::new(data.labels.clone(), [b, n]), &device);
    let loss = causal_lm_loss(model.decoder.head(x), labels, IGNORE_INDEX);
    GradientsParams::from_grads(loss.backward(), model)
}

#[test]
fn recomputed_layers_draw_the_same_dropout_masks() {
    let _turn = serial();
    let mut cfg = config(Method::Lora { rank: 4 }, 2);
    cfg.adapter.dropout = 0.3;
    let data = batch(&cfg);
    let model = warmed(&cfg, &data, "dropout");
    let ranks = SampleRanks::uniform(4, 4);
    let expected = by_path(&model, &seeded_plain_grads(&model, &data, &ranks, 5));
    let (_, grads) = Seq2Seq
        .recompute_layers(&model, &data, &ranks, &|l| l, Some(5))
        .unwrap();
    let (diff, scale) = compare(&expected, &by_path(&model, &grads));
    assert!(scale > 1e-3, "gradients to compare (max {scale:e})");
    assert!(diff <= 1e-6, "max |diff| {diff:e} (max |g| {scale:e})");
    // The masks matter: another seed gives other gradients.
    let other = by_path(&model, &seeded_plain_grads(&model, &data, &ranks, 6));
    let (diff, _) = compare(&expected, &other);
    assert!(diff > 1e-4, "dropout changed nothing ({diff:e})");
}
