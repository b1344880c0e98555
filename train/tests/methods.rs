//! Every method trains the tiny Llama fixture (the loss falls), ranks reach every adapted layer
//! as the method says, resume is exact, and bad input is refused without losing checkpoints.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use datasets::batch::{PadSide, collate};
use datasets::prompt::Prompted;
use datasets::tokenize::{EncodeOptions, HfTokenizer, TextTokenizer, encode_pair};
use train::adalora::AdaLoraConfig;
use train::lm::{CausalLm, LmBatch, load_for_training};
use train::params::trainable_tensors;
use train::{Method, TrainConfig, TrainError, Trainer};

type B = Autodiff<Flex>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny_tied")
}

/// 12 tiny "a plus b" questions with their answers, in 3 batches of 4.
fn batches(routed: Option<&[usize]>) -> Vec<LmBatch> {
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
        .enumerate()
        .map(|(bi, chunk)| {
            let refs: Vec<_> = chunk.iter().collect();
            let mut b = LmBatch::from_collated(&collate(&refs, tok.pad_id(), PadSide::Left));
            b.routed = routed.map(|r| (0..4).map(|i| r[(bi * 4 + i) % r.len()]).collect());
            b
        })
        .collect()
}

fn config(method: Method, steps: usize) -> TrainConfig {
    TrainConfig {
        method,
        lr: 1e-2,
        warmup_steps: 2,
        max_steps: steps,
        batch_size: 4,
        save_every: 0,
        seed: 7,
        ..Default::default()
    }
}

fn run(
    cfg: &TrainConfig,
    out: &Path,
    batches: &[LmBatch],
    stop_at: Option<usize>,
    resume: bool,
) -> train::Result<(models::llama::Llama<B>, train::TrainSummary)> {
    run_sharded(cfg, out, batches, stop_at, resume, 1)
}

fn run_sharded(
    cfg: &TrainConfig,
    out: &Path,
    batches: &[LmBatch],
    stop_at: Option<usize>,
    resume: bool,
    shards: usize,
) -> train::Result<(models::llama::Llama<B>, train::TrainSummary)> {
    let trainer = trainer::<B>(cfg, out, stop_at, shards, None);
    fit(trainer, batches, resume)
}

/// A quiet trainer of the tiny Llama on backend `Bk`, writing checkpoints into `out`.
fn trainer<'a, Bk: burn::tensor::backend::AutodiffBackend>(
    cfg: &'a TrainConfig,
    out: &Path,
    stop_at: Option<usize>,
    shards: usize,
    parallel: Option<train::DataParallel>,
) -> Trainer<'a, Bk> {
    Trainer {
        config: cfg,
        out: out.to_path_buf(),
        device: Default::default(),
        progress: false,
        stop_at,
        save_checkpoints: true,
        shards,
        parallel,
        recompute_layers: false,
    }
}

