//! Mixed precision (`precision = "bf16" | "f16"`): the frozen weights of the tiny Llama and the
//! tiny Whisper stored in a half type, the adapters, their gradients and AdamW in f32; under
//! full fine-tuning the half-stored matrices train on f32 masters (`train::optim`).
//!
//! The bounds. Storing a weight in a half type with unit roundoff `u` (bf16 `2^-8`, f16
//! `2^-11`) perturbs it by at most `u` relative, and each matmul against it rounds its input
//! (cast down) and its output (the half product) once more: every half matmul contributes at
//! most `3u` relative error to its output, and to the gradient that flows back through it.
//! Errors of a chain add to first order, so a gradient that has passed through `D` half
//! matmuls (forward and backward) is within `3 u D` of the f32 one, relative to the gradient's
//! scale (its largest magnitude). The tiny Llama has 2 layers; a gradient of a q_proj adapter
//! sees the LM head, per layer q/k/v -> o and gate/up -> down (4 in sequence), and the same
//! again backwards: D <= 2 (4 * 2 + 1) = 18; for Whisper (2 + 2 layers, 4 and 6 in sequence
//! with cross-attention) D <= 2 (2 * 4 + 2 * 6 + 1) = 42. Softmax and the norms run in f32 and
//! are not counted (they can amplify, which the measured margins below show they do not here).

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use datasets::batch::{PadSide, collate};
use datasets::prompt::Prompted;
use datasets::tokenize::{EncodeOptions, HfTokenizer, TextTokenizer, encode_pair};
use flexi_burn::{Precision, SampleRanks};
use infer::weights::HostTensor;
use train::lm::{CausalLm, LmBatch, load_for_training};
use train::{Method, Objective, TrainConfig, Trainer};

type B = Autodiff<Flex>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny_tied")
}

