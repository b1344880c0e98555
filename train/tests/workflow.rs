//! label -> router -> fit (Flexi-LoRA) -> FlexiRun::load -> evaluate, end to end through the
//! library on the tiny Llama fixture, and the rules the workflow enforces (router input
//! definition, duplicate ids, the evaluation's rank stream).

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use datasets::Example;
use flexi_burn::{RankSchedule, SampleRanks, inference_ranks};
use infer::{EvalSettings, RankPolicy, TrainedRouter};
use models::llama::Llama;
use train::workflow::{self, BaseModel, FitSpec, RouterSpec, TextModel};
use train::{FlexiRun, Method, TrainConfig};

type B = Flex;
type Ad = Autodiff<Flex>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-workflow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const WORDS: [&str; 10] = [
    "apple", "river", "stone", "cloud", "green", "music", "table", "window", "light", "paper",
];

/// An MRQA file of `n` short questions with the given answers.
fn write_qa(path: &Path, answers: &[String]) {
    let mut lines = vec![r#"{"header": {"dataset": "Tiny", "split": "train"}}"#.to_string()];
    for (i, a) in answers.iter().enumerate() {
        let ctx: Vec<&str> = (0..6).map(|j| WORDS[(i + j) % 10]).collect();
        lines.push(
            serde_json::json!({
                "id": format!("c{i}"),
                "context": ctx.join(" "),
                "qas": [{"qid": format!("q{i}"), "question": format!("What is word {i}?"), "answers": [a]}]
            })
            .to_string(),
        );
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn settings() -> EvalSettings {
    EvalSettings {
        batch_size: 4,
        max_new_tokens: 6,
        max_len: 64,
        progress: false,
    }
}

/// A QA set on which the base model is right on the even examples: their gold answer is the
/// base model's own greedy answer (the tiny model's output is noise, so no fixed text would
/// do), the odd ones ask for words it never says.
fn planted_data(dir: &Path, base: &TextModel<B>) -> (PathBuf, usize) {
    let n = 12;
    let path = dir.join("qa.jsonl");
    let placeholder: Vec<String> = (0..n).map(|i| WORDS[i % 10].to_string()).collect();
    write_qa(&path, &placeholder);
    let examples = workflow::read_examples(&path, None).unwrap();
    let first = infer::evaluate(
        &base.model,
        &base.text,
        &examples,
        &RankPolicy::Base,
        &settings(),
        "base",
    )
    .unwrap();
    let answers: Vec<String> = first
        .predictions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 0 {
                p.prediction.clone()
            } else {
                format!("zebra{i} quartz{i}")
            }
        })
        .collect();
    write_qa(&path, &answers);
    (path, n.div_ceil(2))
}

/// `workflow::fit` on the CPU: one shard, no progress bar, a fresh run.
fn fit(
    model: PathBuf,
    config: TrainConfig,
    router: Option<PathBuf>,
    chat: bool,
    out: PathBuf,
    examples: &[Example],
) -> train::Result<workflow::Fitted> {
    let spec = FitSpec {
        init_adapter: None,
        allow_upcast: false,
        model,
        config,
        router,
        chat,
        out,
        resume: false,
        progress: false,
        shards: 1,
        parallel: None,
        recompute_layers: false,
    };
    workflow::fit::<Ad>(&spec, examples, Default::default())
}

fn flexi_config() -> TrainConfig {
    TrainConfig {
        method: Method::Flexi {
            class_ranks: "2,8".into(),
        },
        batch_size: 4,
        max_steps: 3,
        max_len: 64,
        lr: 1e-2,
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn label_router_fit_and_evaluate_a_flexi_run_end_to_end() {
    let dir = tmp("e2e");
    let device = Default::default();
    let base = TextModel::<B>::load(&fixture("tiny_tied"), true, &device).unwrap();
    let (data, planted) = planted_data(&dir, &base);
    let examples = workflow::read_examples(&data, None).unwrap();
    let base = BaseModel::from(base);

    // 1. label: the planted answers are exactly the easy ones.
    let labels = workflow::label(&base, &examples, &settings(), None, 3).unwrap();
    let c = labels.counts();
    assert_eq!((c.easy, c.hard), (planted, examples.len() - planted));
    for (i, l) in labels.labels.iter().enumerate() {
        assert_eq!(l.label.class(), i % 2, "example {i}: {l:?}");
    }
    assert_eq!(labels.balanced.len(), 2 * planted);
    labels.write(&dir.join("labels")).unwrap();

    // 2. router: trained, saved with its input definition, reloaded on the plain backend.
    let spec = RouterSpec {
        text_layer: None,
        class_ranks: "2,8".parse().unwrap(),
        training: train::router::RouterTraining {
            epochs: 200,
            lr: 1e-2,
            seed: 5,
            ..Default::default()
        },
        max_len: 48,
        audio_feature: Default::default(),
    };
    let fitted =
        workflow::fit_router::<Ad>(&base, &examples, &labels.balanced, &spec, &device).unwrap();
    let input = fitted.meta.input.text(Path::new("router")).unwrap();
    let base = base.as_text().unwrap();
    assert_eq!(
        (input.d_model, input.vocab_size, input.max_len),
        (64, base.model.config.vocab_size, 48)
    );
    assert!(
        input
            .chat_template
            .as_deref()
            .unwrap_or("")
            .contains("Llama3"),
        "{input:?}"
    );
    let router_dir = dir.join("router");
    fitted.save(&router_dir).unwrap();
    let router = TrainedRouter::<B>::load(&router_dir, &device).unwrap();
    assert_eq!(router.meta, fitted.meta);
    let refs: Vec<&Example> = examples.iter().collect();
    let routed = router.route(&base.model, &base.text, &refs).unwrap();
    println!(
        "router ranks {routed:?}, training accuracy {}",
        fitted.meta.train_accuracy
    );
    assert!(routed.iter().all(|r| [2, 8].contains(r)));
    assert!(
        routed.contains(&2) && routed.contains(&8),
        "mixed ranks: {routed:?}"
    );

    // 3. fit: every example trains at its router rank.
    let run_dir = dir.join("run");
    let fit = fit(
        fixture("tiny_tied"),
        flexi_config(),
        Some(router_dir.clone()),
        true,
        run_dir.clone(),
        &examples,
    )
    .unwrap();
    assert_eq!(fit.summary.losses.len(), 3);
    let mut trained: Vec<usize> = fit.summary.ranks.clone();
    let mut want: Vec<usize> = routed.clone();
    trained.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        trained, want,
        "one epoch: the router's ranks, each example once"
    );

    // 4. a separate load on the plain backend: the router's ranks, per example.
    let run = FlexiRun::<B>::load(&run_dir, &device).unwrap();
    assert_eq!(run.method(), "flexi2,8");
    let report = run.evaluate(&examples, &settings(), "tiny").unwrap();
    let ranks: Vec<usize> = report.predictions.iter().map(|p| p.rank).collect();
    assert_eq!(ranks, routed);
    let mean = routed.iter().sum::<usize>() as f64 / routed.len() as f64;
    assert!((report.mean_rank - mean).abs() < 1e-12);

    // The loaded run is the trained model: same answers as the in-memory one.
    let trained =
        train::lm::load_for_training::<Ad>(&fixture("tiny_tied"), &flexi_config(), &device)
            .unwrap();
    let ckpt = train::checkpoint::Checkpoints::new(&run_dir, 2)
        .latest()
        .unwrap()
        .unwrap();
    let w = ckpt.join("weights.safetensors");
    let trained =
        train::params::load_tensors(trained, &train::params::read_safetensors(&w).unwrap(), &w)
            .unwrap()
            .valid();
    let direct = infer::evaluate(
        &trained,
        &base.text,
        &examples,
        &RankPolicy::PerExample(routed.clone()),
        &settings(),
        "tiny",
    )
    .unwrap();
    let texts = |r: &infer::EvalReport| -> Vec<String> {
        r.predictions.iter().map(|p| p.prediction.clone()).collect()
    };
    assert_eq!(texts(&report), texts(&direct));
    // ... and the adapter changed the answers of the base model on some example.
    assert_ne!(texts(&report), texts(&labels.report));

    // 5. The run as one Flexi-LoRA adapter directory (a PEFT LoRA at r_max + the router and
    // its input definition), reloaded onto the base model: the same routed answers.
    let flexi_dir = dir.join("flexi-adapter");
    let e = train::export::export_flexi(&run, &flexi_dir).unwrap();
    assert_eq!(e.rank, 8);
    let reloaded =
        FlexiRun::<B>::from_flexi_adapter(&fixture("tiny_tied"), &flexi_dir, &device).unwrap();
    let again = reloaded.evaluate(&examples, &settings(), "tiny").unwrap();
    assert_eq!(texts(&again), texts(&report));
    let again_ranks: Vec<usize> = again.predictions.iter().map(|p| p.rank).collect();
    assert_eq!(again_ranks, routed);
    // A plain PEFT adapter has no routing to reload.
    let plain = dir.join("plain-peft");
    train::export::export_peft(&run, Some(2), &plain).unwrap();
    let err = FlexiRun::<B>::from_flexi_adapter(&fixture("tiny_tied"), &plain, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("flexi_lora"), "{err}");
}

#[test]
fn a_router_used_with_other_inputs_is_an_error() {
    let dir = tmp("mismatch");
    let device = Default::default();
    let base = BaseModel::from(TextModel::<B>::load(&fixture("tiny_tied"), true, &device).unwrap());
    let answers: Vec<String> = (0..4).map(|i| WORDS[i].to_string()).collect();
    let data = dir.join("qa.jsonl");
    write_qa(&data, &answers);
    let examples = workflow::read_examples(&data, None).unwrap();
    let labels: Vec<datasets::labels::LabeledSample> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::from_value(serde_json::json!({
                "id": e.id, "score": (i % 2) as f64, "label": if i % 2 == 0 { "hard" } else { "easy" }
            }))
            .unwrap()
        })
        .collect();
    let spec = RouterSpec {
        text_layer: None,
        class_ranks: "2,8".parse().unwrap(),
        training: Default::default(),
        max_len: 48,
        audio_feature: Default::default(),
    };
    let fitted = workflow::fit_router::<Ad>(&base, &examples, &labels, &spec, &device).unwrap();
    let base = base.as_text().unwrap();
    let router_dir = dir.join("router");
    fitted.save(&router_dir).unwrap();
    let router = TrainedRouter::<B>::load(&router_dir, &device).unwrap();
    let refs: Vec<&Example> = examples.iter().collect();

    // Prompts without the chat template are not the router's input.
    let plain = TextModel::<B>::load(&fixture("tiny_tied"), false, &device).unwrap();
    let err = router
        .route(&plain.model, &plain.text, &refs)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chat template") && err.contains("none"),
        "{err}"
    );

    // Another model (the untied fixture has another hidden size or vocabulary): an error
    // naming the field, not a panic in a matmul.
    let mut meta = router.meta.clone();
    if let infer::RouterInput::Text(t) = &mut meta.input {
        t.d_model = 32;
    }
    let other = TrainedRouter::<B> {
        meta,
        ..TrainedRouter::<B>::load(&router_dir, &device).unwrap()
    };
    let err = other
        .route(&base.model, &base.text, &refs)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("d_model") && err.contains("32") && err.contains("64"),
        "{err}"
    );

    // A router without an input definition (an old router.json) is refused when loaded.
    let json = std::fs::read_to_string(router_dir.join("router.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_object_mut().unwrap().remove("input");
    std::fs::write(router_dir.join("router.json"), v.to_string()).unwrap();
    let err = TrainedRouter::<B>::load(&router_dir, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("router.json") && err.contains("input"),
        "{err}"
    );

    // Training a Flexi run routes with the same check.
    std::fs::write(router_dir.join("router.json"), json).unwrap();
    let err = fit(
        fixture("tiny_tied"),
        flexi_config(),
        Some(router_dir),
        false,
        dir.join("run"),
        &examples,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("chat template"), "{err}");
}

#[test]
fn duplicate_example_ids_are_an_error() {
    let dir = tmp("dup");
    let path = dir.join("dup.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"header": {"dataset": "Tiny", "split": "train"}}"#,
            "\n",
            r#"{"id": "c0", "context": "apple river", "qas": [{"qid": "q0", "question": "a?", "answers": ["apple"]}, {"qid": "q0", "question": "b?", "answers": ["river"]}]}"#,
            "\n"
        ),
    )
    .unwrap();
    let err = workflow::read_examples(&path, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dup.jsonl") && err.contains("\"q0\"") && err.contains("more than once"),
        "{err}"
    );
    // Evaluation refuses them too (predictions and router ranks are per id).
    let device = Default::default();
    let base = TextModel::<B>::load(&fixture("tiny_tied"), false, &device).unwrap();
    let ex = datasets::read_all(&path, &Default::default())
        .unwrap()
        .examples;
    let err = infer::evaluate(
        &base.model,
        &base.text,
        &ex,
        &RankPolicy::Base,
        &settings(),
        "dup",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("q0"), "{err}");
}

