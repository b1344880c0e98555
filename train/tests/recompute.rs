//! Per-layer recomputation (`Trainer::recompute_layers`, `train --checkpoint-activations
//! layers`): the gradients of a batch are those of one ordinary backward pass, for every
//! parameter kind (adapters at mixed per-sample ranks, every weight of full fine-tuning with a
//! tied or untied head), the trainer trains the same weights with it (sharded, AdaLoRA's
//! penalty), and with adapter dropout a recomputed layer draws the masks its first forward
//! drew.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use datasets::batch::{PadSide, collate};
use datasets::prompt::Prompted;
use datasets::tokenize::{EncodeOptions, HfTokenizer, TextTokenizer, encode_pair};
use flexi_burn::SampleRanks;
use flexi_burn::schedule::mix;
use models::llama::{Llama, causal_lm_loss_from_hidden};
use train::adalora::AdaLoraConfig;
use train::lm::{CausalLm, IGNORE_INDEX, LmBatch, load_for_training};
use train::params::trainable_tensors;
use train::trainer::Objective;
use train::{Method, TrainConfig, Trainer};

mod common;
use common::{by_path, compare};

type B = Autodiff<Flex>;

/// The backend's RNG is global to the process: the dropout test must not share it with a
/// test running beside it, so the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/tests/fixtures/{name}"))
}

/// 8 tiny "a plus b" questions with their answers, in 2 left-padded batches of 4.
fn batches(fixture_dir: &Path) -> Vec<LmBatch> {
    let tok = HfTokenizer::from_file(fixture_dir.join("tokenizer.json")).unwrap();
    let encoded: Vec<_> = (0..8)
        .map(|i| {
            let (a, b) = (i % 5, (i * 3) % 7);
            let item = Prompted {
                id: format!("q{i}"),
                prompt: format!("what is {a} plus {b}? think first. "),
                target: format!("{} because {a} and {b}", a + b),
            };
            encode_pair(&tok, &item, &EncodeOptions::default()).unwrap()
        })
        .collect();
    encoded
        .chunks(4)
        .map(|chunk| {
            let refs: Vec<_> = chunk.iter().collect();
            let mut b = LmBatch::from_collated(&collate(&refs, tok.pad_id(), PadSide::Left));
            b.routed = Some(vec![1, 4, 4, 1]);
            b
        })
        .collect()
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
        ..Default::default()
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-recompute-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn trainer<'a>(
    cfg: &'a TrainConfig,
    out: PathBuf,
    shards: usize,
    recompute: bool,
) -> Trainer<'a, B> {
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
fn warmed(fixture_dir: &Path, cfg: &TrainConfig, data: &[LmBatch], name: &str) -> Llama<B> {
    let model = load_for_training::<B>(fixture_dir, cfg, &Default::default()).unwrap();
    if cfg.method == Method::Full {
        return model;
    }
    let warm = TrainConfig {
        max_steps: 2,
        ..cfg.clone()
    };
    let (model, _) = trainer(&warm, tmp(name), 1, false)
        .fit(&CausalLm, model, data, false)
        .unwrap();
    model
}

#[test]
fn recomputed_gradients_equal_one_backward_pass() {
    let _turn = serial();
    let cases = [
        ("tiny_tied", Method::Lora { rank: 4 }),
        (
            "tiny_tied",
            Method::Flexi {
                class_ranks: "(1,4)".into(),
            },
        ),
        ("tiny_tied", Method::Full),
        ("tiny_untied", Method::Full),
    ];
    for (fx, method) in cases {
        let dir = fixture(fx);
        let label = format!("{fx} {}", method.label());
        let cfg = config(method, 2);
        let data = batches(&dir);
        let model = warmed(&dir, &cfg, &data, &label.replace([' ', '(', ')', ','], "_"));
        let batch = &data[1];
        let ranks = match cfg.method {
            Method::Flexi { .. } => SampleRanks::new(vec![1, 4, 4, 1]),
            _ => SampleRanks::uniform(4, 4),
        };
        let loss = CausalLm.loss(&model, batch, &ranks).unwrap();
        let plain_value: f64 = loss.clone().into_scalar().into();
        let plain = GradientsParams::from_grads(loss.mul_scalar(3.0).backward(), &model);
        let (value, recomputed) = CausalLm
            .recompute_layers(&model, batch, &ranks, &|l| l.mul_scalar(3.0), None)
            .unwrap();
        let (plain, recomputed) = (by_path(&model, &plain), by_path(&model, &recomputed));
        // Every trainable parameter has its gradient (full fine-tuning: all of them, the
        // tied embedding's from both the head and the embedding).
        let trainable = trainable_tensors(&model).len();
        assert_eq!(plain.len(), trainable, "{label}");
        let (diff, scale) = compare(&plain, &recomputed);
        assert!(
            scale > 1e-3,
            "{label}: gradients to compare (max {scale:e})"
        );
        assert!(
            diff <= 1e-6,
            "{label}: max |diff| {diff:e} (max |g| {scale:e})"
        );
        assert_eq!(value, plain_value, "{label}: the same loss");
        eprintln!("{label}: {trainable} tensors, max |diff| {diff:e}, max |g| {scale:e}");
    }
}