/// Loads the tiny Llama for `trainer`'s configuration and fits it to `batches`.
fn fit<Bk: burn::tensor::backend::AutodiffBackend>(
    trainer: Trainer<'_, Bk>,
    batches: &[LmBatch],
    resume: bool,
) -> train::Result<(models::llama::Llama<Bk>, train::TrainSummary)> {
    let model = load_for_training::<Bk>(&fixture(), trainer.config, &trainer.device)?;
    trainer.fit(&CausalLm, model, batches, resume)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn every_method_lowers_the_training_loss() {
    let methods = vec![
        Method::Full,
        Method::Lora { rank: 4 },
        Method::Dylora {
            r_max: 4,
            frozen: false,
            eval_rank: 2,
        },
        Method::Dylora {
            r_max: 4,
            frozen: true,
            eval_rank: 2,
        },
        Method::DyloraPlus { r_max: 4 },
        Method::Adalora(AdaLoraConfig {
            init_r: 6,
            target_r: 3,
            tinit: 2,
            tfinal: 3,
            ..Default::default()
        }),
        Method::Flexi {
            class_ranks: "(1,4)".into(),
        },
    ];
    for method in methods {
        let label = method.label();
        let routed = matches!(method, Method::Flexi { .. }).then_some(&[1usize, 4, 4, 1][..]);
        let mut cfg = config(method, 15);
        if matches!(cfg.method, Method::Adalora(_)) {
            // E starts at 0 and A, B ~ N(0, 0.02): the first gradients are orders of magnitude
            // smaller than LoRA's, so AdaLoRA needs a larger step on 15 steps.
            cfg.lr = 5e-2;
        }
        let out = tmp(&label.replace(['(', ')', ',', '+'], "_"));
        let (model, summary) = run(&cfg, &out, &batches(routed), None, false).unwrap();
        if let Method::Adalora(a) = &cfg.method {
            // After total - tfinal the budget is target_r per layer, exactly.
            let kept: usize = model
                .layers
                .iter()
                .flat_map(|l| {
                    [
                        &l.self_attn.q_proj,
                        &l.self_attn.k_proj,
                        &l.self_attn.v_proj,
                        &l.self_attn.o_proj,
                    ]
                })
                .map(|p| {
                    let e = p
                        .adapter()
                        .and_then(|f| f.lora_e.as_ref())
                        .expect("AdaLoRA layers have E");
                    e.val()
                        .into_data()
                        .to_vec::<f32>()
                        .unwrap()
                        .iter()
                        .filter(|v| **v != 0.0)
                        .count()
                })
                .sum();
            assert_eq!(
                kept,
                a.target_r * 8,
                "AdaLoRA keeps target_r triplets per layer on average"
            );
        }
        let first = mean(&summary.losses[..3]);
        let last = mean(&summary.losses[summary.losses.len() - 3..]);
        assert!(
            last < 0.8 * first,
            "{label}: loss {first:.4} -> {last:.4} ({:?})",
            summary.losses
        );
        assert!(
            out.join("checkpoints/latest").exists(),
            "{label}: final checkpoint"
        );
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics.lines().count(),
            15,
            "{label}: one metrics line per step"
        );
    }
}

/// A batch computed in shards on parallel threads trains like the whole batch on one thread
/// (same weighted loss; only f32 summation order differs), and deterministically.
#[test]
fn sharded_batches_train_like_whole_batches() {
    for (method, routed) in [
        (Method::Lora { rank: 4 }, None),
        (
            Method::Flexi {
                class_ranks: "(1,4)".into(),
            },
            Some(&[1usize, 4, 4, 1, 1][..]),
        ),
        (
            Method::Adalora(AdaLoraConfig {
                init_r: 6,
                target_r: 4,
                tinit: 1,
                tfinal: 1,
                delta_t: 1,
                ..Default::default()
            }),
            None,
        ),
        (Method::Full, None),
    ] {
        let cfg = config(method.clone(), 6);
        let data = batches(routed);
        let out = tmp("shards");
        let (whole, s1) = run_sharded(&cfg, &out, &data, None, false, 1).unwrap();
        let whole = trainable_tensors(&whole);
        for shards in [2, 3] {
            let (m, s) = run_sharded(&cfg, &out, &data, None, false, shards).unwrap();
            let (again, _) = run_sharded(&cfg, &out, &data, None, false, shards).unwrap();
            let m = trainable_tensors(&m);
            assert_eq!(
                m,
                trainable_tensors(&again),
                "{method:?}: {shards} shards not deterministic"
            );
            assert_eq!(s.ranks, s1.ranks, "{method:?}: ranks differ");
            for (a, b) in s.losses.iter().zip(&s1.losses) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs(),
                    "{method:?} {shards} shards: loss {a} vs {b}"
                );
            }
            let mut worst = 0f32;
            for (k, t) in &whole {
                let u = &m[k];
                for (x, y) in t.values.iter().zip(&u.values) {
                    worst = worst.max((x - y).abs());
                }
            }
            println!(
                "{method:?}, {shards} shards: losses {:?}, max |weight diff| {worst:.2e}",
                s.losses
            );
            assert!(
                worst <= 1e-4,
                "{method:?} {shards} shards: weights differ by {worst}"
            );
        }
    }
}