#[test]
fn evaluation_uses_the_inference_rank_stream_of_the_schedule() {
    // DyLoRA+ draws one rank per evaluation batch from `inference_ranks(schedule, seed, i, n)`:
    // the stream the unit tests of the schedule check is the one evaluation uses.
    let device = Default::default();
    let mut cfg = TrainConfig {
        method: Method::DyloraPlus { r_max: 8 },
        seed: 11,
        max_len: 64,
        ..Default::default()
    };
    cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into()];
    let dir = tmp("dyplus");
    // A run directory with a checkpoint: one training step.
    let base = TextModel::<B>::load(&fixture("tiny_tied"), false, &device).unwrap();
    let answers: Vec<String> = (0..10).map(|i| WORDS[i].to_string()).collect();
    let data = dir.join("qa.jsonl");
    write_qa(&data, &answers);
    let examples = workflow::read_examples(&data, None).unwrap();
    cfg.max_steps = 1;
    fit(
        fixture("tiny_tied"),
        cfg.clone(),
        None,
        false,
        dir.join("run"),
        &examples,
    )
    .unwrap();
    let run = FlexiRun::<B>::load(&dir.join("run"), &device).unwrap();
    let s = EvalSettings {
        batch_size: 3,
        ..settings()
    };
    let report = run.evaluate(&examples, &s, "tiny").unwrap();
    // Batches run in order of prompt length (stable): the same order here.
    let prompts: Vec<usize> = examples
        .iter()
        .map(|e| base.text.encode_prompt(e, 64, 6).unwrap().len())
        .collect();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| prompts[i]);
    let schedule = RankSchedule::DyLoRAPlus { r_max: 8 };
    let mut want = vec![0; examples.len()];
    for (bi, chunk) in order.chunks(3).enumerate() {
        let r = inference_ranks(&schedule, 11, bi, chunk.len(), None).unwrap();
        for (&i, &r) in chunk.iter().zip(r.as_slice()) {
            want[i] = r;
        }
    }
    let got: Vec<usize> = report.predictions.iter().map(|p| p.rank).collect();
    assert_eq!(got, want);
    assert!(got.iter().any(|&r| r != got[0]), "several draws: {got:?}");
}