/// 12 "a plus b" questions in 3 batches of 4 (as `methods.rs`).
fn batches() -> Vec<LmBatch> {
    let tok = HfTokenizer::from_file(fixture().join("tokenizer.json")).unwrap();
    let encoded: Vec<_> = (0..12)
        .map(|i| {
            let (a, b) = (i % 5, (i * 3) % 7);
            let item = Prompted {
                id: format!("q{i}"),
                prompt: format!("what is {a} plus {b}? "),
                target: format!("{}", a + b),
            };
            encode_pair(
                &tok,
                &item,
                &EncodeOptions {
                    max_len: 48,
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    encoded
        .chunks(4)
        .map(|chunk| {
            let refs: Vec<_> = chunk.iter().collect();
            LmBatch::from_collated(&collate(&refs, tok.pad_id(), PadSide::Left))
        })
        .collect()
}

fn config(precision: Precision, steps: usize) -> TrainConfig {
    TrainConfig {
        method: Method::Lora { rank: 4 },
        lr: 1e-2,
        warmup_steps: 2,
        max_steps: steps,
        batch_size: 4,
        save_every: 0,
        seed: 7,
        precision,
        ..Default::default()
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-mixed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every float parameter of a module: `(path, type, trains, values as f32)`.
type ParamInfo = (String, DType, bool, Vec<f32>);

struct Params(Vec<ParamInfo>, Vec<String>);

impl<Bk: burn::tensor::backend::Backend> ModuleVisitor<Bk> for Params {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.1.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.1.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        let t = p.val();
        let dtype = t.dtype();
        let values = t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
        self.0
            .push((self.1.join("."), dtype, p.is_require_grad(), values));
    }
}

fn params<Bk: burn::tensor::backend::Backend, M: Module<Bk>>(m: &M) -> Vec<ParamInfo> {
    let mut v = Params(Vec::new(), Vec::new());
    m.visit(&mut v);
    v.0
}

/// The float types of a model's parameters, by module path: `(path, type, trains)`.
fn types<Bk: burn::tensor::backend::Backend, M: Module<Bk>>(m: &M) -> Vec<(String, DType, bool)> {
    params(m)
        .into_iter()
        .map(|(k, dtype, trains, _)| (k, dtype, trains))
        .collect()
}

/// Gradients of the trainable parameters, by module path, as f32 on the host.
struct Grads<'a>(
    &'a burn::optim::GradientsParams,
    Vec<(String, HostTensor)>,
    Vec<String>,
);

impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Grads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.2.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.2.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        if let Some(g) = self.0.get::<Bk::InnerBackend, D>(p.id) {
            self.1.push((self.2.join("."), HostTensor::of(g)));
        }
    }
}

/// `(max |a - b|, max |a|)` over every tensor of two gradient lists.
fn compare(a: &[(String, HostTensor)], b: &[(String, HostTensor)]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut diff, mut scale) = (0f64, 0f64);
    for ((ka, ta), (kb, tb)) in a.iter().zip(b) {
        assert_eq!(ka, kb);
        for (x, y) in ta.values.iter().zip(&tb.values) {
            assert!(y.is_finite(), "{kb}: {y}");
            diff = diff.max((x - y).abs() as f64);
            scale = scale.max(x.abs() as f64);
        }
    }
    (diff, scale)
}

/// Adapter gradients of one batch at `precision`, with the adapter's `B` factors set to a
/// fixed nonzero value (PEFT's B = 0 start would give A no gradient to compare).
fn llama_grads(precision: Precision) -> Vec<(String, HostTensor)> {
    let cfg = config(precision, 1);
    let model = load_for_training::<B>(&fixture(), &cfg, &Default::default()).unwrap();
    let model = nonzero_b(model);
    let batch = &batches()[0];
    let loss = CausalLm
        .loss(&model, batch, &SampleRanks::uniform(4, 4))
        .unwrap();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
    let mut g = Grads(&grads, Vec::new(), Vec::new());
    model.visit(&mut g);
    g.1
}

fn nonzero_b<M: flexi_burn::Adapters<B>>(mut model: M) -> M {
    for (i, (_, layer)) in model.adapters_mut().into_iter().enumerate() {
        let b = layer.lora_b.val();
        let [o, r] = b.dims();
        let values: Vec<f32> = (0..o * r)
            .map(|k| (((k * 7 + i * 13) % 17) as f32 - 8.0) * 0.01)
            .collect();
        layer.lora_b = train::params::replace_values(layer.lora_b.clone(), |old| {
            Tensor::from_data(burn::tensor::TensorData::new(values, [o, r]), &old.device())
        });
    }
    model
}

#[test]
fn frozen_weights_are_stored_in_the_half_type_and_the_adapter_in_f32() {
    for (precision, half) in [(Precision::Bf16, DType::BF16), (Precision::F16, DType::F16)] {
        let cfg = config(precision, 1);
        let model = load_for_training::<B>(&fixture(), &cfg, &Default::default()).unwrap();
        let t = types(&model);
        let frozen: Vec<_> = t
            .iter()
            .filter(|(k, _, _)| k.contains("weight") && !k.contains("norm"))
            .collect();
        assert!(!frozen.is_empty());
        for (k, dtype, trains) in &t {
            if *trains || k.contains("norm") {
                assert_eq!(*dtype, DType::F32, "{precision}: {k}");
            } else {
                assert_eq!(*dtype, half, "{precision}: {k}");
            }
        }
        assert!(
            t.iter()
                .any(|(k, d, tr)| k.contains("lora_a") && *tr && *d == DType::F32)
        );
    }
    // Full fine-tuning: the same matrices in the half type, now trainable (AdamW keeps their
    // f32 masters); the norms f32 and trainable.
    for (precision, half) in [(Precision::Bf16, DType::BF16), (Precision::F16, DType::F16)] {
        let cfg = full(precision, 1);
        let model = load_for_training::<B>(&fixture(), &cfg, &Default::default()).unwrap();
        let t = types(&model);
        assert!(t.iter().all(|(_, _, trains)| *trains));
        for (k, dtype, _) in &t {
            let want = if k.contains("norm") { DType::F32 } else { half };
            assert_eq!(*dtype, want, "full fine-tuning {precision}: {k}");
        }
    }
}

/// [`config`] for full fine-tuning (a smaller peak rate: every weight moves).
fn full(precision: Precision, steps: usize) -> TrainConfig {
    TrainConfig {
        method: Method::Full,
        lr: 2e-3,
        ..config(precision, steps)
    }
}

#[test]
fn half_precision_gradients_agree_with_f32_within_the_roundoff_bound() {
    let reference = llama_grads(Precision::F32);
    for precision in [Precision::Bf16, Precision::F16] {
        let got = llama_grads(precision);
        let (diff, scale) = compare(&reference, &got);
        let bound = 3.0 * precision.unit_roundoff() * 18.0 * scale;
        println!(
            "tiny Llama {precision}: max |grad diff| {diff:.3e}, max |grad| {scale:.3e}, \
             {:.2} % of the bound {bound:.3e}",
            100.0 * diff / bound
        );
        assert!(
            diff > 0.0,
            "{precision}: nothing was computed in the half type"
        );
        assert!(diff <= bound, "{precision}: {diff:e} > {bound:e}");
    }
}

/// 20 steps of `make(precision)` at f32, bf16 and f16: the half-precision loss curves within
/// `bound(u)` of the f32 one (relative, per step).
fn follow_the_f32_curve(
    what: &str,
    make: fn(Precision, usize) -> TrainConfig,
    bound: fn(f64) -> f64,
) {
    let data = batches();
    let run = |precision: Precision| {
        let cfg = make(precision, 20);
        let trainer = Trainer::<B> {
            config: &cfg,
            out: tmp(&format!("curve-{what}-{precision}")),
            device: Default::default(),
            progress: false,
            stop_at: None,
            save_checkpoints: false,
            shards: 1,
            parallel: None,
            recompute_layers: false,
        };
        let model = load_for_training::<B>(&fixture(), &cfg, &Default::default()).unwrap();
        let (_, summary) = trainer.fit(&CausalLm, model, &data, false).unwrap();
        let logs = std::fs::read_to_string(trainer.out.join("metrics.jsonl")).unwrap_or_default();
        let skipped: Vec<usize> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<train::trainer::StepLog>(l).ok())
            .filter(|l| l.skipped)
            .map(|l| l.step)
            .collect();
        println!("{what} {precision}: skipped steps {skipped:?}");
        summary.losses
    };
    let reference = run(Precision::F32);
    assert!(reference[19] < 0.7 * reference[0], "{reference:?}");
    for precision in [Precision::Bf16, Precision::F16] {
        let got = run(precision);
        let worst = reference
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0f64, f64::max);
        let bound = bound(precision.unit_roundoff());
        println!(
            "tiny Llama {what} {precision}, 20 steps: worst relative loss difference {worst:.3e} \
             (bound {bound:.3e}); f32 {:.4} -> {:.4}, {precision} {:.4} -> {:.4}",
            reference[0], reference[19], got[0], got[19]
        );
        assert!(
            worst <= bound,
            "{what} {precision}: {worst:e} > {bound:e}\n{reference:?}\n{got:?}"
        );
    }
}