#[test]
fn the_trainer_trains_the_same_weights_with_recomputation() {
    let _turn = serial();
    // Two shards (each recomputes its own layers), AdaLoRA's penalty added by its own backward
    // pass, full fine-tuning through the tied embedding.
    let methods = [
        Method::Lora { rank: 4 },
        Method::Adalora(AdaLoraConfig {
            init_r: 6,
            target_r: 3,
            tinit: 1,
            tfinal: 1,
            ..Default::default()
        }),
        Method::Full,
    ];
    let dir = fixture("tiny_tied");
    let data = batches(&dir);
    for method in methods {
        let label = method.label().replace(['(', ')', ','], "_");
        let cfg = config(method, 3);
        let trained = |recompute: bool| {
            let model = load_for_training::<B>(&dir, &cfg, &Default::default()).unwrap();
            let out = tmp(&format!("{label}-{recompute}"));
            let (model, summary) = trainer(&cfg, out, 2, recompute)
                .fit(&CausalLm, model, &data, false)
                .unwrap();
            (trainable_tensors(&model), summary.losses)
        };
        let (plain, plain_losses) = trained(false);
        let (recomputed, losses) = trained(true);
        let mut worst = 0f32;
        for (k, t) in &plain {
            for (a, b) in t.values.iter().zip(&recomputed[k].values) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst <= 1e-6, "{label}: max |diff| {worst:e}");
        for (a, b) in plain_losses.iter().zip(&losses) {
            assert!((a - b).abs() <= 1e-6 * a.abs(), "{label}: loss {a} vs {b}");
        }
    }
}

/// The gradients of one ordinary backward pass through the layers run one by one, the
/// backend seeded from `seed` and the layer index before each layer: what per-layer
/// recomputation with `reseed = seed` must reproduce.
fn seeded_plain_grads(
    model: &Llama<B>,
    batch: &LmBatch,
    ranks: &SampleRanks,
    seed: u64,
) -> GradientsParams {
    let device = Default::default();
    let ctx = model.layer_context(&batch.batch, ranks).unwrap();
    let mut x = model.layer_input(&ctx);
    for (l, layer) in model.layers.iter().enumerate() {
        B::seed(&device, mix(seed, l as u64));
        x = layer.forward_in(x, &ctx, ranks);
    }
    let loss =
        causal_lm_loss_from_hidden(model, model.norm.forward(x), &batch.labels, IGNORE_INDEX)
            .unwrap();
    GradientsParams::from_grads(loss.backward(), model)
}

#[test]
fn recomputed_layers_draw_the_same_dropout_masks() {
    let _turn = serial();
    let dir = fixture("tiny_tied");
    let mut cfg = config(Method::Lora { rank: 4 }, 2);
    cfg.adapter.dropout = 0.3;
    let data = batches(&dir);
    let model = warmed(&dir, &cfg, &data, "dropout");
    let (batch, ranks) = (&data[0], SampleRanks::uniform(4, 4));
    let expected = by_path(&model, &seeded_plain_grads(&model, batch, &ranks, 5));
    let (_, grads) = CausalLm
        .recompute_layers(&model, batch, &ranks, &|l| l, Some(5))
        .unwrap();
    let (diff, scale) = compare(&expected, &by_path(&model, &grads));
    assert!(scale > 1e-3, "gradients to compare (max {scale:e})");
    assert!(diff <= 1e-6, "max |diff| {diff:e} (max |g| {scale:e})");
    // The masks matter: another seed gives other gradients.
    let other = by_path(&model, &seeded_plain_grads(&model, batch, &ranks, 6));
    let (diff, _) = compare(&expected, &other);
    assert!(diff > 1e-4, "dropout changed nothing ({diff:e})");
}