#[test]
fn typed_adapter_paths_are_the_checkpoint_keys() {
    // `Adapters::adapters()` names each layer by the module path its tensors have in
    // checkpoints, for Llama and Whisper alike, and finds every adapted layer.
    use flexi_burn::Adapters;
    let device = Default::default();
    let mut cfg = TrainConfig {
        method: Method::Lora { rank: 2 },
        ..Default::default()
    };
    cfg.adapter.targets = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]
        .map(String::from)
        .to_vec();
    let llama = train::lm::load_for_training::<Ad>(&fixture("tiny_tied"), &cfg, &device).unwrap();
    cfg.adapter.targets = ["q_proj", "v_proj", "o_proj", "fc1"]
        .map(String::from)
        .to_vec();
    let whisper =
        train::asr::load_whisper_for_training::<Ad>(&fixture("whisper_tiny"), &cfg, &device)
            .unwrap();
    fn check<M: Adapters<Ad> + burn::module::Module<Ad>>(m: &M, want: usize) {
        let mut from_keys: Vec<String> = train::params::trainable_tensors(m)
            .keys()
            .map(|k| k.rsplit_once('.').unwrap().0.to_string())
            .collect();
        from_keys.dedup();
        let mut typed: Vec<String> = m.adapters().into_iter().map(|(p, _)| p).collect();
        typed.sort();
        from_keys.sort();
        assert_eq!(typed, from_keys);
        assert_eq!(typed.len(), want);
    }
    check(&llama, 2 * 5);
    // Encoder: self-attention q, v, out + fc1; decoder: self and cross q, v, out + fc1.
    check(&whisper, 2 * 4 + 2 * 7);
}