#[test]
fn twenty_half_precision_steps_follow_the_f32_loss_curve() {
    // Each step's loss is a forward pass of the model trained so far: its error is the
    // forward's (3 u per half matmul, 9 in sequence: <= 27 u relative) plus the drift of the
    // adapter, whose updates differ by the gradient bound above. AdamW normalises each update
    // to about lr per component, so the drift is a fraction of it; the bound below allows the
    // forward error twice over and holds the curves to the same shape.
    follow_the_f32_curve("LoRA", config, |u| 2.0 * 27.0 * u);
}

#[test]
fn full_fine_tuning_in_half_precision_follows_the_f32_loss_curve() {
    // Full fine-tuning stores every matrix in the half type: the forward error is the same
    // 27 u, but every weight drifts, not only the adapter. Each step's update is AdamW's on
    // the f32 master, about lr per component whatever the gradient's rounding, so two runs
    // part only where a gradient component's sign or size relative to sqrt(v) differs - a
    // fraction of the steps' lr. Twice the LoRA bound holds the curves to the same shape (the
    // measured worst is printed; it sits well inside).
    //
    // f16 starts from a loss scale of 2^10 here: at the default 2^16 full fine-tuning's larger
    // gradients (embedding, LM head) overflow on the first two steps, which are skipped (the
    // scale halves, as PyTorch's GradScaler does; `f16_full_fine_tuning_recovers_...` tests
    // that), and a curve two steps late is not the comparison this test makes.
    fn make(precision: Precision, steps: usize) -> TrainConfig {
        TrainConfig {
            loss_scale: 1024.0,
            ..full(precision, steps)
        }
    }
    follow_the_f32_curve("full", make, |u| 4.0 * 27.0 * u);
}