/// A shard whose samples carry no label (all -100) contributes nothing instead of failing the
/// step or poisoning it with 0/0: the step equals the one-thread step.
#[test]
fn a_shard_without_labels_is_skipped() {
    let cfg = config(Method::Lora { rank: 4 }, 3);
    let mut data = batches(None);
    for b in &mut data {
        let s = b.batch.seq_len();
        // Samples 0 and 1 (the first of 2 shards) lose every label.
        b.labels[..2 * s].iter_mut().for_each(|l| *l = -100);
    }
    let out = tmp("empty-shard");
    let (whole, s1) = run_sharded(&cfg, &out, &data, None, false, 1).unwrap();
    let (sharded, s2) = run_sharded(&cfg, &out, &data, None, false, 2).unwrap();
    for (a, b) in s2.losses.iter().zip(&s1.losses) {
        assert!(
            a.is_finite() && (a - b).abs() <= 1e-5 * b.abs(),
            "loss {a} vs {b}"
        );
    }
    let (a, b) = (trainable_tensors(&whole), trainable_tensors(&sharded));
    let worst = a.iter().fold(0f32, |m, (k, t)| {
        t.values
            .iter()
            .zip(&b[k].values)
            .fold(m, |m, (x, y)| m.max((x - y).abs()))
    });
    assert!(worst <= 1e-4, "weights differ by {worst}");
}

#[test]
fn resumed_run_ends_with_the_same_adapter_as_an_uninterrupted_one() {
    for method in [
        Method::Lora { rank: 4 },
        Method::Dylora {
            r_max: 4,
            frozen: false,
            eval_rank: 2,
        },
    ] {
        let mut cfg = config(method, 8);
        cfg.save_every = 2;
        let data = batches(None);
        let straight = tmp("straight");
        let (m1, _) = run(&cfg, &straight, &data, None, false).unwrap();
        let split = tmp("split");
        let (_, part) = run(&cfg, &split, &data, Some(5), false).unwrap();
        assert_eq!(part.losses.len(), 5);
        let (m2, rest) = run(&cfg, &split, &data, None, true).unwrap();
        assert_eq!(rest.start_step, 5, "resumed from the checkpoint at step 5");
        assert_eq!(rest.losses.len(), 3);
        let (a, b) = (trainable_tensors(&m1), trainable_tensors(&m2));
        assert_eq!(a.len(), b.len());
        for (k, t) in &a {
            assert_eq!(t, &b[k], "tensor {k} differs after resume");
        }
    }
}