#[test]
fn a_speech_run_loads_on_a_plain_backend_and_transcribes_with_its_rank_stream() {
    // A LibriSpeech-layout set of the fixture's two recordings, fine-tuned one DyLoRA+ step
    // through the workflow; the run then transcribes and evaluates with the schedule's
    // inference stream, batch by batch, and both paths agree.
    let dir = tmp("speech");
    let whisper = fixture("whisper_tiny");
    let chapter = dir.join("data/train/19/198");
    std::fs::create_dir_all(&chapter).unwrap();
    std::fs::copy(
        whisper.join("audio_1s.flac"),
        chapter.join("19-198-0000.flac"),
    )
    .unwrap();
    std::fs::copy(
        whisper.join("audio_1s.wav"),
        chapter.join("19-198-0001.wav"),
    )
    .unwrap();
    std::fs::write(
        chapter.join("19-198.trans.txt"),
        "19-198-0000 A SHORT SOUND\n19-198-0001 ANOTHER SHORT SOUND\n",
    )
    .unwrap();
    let examples = workflow::read_examples(&dir.join("data/train"), None).unwrap();
    assert_eq!(examples.len(), 2);
    let mut cfg = TrainConfig {
        method: Method::DyloraPlus { r_max: 4 },
        batch_size: 2,
        max_steps: 1,
        seed: 3,
        ..Default::default()
    };
    cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into()];
    let device = Default::default();
    let fit = fit(
        whisper.clone(),
        cfg,
        None,
        false,
        dir.join("run"),
        &examples,
    )
    .unwrap();
    assert!(fit.info.speech);
    let run = FlexiRun::<B>::load(&dir.join("run"), &device).unwrap();
    let audios: Vec<(String, Vec<f32>)> = examples
        .iter()
        .map(|e| {
            let p = e.audio.as_ref().unwrap();
            (e.id.clone(), models::whisper::load_audio(p).unwrap())
        })
        .collect();
    let transcribed = run.transcribe(&audios, 1).unwrap();
    let schedule = RankSchedule::DyLoRAPlus { r_max: 4 };
    for (i, (_, rank)) in transcribed.iter().enumerate() {
        let want = inference_ranks(&schedule, 3, i, 1, None).unwrap();
        assert_eq!(*rank, want.as_slice()[0], "utterance {i}");
    }
    let report = run
        .evaluate(
            &examples,
            &EvalSettings {
                batch_size: 1,
                ..settings()
            },
            "speech",
        )
        .unwrap();
    let from_eval: Vec<(String, usize)> = report
        .predictions
        .iter()
        .map(|p| (p.prediction.clone(), p.rank))
        .collect();
    assert_eq!(from_eval, transcribed);
    // A text run cannot transcribe, and a speech run cannot generate.
    assert!(run.generate(&examples, 4).is_err());
}