/// Full fine-tuning in bf16: the checkpoint holds the f32 masters (not the bf16-rounded
/// weights), and a run resumed from it ends where an uninterrupted one does, bit for bit.
#[test]
fn full_fine_tuning_checkpoints_hold_the_masters_and_resume_exactly() {
    let data = batches();
    let cfg = TrainConfig {
        save_every: 2,
        ..full(Precision::Bf16, 6)
    };
    let run = |out: &Path, stop_at: Option<usize>, resume: bool| {
        let trainer = Trainer::<B> {
            config: &cfg,
            out: out.to_path_buf(),
            device: Default::default(),
            progress: false,
            stop_at,
            save_checkpoints: true,
            shards: 1,
            parallel: None,
            recompute_layers: false,
        };
        let model = load_for_training::<B>(&fixture(), &cfg, &Default::default()).unwrap();
        trainer.fit(&CausalLm, model, &data, resume).unwrap()
    };
    let straight = tmp("full-straight");
    let (m1, _) = run(&straight, None, false);
    let split = tmp("full-split");
    let _ = run(&split, Some(3), false);
    let (m2, rest) = run(&split, None, true);
    assert_eq!(rest.start_step, 3);
    let (a, b) = (params(&m1), params(&m2));
    assert_eq!(a.len(), b.len());
    for ((k, da, _, va), (_, db, _, vb)) in a.iter().zip(&b) {
        assert_eq!(da, db, "{k}");
        let differ = va.iter().zip(vb).filter(|(x, y)| x != y).count();
        assert_eq!(
            differ,
            0,
            "{k}: {differ} of {} values differ after resume",
            va.len()
        );
    }
    // The last checkpoint's weights are f32 values that bf16 cannot hold (masters), and
    // rounding them to bf16 gives the trained model's weights.
    let ckpt = straight.join("checkpoints/step-000006/weights.safetensors");
    let saved = infer::weights::read_safetensors(&ckpt).unwrap();
    let q = &saved["layers.0.self_attn.q_proj.Plain.weight"];
    let off_grid = q
        .values
        .iter()
        .filter(|v| half::bf16::from_f32(**v).to_f32() != **v)
        .count();
    assert!(
        off_grid > q.values.len() / 2,
        "{off_grid} of {}",
        q.values.len()
    );
    let (_, _, _, trained) = a
        .iter()
        .find(|(k, ..)| k == "layers.0.self_attn.q_proj.Plain.weight")
        .unwrap();
    let rounded: Vec<f32> = q
        .values
        .iter()
        .map(|v| half::bf16::from_f32(*v).to_f32())
        .collect();
    assert!(&rounded == trained);
}

#[test]
fn f16_recovers_from_overflowing_steps_without_nan_in_the_adapter() {
    recovers_from_overflow("lora", config);
}

#[test]
fn f16_full_fine_tuning_recovers_from_overflowing_steps_without_nan_in_the_weights() {
    recovers_from_overflow("full", full);
}