#[test]
fn ranks_reach_every_adapted_layer_as_each_method_says() {
    use flexi_burn::SampleRanks;
    use train::Objective;
    // Flexi: per-sample router ranks reach every adapted projection of every layer. Only the
    // rank-1 samples carry labels, so B columns beyond 1 must get no gradient anywhere, and
    // column 0 must learn everywhere; then only the rank-4 samples: columns 0..4 learn.
    let cfg = config(
        Method::Flexi {
            class_ranks: "(1,4)".into(),
        },
        1,
    );
    let device = Default::default();
    let model = load_for_training::<B>(&fixture(), &cfg, &device).unwrap();
    let mut batch = batches(None).remove(0);
    let ranks = SampleRanks::new(vec![1, 4, 4, 1]);
    let s = batch.batch.ids[0].len();
    for (keep, want_cols) in [(vec![0usize, 3], 1usize), (vec![1, 2], 4)] {
        let mut b = batch.clone();
        for i in 0..4 {
            if !keep.contains(&i) {
                b.labels[i * s..(i + 1) * s]
                    .iter_mut()
                    .for_each(|l| *l = -100);
            }
        }
        let grads = CausalLm.loss(&model, &b, &ranks).unwrap().backward();
        let mut seen = 0;
        for (li, layer) in model.layers.iter().enumerate() {
            let a = &layer.self_attn;
            for (name, proj) in [
                ("q", &a.q_proj),
                ("k", &a.k_proj),
                ("v", &a.v_proj),
                ("o", &a.o_proj),
            ] {
                let f = proj
                    .adapter()
                    .unwrap_or_else(|| panic!("layer {li} {name}_proj is adapted"));
                let g = f
                    .lora_b
                    .grad(&grads)
                    .unwrap()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap();
                let r_max = f.r_max();
                for col in 0..r_max {
                    let learns = (0..f.d_output()).any(|o| g[o * r_max + col] != 0.0);
                    assert_eq!(
                        learns,
                        col < want_cols,
                        "layer {li} {name}_proj column {col} (samples {keep:?})"
                    );
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 8);
    }
    batch.routed = Some(vec![1, 4, 4, 1]);
    let (_, s) = run(&cfg, &tmp("flexi-ranks"), &[batch], None, false).unwrap();
    assert_eq!(
        s.ranks,
        vec![1, 4, 4, 1],
        "the trainer uses the router's ranks as given"
    );

    // DyLoRA: one rank for the whole model and batch per step, drawn uniformly from 1..=r_max.
    let cfg = config(
        Method::Dylora {
            r_max: 4,
            frozen: false,
            eval_rank: 2,
        },
        12,
    );
    let (_, s) = run(&cfg, &tmp("dylora-ranks"), &batches(None), None, false).unwrap();
    for step in s.ranks.chunks(4) {
        assert!(
            step.iter().all(|r| *r == step[0] && (1..=4).contains(r)),
            "one rank per step: {step:?}"
        );
    }
    assert!(
        s.ranks.chunks(4).any(|c| c[0] != s.ranks[0]),
        "DyLoRA draws different ranks"
    );
    // With gradient accumulation the rank is drawn per optimizer step, not per micro-batch:
    // the two micro-batches of a step use the same rank (DyLoRA's b is the step's), and the
    // steps of a grad_accum = 1 run draw the same sequence.
    let mut accum = cfg.clone();
    accum.grad_accum = 2;
    accum.max_steps = 6;
    let mut four = batches(None);
    four.push(four[0].clone()); // 4 batches: every step has two micro-batches
    let (_, s2) = run(&accum, &tmp("dylora-accum"), &four, None, false).unwrap();
    assert_eq!(s2.ranks.len(), 6 * 8);
    for step in s2.ranks.chunks(8) {
        assert!(
            step.iter().all(|r| *r == step[0]),
            "one rank per optimizer step over its micro-batches: {step:?}"
        );
    }
    let firsts: Vec<usize> = s2.ranks.chunks(8).map(|c| c[0]).collect();
    let single: Vec<usize> = s.ranks.chunks(4).take(6).map(|c| c[0]).collect();
    assert_eq!(
        firsts, single,
        "the draw of step k does not depend on grad_accum"
    );
    // DyLoRA+ draws at inference too; DyLoRA uses eval_rank there.
    let plus = Method::DyloraPlus { r_max: 4 }.schedule().unwrap();
    let draws: Vec<usize> = (0..20)
        .map(|i| {
            train::trainer::inference_ranks(&plus, 1, i, 2, None)
                .unwrap()
                .as_slice()[0]
        })
        .collect();
    assert!(draws.iter().any(|r| *r != draws[0]));
    let dy = Method::Dylora {
        r_max: 4,
        frozen: false,
        eval_rank: 2,
    }
    .schedule()
    .unwrap();
    assert_eq!(
        train::trainer::inference_ranks(&dy, 1, 5, 3, None)
            .unwrap()
            .as_slice(),
        &[2, 2, 2]
    );
}

#[test]
fn bad_configs_and_nan_are_refused_and_checkpoints_survive() {
    let err = TrainConfig::default()
        .with_overrides(&["method.name=magic".into()])
        .unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    let err = TrainConfig::default()
        .with_overrides(&["learning_rate=1".into()])
        .unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
    let err = TrainConfig::default()
        .with_overrides(&["method={\"name\":\"dylora\",\"r_max\":4,\"eval_rank\":8}".into()])
        .unwrap_err();
    assert!(
        err.to_string().contains("eval_rank (8) <= r_max (4)"),
        "{err}"
    );
    let ok = TrainConfig::default()
        .with_overrides(&[
            "method.name=lora".into(),
            "method.rank=2".into(),
            "lr=0.001".into(),
        ])
        .unwrap();
    assert_eq!(ok.method, Method::Lora { rank: 2 });

    // Ranks above the adapter: the router says 8 but the adapter has r_max 4.
    let cfg = config(
        Method::Flexi {
            class_ranks: "(1,4)".into(),
        },
        2,
    );
    let err = run(&cfg, &tmp("too-big"), &batches(Some(&[8])), None, false)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("rank 8") && err.to_string().contains("r_max = 4"),
        "{err}"
    );

    // Empty data.
    let err = run(
        &config(Method::Lora { rank: 2 }, 2),
        &tmp("empty"),
        &[],
        None,
        false,
    )
    .err()
    .unwrap();
    assert!(matches!(err, TrainError::EmptyData(_)));

    // NaN loss: a learning rate that explodes the weights; the last good checkpoint stays.
    let out = tmp("nan");
    let mut cfg = config(Method::Full, 40);
    cfg.save_every = 1;
    cfg.lr = 1e30;
    cfg.grad_clip = 0.0;
    let err = run(&cfg, &out, &batches(None), None, false).err().unwrap();
    let TrainError::NonFiniteLoss { step, examples, .. } = &err else {
        panic!("expected NaN error, got {err}")
    };
    assert_eq!(examples.len(), 4);
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert_eq!(
        latest,
        format!("step-{step:06}"),
        "the checkpoint before the bad step survives"
    );
}

#[test]
fn a_full_disk_while_saving_keeps_the_previous_checkpoint() {
    let out = tmp("full-disk");
    let mut cfg = config(Method::Lora { rank: 2 }, 4);
    cfg.save_every = 2;
    run(&cfg, &out, &batches(None), Some(2), false).unwrap();
    // The next checkpoint's weights land on /dev/full: writing fails with ENOSPC.
    let tmpdir = out.join("checkpoints/step-000004.tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    std::os::unix::fs::symlink("/dev/full", tmpdir.join("weights.safetensors")).unwrap();
    let err = run(&cfg, &out, &batches(None), None, true).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Io { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "{}: No space left on device",
            tmpdir.join("weights.safetensors").display()
        )),
        "{msg}"
    );
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert_eq!(latest, "step-000002");
    assert!(
        out.join("checkpoints/step-000002/weights.safetensors")
            .exists()
    );
    // And the run resumes from it once there is room again.
    std::fs::remove_dir_all(&tmpdir).unwrap();
    let (_, s) = run(&cfg, &out, &batches(None), None, true).unwrap();
    assert_eq!(s.start_step, 2);
}