#[test]
fn a_run_exported_as_a_peft_adapter_gives_the_same_logits() {
    // DyLoRA (alpha / r) exported at its eval rank and at r_max, LoRA with a learned per-rank
    // scale (folded into lora_B) and rsLoRA (`use_rslora`): loaded back through the PEFT
    // reader, the logits equal the run's own at that rank.
    use models::llama::{PaddedBatch, load_llama_with_peft};
    let dir = tmp("export");
    let device = Default::default();
    let answers: Vec<String> = (0..8).map(|i| WORDS[i % 10].to_string()).collect();
    let data = dir.join("qa.jsonl");
    write_qa(&data, &answers);
    let examples = workflow::read_examples(&data, None).unwrap();
    let batch = PaddedBatch::left_pad(&[vec![1, 5, 9, 13, 17], vec![2, 4, 6]], 0);
    let to_vec = |t: burn::tensor::Tensor<B, 3>| t.into_data().to_vec::<f32>().unwrap();
    let cases = [
        (
            "dylora",
            Method::Dylora {
                r_max: 4,
                frozen: false,
                eval_rank: 2,
            },
            flexi_burn::ScalePolicy::AlphaOverRank,
            vec![None, Some(4)],
        ),
        (
            "lora-learned",
            Method::Lora { rank: 4 },
            flexi_burn::ScalePolicy::Learned,
            vec![None],
        ),
        (
            "lora-rslora",
            Method::Lora { rank: 4 },
            flexi_burn::ScalePolicy::AlphaOverSqrtRank,
            vec![None],
        ),
    ];
    for (name, method, scale, ranks) in cases {
        let mut cfg = TrainConfig {
            method,
            batch_size: 4,
            max_steps: 2,
            max_len: 64,
            lr: 2e-2,
            seed: 5,
            ..Default::default()
        };
        cfg.adapter.scale = scale;
        cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into(), "down_proj".into()];
        let run_dir = dir.join(name);
        fit(
            fixture("tiny_tied"),
            cfg,
            None,
            false,
            run_dir.clone(),
            &examples,
        )
        .unwrap();
        let run = FlexiRun::<B>::load(&run_dir, &device).unwrap();
        let train::run::RunModel::Text { model, .. } = &run.model else {
            panic!("a text run")
        };
        for rank in ranks {
            let out = dir.join(format!("{name}-peft-{rank:?}"));
            let e = train::export::export_peft(&run, rank, &out).unwrap();
            assert_eq!(e.layers, 2 * 3);
            let peft: Llama<B> = load_llama_with_peft(fixture("tiny_tied"), &out, &device).unwrap();
            let r = SampleRanks::uniform(2, e.rank);
            let want = to_vec(model.forward(&batch, &r).unwrap());
            let got = to_vec(peft.forward(&batch, &r).unwrap());
            let base = to_vec(model.forward(&batch, &SampleRanks::uniform(2, 0)).unwrap());
            let d = want
                .iter()
                .zip(&got)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let moved = want
                .iter()
                .zip(&base)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            println!(
                "{name} at rank {}: max abs diff {d:.2e} (adapter moves logits by {moved:.2e})",
                e.rank
            );
            assert!(d <= 1e-5, "{name} rank {}: {d}", e.rank);
            assert!(moved > 1e-3, "the adapter changes the logits");
        }
    }
    // AdaLoRA, pruned to different kept counts per layer: exported as a plain LoRA of its
    // kept components at the largest kept count, it equals the run at r_max (E folded in).
    let cfg = TrainConfig {
        method: Method::Adalora(train::adalora::AdaLoraConfig {
            init_r: 6,
            target_r: 2,
            tinit: 1,
            tfinal: 1,
            delta_t: 1,
            ..Default::default()
        }),
        batch_size: 4,
        max_steps: 6,
        max_len: 64,
        lr: 2e-2,
        seed: 5,
        ..Default::default()
    };
    let run_dir = dir.join("adalora");
    fit(
        fixture("tiny_tied"),
        cfg,
        None,
        false,
        run_dir.clone(),
        &examples,
    )
    .unwrap();
    let run = FlexiRun::<B>::load(&run_dir, &device).unwrap();
    let train::run::RunModel::Text { model, .. } = &run.model else {
        panic!("a text run")
    };
    let kept: Vec<usize> = flexi_burn::Adapters::adapters(model.as_ref())
        .iter()
        .map(|(_, l)| {
            let e = l.lora_e.as_ref().unwrap().val().into_data();
            e.to_vec::<f32>()
                .unwrap()
                .iter()
                .filter(|v| **v != 0.0)
                .count()
        })
        .collect();
    let out = dir.join("adalora-peft");
    let e = train::export::export_peft(&run, None, &out).unwrap();
    assert_eq!(
        e.rank,
        *kept.iter().max().unwrap(),
        "kept per layer: {kept:?}"
    );
    assert!(e.rank < 6, "pruning kept fewer than init_r: {kept:?}");
    let peft: Llama<B> = load_llama_with_peft(fixture("tiny_tied"), &out, &device).unwrap();
    let want = to_vec(model.forward(&batch, &SampleRanks::uniform(2, 6)).unwrap());
    let got = to_vec(
        peft.forward(&batch, &SampleRanks::uniform(2, e.rank))
            .unwrap(),
    );
    let d = want
        .iter()
        .zip(&got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "adalora (kept {kept:?}) as LoRA r = {}: max abs diff {d:.2e}",
        e.rank
    );
    assert!(d <= 1e-5, "adalora: {d}");
    // It is exported at its kept rank, not at a chosen one.
    let err = train::export::export_peft(&run, Some(2), &dir.join("bad"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("leave --rank out"), "{err}");

    // A base model or a rank beyond r_max cannot be exported.
    let run = FlexiRun::<B>::load(&dir.join("dylora"), &device).unwrap();
    let err = train::export::export_peft(&run, Some(9), &dir.join("bad"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank 9") && err.contains("1..=4"), "{err}");
}

#[test]
fn a_merged_checkpoint_is_the_run_at_its_rank() {
    // W0 + s(r) B A folded into the base's own safetensors: the merged directory loads as a
    // plain model (no adapter) whose logits are the run's at that rank.
    use models::llama::{AdapterConfig, PaddedBatch, load_llama};
    let dir = tmp("merge");
    let device = Default::default();
    let answers: Vec<String> = (0..8).map(|i| WORDS[i % 10].to_string()).collect();
    let data = dir.join("qa.jsonl");
    write_qa(&data, &answers);
    let examples = workflow::read_examples(&data, None).unwrap();
    let mut cfg = TrainConfig {
        method: Method::DyloraPlus { r_max: 4 },
        batch_size: 4,
        max_steps: 2,
        max_len: 64,
        lr: 2e-2,
        seed: 8,
        ..Default::default()
    };
    cfg.adapter.targets = vec!["q_proj".into(), "o_proj".into(), "up_proj".into()];
    fit(
        fixture("tiny_tied"),
        cfg,
        None,
        false,
        dir.join("run"),
        &examples,
    )
    .unwrap();
    let run = FlexiRun::<B>::load(&dir.join("run"), &device).unwrap();
    let train::run::RunModel::Text { model, .. } = &run.model else {
        panic!("a text run")
    };
    let batch = PaddedBatch::left_pad(&[vec![3, 8, 11, 40, 2], vec![7, 9]], 0);
    let to_vec = |t: burn::tensor::Tensor<B, 3>| t.into_data().to_vec::<f32>().unwrap();
    for rank in [3, 4] {
        let out = dir.join(format!("merged-{rank}"));
        let m = train::export::merge_hf(&run, Some(rank), &out).unwrap();
        assert_eq!((m.rank, m.replaced), (rank, 2 * 3));
        assert!(out.join("config.json").is_file() && out.join("tokenizer.json").is_file());
        let merged: Llama<B> = load_llama(&out, &AdapterConfig::none(), &device).unwrap();
        let want = to_vec(
            model
                .forward(&batch, &SampleRanks::uniform(2, rank))
                .unwrap(),
        );
        let got = to_vec(merged.forward(&batch, &SampleRanks::uniform(2, 0)).unwrap());
        let d = want
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("merged at rank {rank}: max abs logit diff {d:.2e}");
        assert!(d <= 1e-5, "rank {rank}: {d}");
    }
    let err = train::export::merge_hf(&run, Some(5), &dir.join("bad"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank 5"), "{err}");

    // A bf16 base stays bf16: the merged weights are written in the tensor's own dtype.
    let bf16 = dir.join("bf16-base");
    std::fs::create_dir_all(&bf16).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_tied").join("bf16").join(f), bf16.join(f)).unwrap();
    }
    std::fs::copy(
        fixture("tiny_tied").join("tokenizer.json"),
        bf16.join("tokenizer.json"),
    )
    .unwrap();
    let mut cfg = TrainConfig {
        method: Method::Lora { rank: 2 },
        batch_size: 4,
        max_steps: 1,
        max_len: 64,
        lr: 2e-2,
        ..Default::default()
    };
    cfg.adapter.targets = vec!["v_proj".into()];
    fit(
        bf16.clone(),
        cfg,
        None,
        false,
        dir.join("run-bf16"),
        &examples,
    )
    .unwrap();
    let run = FlexiRun::<B>::load(&dir.join("run-bf16"), &device).unwrap();
    let out = dir.join("merged-bf16");
    let m = train::export::merge_hf(&run, None, &out).unwrap();
    assert_eq!((m.rank, m.replaced), (2, 2));
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("model.layers.1.self_attn.v_proj.weight").unwrap();
    assert_eq!(v.dtype(), safetensors::Dtype::BF16);
    let train::run::RunModel::Text { model, .. } = &run.model else {
        panic!("a text run")
    };
    let merged: Llama<B> = load_llama(&out, &AdapterConfig::none(), &device).unwrap();
    let want = to_vec(model.forward(&batch, &SampleRanks::uniform(2, 2)).unwrap());
    let got = to_vec(merged.forward(&batch, &SampleRanks::uniform(2, 0)).unwrap());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = want
        .iter()
        .zip(&got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("bf16 merge: max abs logit diff {d:.2e} (logit scale {scale:.2})");
    // One bf16 rounding of W0 + s B A (8 mantissa bits) per merged weight.
    assert!(d <= 2e-2 * scale.max(1.0), "{d}");
}

#[test]
fn a_tokenizer_of_another_model_is_refused_when_the_model_loads() {
    // tiny_tied's weights (vocab_size 320) with the tokenizer of a larger vocabulary: refused
    // when the model is loaded, naming the tokenizer file and both sizes, instead of an id
    // out of range in the first forward pass.
    let dir = tmp("other-tokenizer");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_tied").join(f), dir.join(f)).unwrap();
    }
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_tied").join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    let vocab = v["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len();
    for i in 0..100 {
        vocab.insert(format!("extra{i}"), (n + i).into());
    }
    std::fs::write(dir.join("tokenizer.json"), v.to_string()).unwrap();
    let Err(err) = TextModel::<B>::load(&dir, false, &Default::default()) else {
        panic!("a tokenizer of 400 tokens for a model of 320 loaded");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "tokenizer {}: has token ids up to 399, but the model's vocab_size is 320: it is the \
             tokenizer of another model",
            dir.join("tokenizer.json").display()
        )
    );
}

#[test]
fn a_full_disk_while_writing_labels_keeps_the_previous_ones() {
    use datasets::labels::{LabelRule, LabeledSample};
    let dir = tmp("labels-full-disk");
    let sample = |id: &str, score: f64, label: &str| -> LabeledSample {
        serde_json::from_value(serde_json::json!({"id": id, "score": score, "label": label}))
            .unwrap()
    };
    let labels = |samples: Vec<LabeledSample>| workflow::Labels {
        report: infer::EvalReport {
            tables: vec![],
            mean_rank: 0.0,
            activated_params: 0.0,
            predictions: vec![],
            truncated: 0,
            max_new_tokens: 0,
        },
        balanced: samples.clone(),
        labels: samples,
        rule: LabelRule::AtLeast(0.5),
    };
    labels(vec![sample("a", 1.0, "easy"), sample("b", 0.0, "hard")])
        .write(&dir)
        .unwrap();
    let before = std::fs::read(dir.join("labels.jsonl")).unwrap();
    // The next labels.jsonl goes through labels.jsonl.tmp, here /dev/full (ENOSPC).
    std::os::unix::fs::symlink("/dev/full", dir.join("labels.jsonl.tmp")).unwrap();
    let err = labels(vec![sample("c", 1.0, "easy")])
        .write(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}: cannot write: No space left on device",
            dir.join("labels.jsonl").display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("labels.jsonl")).unwrap(), before);
}