fn recovers_from_overflow(what: &str, make: fn(Precision, usize) -> TrainConfig) {
    // A loss scale of 2^30 makes the scaled gradient of the logits (about 2^30 / tokens)
    // overflow f16's 65504 in the half backward of the LM head: those steps are skipped and
    // the scale halves until the gradients fit; then training proceeds.
    let data = batches();
    let cfg = TrainConfig {
        loss_scale: 2f64.powi(30),
        loss_scale_growth: 4,
        ..make(Precision::F16, 30)
    };
    let out = tmp(&format!("overflow-{what}"));
    let trainer = Trainer::<B> {
        config: &cfg,
        out: out.clone(),
        device: Default::default(),
        progress: false,
        stop_at: None,
        save_checkpoints: true,
        shards: 1,
        parallel: None,
        recompute_layers: false,
    };
    let model = load_for_training::<B>(&fixture(), &cfg, &Default::default()).unwrap();
    let initial = infer::weights::trainable_tensors(&model);
    // Three overflowing steps change nothing.
    let first = Trainer::<B> {
        config: &cfg,
        out: tmp(&format!("overflow-3-{what}")),
        device: Default::default(),
        progress: false,
        stop_at: Some(3),
        save_checkpoints: false,
        shards: 1,
        parallel: None,
        recompute_layers: false,
    };
    let (after3, _) = first.fit(&CausalLm, model.clone(), &data, false).unwrap();
    assert_eq!(infer::weights::trainable_tensors(&after3), initial);
    let (model, summary) = trainer.fit(&CausalLm, model, &data, false).unwrap();
    let logs: Vec<train::trainer::StepLog> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skipped: Vec<usize> = logs.iter().filter(|l| l.skipped).map(|l| l.step).collect();
    println!(
        "f16, initial scale 2^30: skipped steps {skipped:?}, scales {:?}",
        logs.iter()
            .map(|l| l.loss_scale.unwrap())
            .collect::<Vec<_>>()
    );
    // The first steps overflow one after the other, each halving the scale, until the
    // gradients fit (about 2^18 here); later the scale grows every 4 finite steps and an
    // occasional overflow halves it again (PyTorch's rule).
    let leading = skipped
        .iter()
        .zip(1..)
        .take_while(|(s, i)| **s == *i)
        .count();
    assert!(
        leading >= 5,
        "the first steps did not overflow: {skipped:?}"
    );
    for (i, l) in logs.iter().enumerate().take(leading) {
        assert_eq!(l.loss_scale, Some(2f64.powi(30 - i as i32)));
        assert!(l.grad_norm.is_nan());
    }
    assert!(!logs[leading].skipped && logs[leading].grad_norm.is_finite());
    assert!(skipped.len() < 20, "the scale never came down: {skipped:?}");
    let trained = infer::weights::trainable_tensors(&model);
    for (k, t) in &trained {
        assert!(
            t.values.iter().all(|v| v.is_finite()),
            "{k} has a non-finite value"
        );
    }
    assert_ne!(trained, initial, "no step was taken");
    let losses = &summary.losses;
    let first_taken = leading;
    assert!(
        losses[29] < 0.8 * losses[first_taken],
        "the loss did not fall after the skips: {losses:?}"
    );
    // The checkpoint keeps the scale's state, so a resumed run continues with it.
    let state = train::checkpoint::Checkpoints::read_state(&out.join("checkpoints/step-000030"));
    let scale = state.ok().and_then(|s| s.loss_scale);
    assert!(
        scale.as_ref().is_some_and(|s| s.skipped == skipped.len()),
        "{scale:?}"
    );
}