/// Data-parallel peers (threads on flex, burn-collective's local all-reduce): after 4 steps
/// every peer's trainable tensors equal one process training on the same global batches
/// (f32 summation order only), for LoRA, DyLoRA (one rank per step shared by all peers),
/// Flexi-LoRA (mixed per-example ranks travelling with their examples) and full fine-tuning;
/// the peers end bit-identical; only peer 0 writes the run directory. One test: the collective
/// is process-global, so sessions run one after the other.
/// burn-collective's local server is one per process and backend: the tests that use it take
/// turns.
static COLLECTIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn data_parallel_peers_train_like_one_process() {
    use train::DataParallel;
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let methods = [
        (Method::Lora { rank: 4 }, None),
        (
            Method::Dylora {
                r_max: 4,
                frozen: false,
                eval_rank: 2,
            },
            None,
        ),
        (
            Method::Flexi {
                class_ranks: "(1,4)".into(),
            },
            Some(&[1usize, 4, 4, 1, 4][..]),
        ),
        (Method::Full, None),
    ];
    for (method, routed) in methods {
        let label = method.label().replace(['(', ')', ',', '+', '@'], "_");
        let cfg = config(method.clone(), 4);
        let data = batches(routed);
        let (single, s1) = run(&cfg, &tmp(&format!("dp1-{label}")), &data, None, false).unwrap();
        let single = trainable_tensors(&single);
        for world in [2usize, 3] {
            let out = tmp(&format!("dp{world}-{label}"));
            let results: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..world)
                    .map(|rank| {
                        let (cfg, data, out) = (&cfg, &data, out.clone());
                        scope.spawn(move || {
                            let peer = Some(DataParallel::local(rank, world).unwrap());
                            let trainer = trainer::<B>(cfg, &out, None, 1, peer);
                            let (model, summary) = fit(trainer, data, false).unwrap();
                            (trainable_tensors(&model), summary)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let (peer0, summary0) = &results[0];
            let mut worst = 0f32;
            for (k, t) in &single {
                let u = &peer0[k];
                for (a, b) in t.values.iter().zip(&u.values) {
                    worst = worst.max((a - b).abs());
                }
            }
            assert!(
                worst <= 1e-5,
                "{label}, {world} peers: max |diff| {worst:e}"
            );
            for (rank, (tensors, _)) in results.iter().enumerate().skip(1) {
                assert_eq!(tensors, peer0, "{label}: peer {rank} differs from peer 0");
            }
            // The logged loss is the whole batch's, summed over the peers.
            for (a, b) in summary0.losses.iter().zip(&s1.losses) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{label}: loss {a} vs {b}"
                );
            }
            // Peer 0 wrote the checkpoint and the metrics; nobody else wrote anything.
            assert!(summary0.checkpoint.is_some(), "{label}");
            assert!(results[1].1.checkpoint.is_none(), "{label}");
            let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
            assert_eq!(lines.lines().count(), 4, "{label}");
        }
    }
}

#[test]
fn a_data_parallel_peer_that_leaves_ends_the_run_and_the_checkpoint_resumes() {
    use std::time::{Duration, Instant};
    use train::DataParallel;
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = config(Method::Lora { rank: 4 }, 8);
    cfg.save_every = 2;
    let data = batches(None);
    let (uninterrupted, _) = run(&cfg, &tmp("dp-leave-ref"), &data, None, false).unwrap();

    // Peer 1 leaves after step 3; peer 0 must not train on alone.
    let out = tmp("dp-leave");
    let began = Instant::now();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = [(0usize, None), (1, Some(3usize))]
            .into_iter()
            .map(|(rank, stop_at)| {
                let (cfg, data, out) = (&cfg, &data, out.clone());
                scope.spawn(move || {
                    let peer = DataParallel::local(rank, 2)
                        .unwrap()
                        .with_timeout(Duration::from_secs(5));
                    let trainer = trainer::<B>(cfg, &out, stop_at, 1, Some(peer));
                    fit(trainer, data, false).map(|_| ())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        results[1].is_ok(),
        "peer 1 stopped as asked: {:?}",
        results[1]
    );
    match &results[0] {
        Err(e @ TrainError::Peer { peer: 0, .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("at step 4")
                    && (text.contains("did not all arrive") || text.contains("1 of 2 peers")),
                "{text}"
            );
        }
        other => panic!("peer 0 should fail at step 4, got {other:?}"),
    }
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "peer 0 took {:?} to give up",
        began.elapsed()
    );
    // Peer 0 wrote the step-2 checkpoint, and nothing of steps 3 and 4.
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert!(latest.trim().ends_with("2"), "latest checkpoint {latest:?}");

    // It resumes, in one process, to the uninterrupted run's adapter.
    let (resumed, _) = run(&cfg, &out, &data, None, true).unwrap();
    let (a, b) = (
        trainable_tensors(&resumed),
        trainable_tensors(&uninterrupted),
    );
    let mut worst = 0f32;
    for (k, t) in &b {
        for (x, y) in t.values.iter().zip(&a[k].values) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst <= 1e-5, "resumed: max |diff| {worst:e}");
}

/// Trains `cfg` on backend `Bk` (one shard, so both sides sum in the same order) and returns
/// the trainable tensors.
fn trained_on<Bk: burn::tensor::backend::AutodiffBackend>(
    cfg: &TrainConfig,
    out: &Path,
    batches: &[LmBatch],
) -> std::collections::BTreeMap<String, train::params::HostTensor> {
    let trainer = Trainer {
        save_checkpoints: false,
        ..trainer::<Bk>(cfg, out, None, 1, None)
    };
    let (model, _) = fit(trainer, batches, false).unwrap();
    trainable_tensors(&model)
}

#[test]
fn balanced_activation_checkpointing_trains_identically() {
    // Burn's `BalancedCheckpointing` frees the outputs of memory-bound ops (elementwise,
    // softmax, norms) after the forward pass and recomputes them in the backward pass; the
    // recomputation runs the same kernels on the same inputs, so the step must not change.
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    type Ck = Autodiff<Flex, BalancedCheckpointing>;
    let methods = [
        (Method::Lora { rank: 4 }, None),
        (
            Method::Flexi {
                class_ranks: "(1,4)".into(),
            },
            Some(&[1usize, 4, 4, 1, 4][..]),
        ),
        (Method::Full, None),
    ];
    for (method, routed) in methods {
        let label = method.label().replace(['(', ')', ','], "_");
        let cfg = config(method, 3);
        let data = batches(routed);
        let plain = trained_on::<B>(&cfg, &tmp(&format!("ck0-{label}")), &data);
        let ckpt = trained_on::<Ck>(&cfg, &tmp(&format!("ck1-{label}")), &data);
        assert_eq!(plain.len(), ckpt.len(), "{label}");
        let mut worst = 0f32;
        for (k, t) in &plain {
            for (a, b) in t.values.iter().zip(&ckpt[k].values) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst <= 1e-6, "{label}: max |diff| {worst:e}");
    }
}