#[test]
fn activated_parameters_of_full_fine_tuning_and_adalora_count_what_is_used() {
    // Full fine-tuning has no adapter but uses every weight it trained for every input: its
    // report counts them all (it used to say 0). A pruned AdaLoRA counts its kept components,
    // not init_r.
    let dir = tmp("activated");
    let answers: Vec<String> = (0..8).map(|i| WORDS[i % 10].to_string()).collect();
    let data = dir.join("qa.jsonl");
    write_qa(&data, &answers);
    let examples = workflow::read_examples(&data, None).unwrap();
    let device = Default::default();
    let mut full = TrainConfig {
        method: Method::Full,
        batch_size: 4,
        max_steps: 1,
        max_len: 64,
        ..Default::default()
    };
    full.seed = 3;
    fit(
        fixture("tiny_tied"),
        full,
        None,
        false,
        dir.join("full"),
        &examples,
    )
    .unwrap();
    let run = FlexiRun::<B>::load(&dir.join("full"), &device).unwrap();
    let info = run.info.clone().unwrap();
    assert!(info.trainable_params > 10_000, "{}", info.trainable_params);
    let report = run.evaluate(&examples, &settings(), "full").unwrap();
    assert_eq!(report.activated_params, info.trainable_params as f64);

    let ada = TrainConfig {
        method: Method::Adalora(train::adalora::AdaLoraConfig {
            init_r: 6,
            target_r: 2,
            tinit: 1,
            tfinal: 1,
            delta_t: 1,
            ..Default::default()
        }),
        batch_size: 4,
        max_steps: 6,
        max_len: 64,
        lr: 2e-2,
        seed: 5,
        ..Default::default()
    };
    fit(
        fixture("tiny_tied"),
        ada,
        None,
        false,
        dir.join("ada"),
        &examples,
    )
    .unwrap();
    let run = FlexiRun::<B>::load(&dir.join("ada"), &device).unwrap();
    let train::run::RunModel::Text { model, .. } = &run.model else {
        panic!("a text run")
    };
    let layers = flexi_burn::Adapters::adapters(model.as_ref());
    let kept: usize = layers
        .iter()
        .map(|(_, l)| {
            let e = l.lora_e.as_ref().unwrap().val().into_data();
            let live = e
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .filter(|v| **v != 0.0)
                .count();
            live * (l.d_input() + l.d_output())
        })
        .sum();
    let per_rank: usize = layers.iter().map(|(_, l)| l.d_input() + l.d_output()).sum();
    let report = run.evaluate(&examples, &settings(), "ada").unwrap();
    assert_eq!(report.activated_params, kept as f64);
    assert!(
        report.activated_params < (6 * per_rank) as f64,
        "below init_r's count"
    );
}