/// The trainable parameters' gradients of the tiny Whisper on two clips at `precision`
/// (`full`: full fine-tuning; else LoRA-4 on q, v, fc1, fc2 with nonzero `B`).
fn whisper_grads(precision: Precision, full: bool) -> Vec<(String, HostTensor)> {
    use models::whisper::WhisperTokenizer;
    use train::asr::{AsrBatch, Seq2Seq, load_whisper_for_training, transcribe_prompt};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/whisper_tiny");
    let cfg = TrainConfig {
        adapter: train::config::AdapterSettings {
            targets: ["q_proj", "v_proj", "fc1", "fc2"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
        method: if full {
            Method::Full
        } else {
            Method::Lora { rank: 4 }
        },
        ..config(precision, 1)
    };
    let model = load_whisper_for_training::<B>(&dir, &cfg, &Default::default()).unwrap();
    if full && precision != Precision::F32 {
        // Every matrix half and trainable; convolutions, positions and norms f32.
        let t = types(&model);
        assert!(t.iter().all(|(_, _, trains)| *trains));
        assert!(t.iter().any(|(_, d, _)| *d != DType::F32), "{t:?}");
    }
    let model = nonzero_b(model);
    let tok = WhisperTokenizer::from_dir(&dir).unwrap();
    let prompt = transcribe_prompt(&model.config, &tok).unwrap();
    let (wav, flac) = (dir.join("audio_1s.wav"), dir.join("audio_1s.flac"));
    let items = vec![
        ("a".to_string(), wav.as_path(), "hello there".to_string()),
        ("b".to_string(), flac.as_path(), "good morning".to_string()),
    ];
    let batch = AsrBatch::from_files(&items, &tok, &prompt, model.config.num_mel_bins).unwrap();
    let rank = if full { 0 } else { 4 };
    let loss = Seq2Seq
        .loss(&model, &batch, &SampleRanks::uniform(2, rank))
        .unwrap();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
    let mut g = Grads(&grads, Vec::new(), Vec::new());
    model.visit(&mut g);
    g.1
}

#[test]
fn whisper_half_precision_gradients_agree_with_f32_within_the_roundoff_bound() {
    // LoRA and full fine-tuning (every matrix half-stored and trained): the same D = 42 bound.
    for full in [false, true] {
        let what = if full { "full" } else { "LoRA" };
        let reference = whisper_grads(Precision::F32, full);
        for precision in [Precision::Bf16, Precision::F16] {
            let (diff, scale) = compare(&reference, &whisper_grads(precision, full));
            let bound = 3.0 * precision.unit_roundoff() * 42.0 * scale;
            println!(
                "tiny Whisper {what} {precision}: max |grad diff| {diff:.3e}, max |grad| \
                 {scale:.3e}, {:.2} % of the bound {bound:.3e}",
                100.0 * diff / bound
            );
            assert!(
                diff > 0.0,
                "{what} {precision}: nothing was computed in the half type"
            );
            assert!(diff <= bound, "{what} {precision}: {diff:e} > {bound:e}");
        }
    }
}

#[test]
fn whisper_matrices_are_stored_half_as_they_are_read() {
    use models::whisper::{WhisperAdapter, load_whisper, load_whisper_in};
    type P = Flex;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/whisper_tiny");
    let adapter = WhisperAdapter::all(4, 8.0);
    let device = Default::default();
    for (precision, half) in [(Precision::Bf16, DType::BF16), (Precision::F16, DType::F16)] {
        // Read in the half type tensor by tensor, and cast after an f32 load: the same model.
        let direct = load_whisper_in::<P>(&dir, &adapter, precision, &device).unwrap();
        let cast = load_whisper::<P>(&dir, &adapter, &device)
            .unwrap()
            .store_frozen_in(precision);
        let (direct, cast) = (params(&direct), params(&cast));
        assert_eq!(direct.len(), cast.len());
        let mut halves = 0;
        for ((k, dt, _, v), (kc, dtc, _, vc)) in direct.iter().zip(&cast) {
            assert_eq!((k, dt), (kc, dtc), "{precision}");
            // (The adapters are drawn afresh by each load; training seeds them.)
            if !k.contains("lora") {
                assert_eq!(v, vc, "{precision}: {k}");
            }
            let matrix = (k.ends_with("weight") && (k.contains("proj") || k.contains("fc")))
                || k.contains("embed_tokens");
            if matrix && !k.contains("lora") && !k.contains("norm") {
                assert_eq!(*dt, half, "{precision}: {k}");
                halves += 1;
            } else {
                assert_eq!(*dt, DType::F32, "{precision}: {k}");
            }
        }
        // 2 + 2 layers: 4 + 2 (fc) projections per encoder layer, 8 + 2 per decoder layer,
        // and the token table.
        assert_eq!(halves, 2 * 6 + 2 * 10 + 1, "{precision}");
    }
}