#[test]
fn answer_cross_entropy_labels_split_at_the_median_and_equal_the_training_loss() {
    // `label --score answer-nll`: each example's value is the loss training computes on that
    // example alone (the same encoding, `causal_lm_loss_from_hidden` on a batch of one), so
    // it does not depend on the batch it was computed in (left padding); the token-weighted
    // mean over a batch is the batch's training loss; the median splits the set in half.
    let device = Default::default();
    let dir = tmp("answer-nll");
    let base = TextModel::<B>::load(&fixture("tiny_tied"), true, &device).unwrap();
    let answers: Vec<String> = (0..10)
        .map(|i| WORDS[(3 * i) % 10].repeat(1 + i % 3))
        .collect();
    let path = dir.join("qa.jsonl");
    write_qa(&path, &answers);
    let examples = workflow::read_examples(&path, None).unwrap();
    let batched = workflow::answer_nll(&base, &examples, 64, 4).unwrap();
    let alone = workflow::answer_nll(&base, &examples, 64, 1).unwrap();
    for (a, b) in batched.iter().zip(&alone) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        assert!(*a > 0.0 && a.is_finite());
    }
    // The first batch of four: its training loss is the token-weighted mean of its rows.
    let encoded: Vec<_> = examples[..4]
        .iter()
        .map(|e| base.text.encode_train(e, 64).unwrap())
        .collect();
    let refs: Vec<_> = encoded.iter().collect();
    let batch = train::lm::LmBatch::from_collated(&datasets::batch::collate(
        &refs,
        base.text.pad_id(),
        datasets::batch::PadSide::Left,
    ));
    let hidden = base
        .model
        .hidden(&batch.batch, &SampleRanks::uniform(4, 0))
        .unwrap();
    let loss: f64 = models::llama::causal_lm_loss_from_hidden(
        &base.model,
        hidden,
        &batch.labels,
        train::lm::IGNORE_INDEX,
    )
    .unwrap()
    .into_scalar()
    .into();
    let s = batch.batch.seq_len();
    let counts: Vec<f64> = (0..4)
        .map(|i| train::lm::shifted_targets(&batch.labels[i * s..(i + 1) * s], s) as f64)
        .collect();
    let weighted: f64 =
        (0..4).map(|i| batched[i] * counts[i]).sum::<f64>() / counts.iter().sum::<f64>();
    assert!((weighted - loss).abs() < 1e-5, "{weighted} vs {loss}");
    // Labels: easy at most the median (the lower middle of 10 values), 5 and 5, balanced.
    let labels = workflow::label_by_answer_nll(&base, &examples, 64, 4, None, 3).unwrap();
    let mut sorted = batched.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(labels.rule.threshold(), sorted[4]);
    let c = labels.counts();
    assert_eq!((c.easy, c.hard), (5, 5));
    assert_eq!(labels.balanced.len(), 10);
    assert_eq!(labels.report.max_new_tokens, 0);
    assert_eq!(labels.report.predictions[7].score, batched[7]);
}

/// A run trained with bf16 frozen weights, loaded for evaluation in f32, holds the base
/// checkpoint's own f32 weights (not the bf16 ones widened back), and in its training
/// precision the bf16 ones; the adapter is the same f32 checkpoint either way.
#[test]
fn a_half_precision_run_loads_in_f32_with_the_checkpoints_own_weights() {
    use burn::tensor::DType;
    let dir = tmp("half-run");
    let device = Default::default();
    let answers: Vec<String> = (0..8).map(|i| WORDS[i % 10].to_string()).collect();
    let data = dir.join("qa.jsonl");
    write_qa(&data, &answers);
    let examples = workflow::read_examples(&data, None).unwrap();
    let config = TrainConfig {
        method: Method::Lora { rank: 4 },
        batch_size: 4,
        max_steps: 2,
        max_len: 64,
        lr: 1e-2,
        seed: 7,
        precision: flexi_burn::Precision::Bf16,
        ..Default::default()
    };
    let out = dir.join("run");
    fit(
        fixture("tiny_tied"),
        config,
        None,
        true,
        out.clone(),
        &examples,
    )
    .unwrap();

    let base = TextModel::<B>::load(&fixture("tiny_tied"), true, &device).unwrap();
    let host =
        |t: burn::tensor::Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let want = host(base.model.embed_tokens.weight.val());
    let text_model = |run: FlexiRun<B>| match run.model {
        train::run::RunModel::Text { model, .. } => *model,
        _ => panic!("a text run"),
    };

    let trained = FlexiRun::<B>::load(&out, &device).unwrap();
    assert_eq!(trained.trained_precision(), flexi_burn::Precision::Bf16);
    let m16 = text_model(trained);
    assert_eq!(m16.embed_tokens.weight.val().dtype(), DType::BF16);
    let rounded = host(m16.embed_tokens.weight.val());
    assert_ne!(
        rounded, want,
        "bf16 storage rounds the tiny model's weights"
    );

    let f32_run = FlexiRun::<B>::load_in(&out, Some(flexi_burn::Precision::F32), &device).unwrap();
    // The run still says what it was trained in.
    assert_eq!(f32_run.trained_precision(), flexi_burn::Precision::Bf16);
    let m32 = text_model(f32_run);
    assert_eq!(m32.embed_tokens.weight.val().dtype(), DType::F32);
    assert_eq!(host(m32.embed_tokens.weight.val()), want);
    let q = |m: &Llama<B>| match &m.layers[0].self_attn.q_proj {
        models::proj::Proj::Adapted(l) => (
            host(l.base.weight.val()),
            host(l.lora_a.val()),
            host(l.lora_b.val()),
        ),
        _ => panic!("q_proj is adapted"),
    };
    let (base32, a32, b32) = q(&m32);
    let (base16, a16, b16) = q(&m16);
    let want_q = match &base.model.layers[0].self_attn.q_proj {
        models::proj::Proj::Plain(l) => host(l.weight.val()),
        _ => panic!("the base model has no adapter"),
    };
    assert_eq!(base32, want_q);
    assert_ne!(base16, want_q);
    assert_eq!(
        (a32, b32),
        (a16, b16),
        "the trained adapter is the same f32 checkpoint"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
