//! Flexi-LoRA on speech through the library, on the tiny Whisper fixture: label (the base
//! model's WER) -> audio router -> fit (per-utterance ranks) -> FlexiRun::load -> evaluate and
//! transcribe with the router's ranks; audio router features ignore padding; and the bad
//! inputs of a speech run are clear errors naming the file.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use datasets::Example;
use infer::router::{AudioFeature, RouterInput, RouterMeta, TextInput, save_router};
use infer::{EvalSettings, TrainedRouter};
use train::workflow::{self, BaseModel, FitSpec, RouterSpec, SpeechModel};
use train::{FlexiRun, Method, TrainConfig};

type B = Flex;
type Ad = Autodiff<Flex>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-speech-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// The fixture's recording mixed with a tone: low tones on even utterances, high on odd ones,
/// so the two halves differ in their audio.
fn utterance(i: usize) -> Vec<f32> {
    let voice = models::whisper::load_audio(fixture("whisper_tiny").join("audio_1s.wav")).unwrap();
    let f = if i.is_multiple_of(2) { 220.0 } else { 3_300.0 } + 15.0 * i as f32;
    voice
        .iter()
        .enumerate()
        .map(|(t, v)| 0.6 * v + 0.3 * (2.0 * std::f32::consts::PI * f * t as f32 / 16_000.0).sin())
        .collect()
}

/// Writes a LibriSpeech chapter `19/198` of `audios` with `transcripts`.
fn write_chapter(root: &Path, audios: &[Vec<f32>], transcripts: &[String]) -> PathBuf {
    let chapter = root.join("train/19/198");
    std::fs::create_dir_all(&chapter).unwrap();
    let mut trans = String::new();
    for (i, (a, t)) in audios.iter().zip(transcripts).enumerate() {
        write_wav(&chapter.join(format!("19-198-{i:04}.wav")), a);
        trans.push_str(&format!("19-198-{i:04} {t}\n"));
    }
    std::fs::write(chapter.join("19-198.trans.txt"), trans).unwrap();
    root.join("train")
}

fn settings() -> EvalSettings {
    EvalSettings {
        batch_size: 4,
        max_new_tokens: 8,
        max_len: 64,
        progress: false,
    }
}

fn fit(
    model: PathBuf,
    config: TrainConfig,
    router: Option<PathBuf>,
    out: PathBuf,
    examples: &[Example],
) -> train::Result<workflow::Fitted> {
    let spec = FitSpec {
        init_adapter: None,
        allow_upcast: false,
        model,
        config,
        router,
        chat: false,
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
    let mut cfg = TrainConfig {
        method: Method::Flexi {
            class_ranks: "2,8".into(),
        },
        batch_size: 4,
        max_steps: 2,
        lr: 1e-2,
        seed: 7,
        ..Default::default()
    };
    cfg.adapter.targets = ["q_proj", "v_proj", "o_proj", "fc1"]
        .map(String::from)
        .to_vec();
    cfg
}

fn router_spec() -> RouterSpec {
    RouterSpec {
        text_layer: None,
        class_ranks: "2,8".parse().unwrap(),
        training: train::router::RouterTraining {
            epochs: 200,
            lr: 1e-2,
            seed: 5,
            ..Default::default()
        },
        max_len: 64,
        audio_feature: AudioFeature::Encoder,
    }
}

#[test]
fn label_router_fit_and_evaluate_a_speech_flexi_run_end_to_end() {
    let dir = tmp("e2e");
    let device = Default::default();
    let whisper = fixture("whisper_tiny");
    let base = BaseModel::<B>::from(SpeechModel::load(&whisper, &device).unwrap());
    let audios: Vec<Vec<f32>> = (0..8).map(utterance).collect();

    // Plant the labels: even utterances are transcribed as the base model hears them (WER 0),
    // odd ones with words it never says (the tiny model's output is noise, so no fixed text
    // would do).
    let placeholder = vec!["PLACEHOLDER".to_string(); 8];
    let data = write_chapter(&dir.join("probe"), &audios, &placeholder);
    let probe = workflow::read_examples(&data, None).unwrap();
    let heard = base.evaluate(&probe, &settings(), "probe").unwrap();
    let transcripts: Vec<String> = heard
        .predictions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = datasets::speech::transcript(&p.prediction);
            assert!(!t.is_empty(), "utterance {i}: the base model says nothing");
            if i % 2 == 0 {
                t
            } else {
                "ZEBRA QUARTZ JOLLY".into()
            }
        })
        .collect();
    let data = write_chapter(&dir.join("data"), &audios, &transcripts);
    let examples = workflow::read_examples(&data, None).unwrap();

    // 1. label: WER 0 on the even utterances; the default threshold (the median WER) makes
    // exactly them easy.
    let labels = workflow::label(&base, &examples, &settings(), None, 3).unwrap();
    for (i, l) in labels.labels.iter().enumerate() {
        assert_eq!(l.label.class(), i % 2, "utterance {i}: {l:?}");
    }
    assert_eq!(labels.rule.threshold(), 0.0);
    assert_eq!(labels.balanced.len(), 8);

    // 2. an audio router over the frozen encoder, saved with its input definition.
    let fitted =
        workflow::fit_router::<Ad>(&base, &examples, &labels.balanced, &router_spec(), &device)
            .unwrap();
    let RouterInput::Audio(input) = &fitted.meta.input else {
        panic!("an audio router: {:?}", fitted.meta.input);
    };
    assert_eq!(
        (input.feature, input.width, input.n_mels),
        (AudioFeature::Encoder, 64, 80)
    );
    assert!(
        fitted.meta.train_accuracy >= 0.75,
        "{}",
        fitted.meta.train_accuracy
    );
    let router_dir = dir.join("router");
    fitted.save(&router_dir).unwrap();
    let router = TrainedRouter::<B>::load(&router_dir, &device).unwrap();
    let named: Vec<(String, Vec<f32>)> = audios
        .iter()
        .enumerate()
        .map(|(i, a)| (i.to_string(), a.clone()))
        .collect();
    let speech = base.as_speech().unwrap();
    let routed = router.route_audio(&speech.model, &named).unwrap();
    assert!(routed.iter().all(|r| [2, 8].contains(r)), "{routed:?}");

    // 3. fit: every utterance trains at its router rank.
    let out = dir.join("run");
    let fit = fit(
        whisper.clone(),
        flexi_config(),
        Some(router_dir.clone()),
        out.clone(),
        &examples,
    )
    .unwrap();
    assert!(fit.info.speech);
    assert_eq!(fit.summary.ranks, routed, "training ranks are the router's");

    // 4. the run on the plain backend: evaluation and transcription at the router's ranks.
    let run = FlexiRun::<B>::load(&out, &device).unwrap();
    let report = run.evaluate(&examples, &settings(), "speech").unwrap();
    let eval_ranks: Vec<usize> = report.predictions.iter().map(|p| p.rank).collect();
    assert_eq!(eval_ranks, routed);
    let mean = routed.iter().sum::<usize>() as f64 / 8.0;
    assert!((report.mean_rank - mean).abs() < 1e-12);
    let transcribed = run.transcribe(&named, 3).unwrap();
    let from_eval: Vec<(String, usize)> = report
        .predictions
        .iter()
        .map(|p| (p.prediction.clone(), p.rank))
        .collect();
    assert_eq!(transcribed, from_eval);

    // 5. the Flexi-LoRA adapter format: PEFT's LoRA at r_max (Whisper module names) with the
    // audio router; reloaded onto the base it routes and transcribes as the run does.
    let flexi = dir.join("flexi_adapter");
    let e = train::export::export_flexi(&run, &flexi).unwrap();
    assert_eq!(e.rank, 8);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(flexi.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["flexi_lora"]["class_ranks"], "(2,8)");
    let reloaded = FlexiRun::<B>::from_flexi_adapter(&whisper, &flexi, &device).unwrap();
    assert!(reloaded.info.as_ref().unwrap().speech);
    assert_eq!(reloaded.transcribe(&named, 3).unwrap(), transcribed);
}

#[test]
fn audio_router_features_ignore_padding() {
    let device = Default::default();
    let speech = SpeechModel::<B>::load(&fixture("whisper_tiny"), &device).unwrap();
    let x = utterance(1);
    let mut padded = x.clone();
    padded.extend(std::iter::repeat_n(0.0, 16_000 + 77));
    let other = utterance(2);
    for feature in AudioFeature::ALL {
        let RouterInput::Audio(input) = speech.router_input(feature) else {
            unreachable!()
        };
        let alone = input
            .features(&speech.model, &[("x".into(), x.clone())])
            .unwrap();
        let batch = input
            .features(
                &speech.model,
                &[
                    ("other".into(), other.clone()),
                    ("padded".into(), padded.clone()),
                    ("x".into(), x.clone()),
                ],
            )
            .unwrap();
        assert_eq!(alone[0].len(), input.width);
        for got in [&batch[1], &batch[2]] {
            let diff = alone[0]
                .iter()
                .zip(got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-6, "{feature}: {diff}");
        }
        // Another utterance pools to another vector.
        assert!(
            alone[0]
                .iter()
                .zip(&batch[0])
                .any(|(a, b)| (a - b).abs() > 1e-4)
        );
    }
}

#[test]
fn bad_speech_inputs_are_clear_errors_naming_the_file() {
    let dir = tmp("bad");
    let device = Default::default();
    let whisper = fixture("whisper_tiny");
    let base = BaseModel::<B>::from(SpeechModel::load(&whisper, &device).unwrap());
    let good = utterance(0);
    let labels_dir = dir.join("labels");
    std::fs::create_dir_all(&labels_dir).unwrap();
    std::fs::write(labels_dir.join("labels.jsonl"), "kept\n").unwrap();

    // An unreadable file, an empty (0-sample) file, a silent file: label and fit both name it.
    type Make = Box<dyn Fn(&Path)>;
    let cases: [(&str, Make, &str); 3] = [
        (
            "corrupt",
            Box::new(|p: &Path| std::fs::write(p, b"RIFF....not a wav").unwrap()),
            "",
        ),
        (
            "empty",
            Box::new(|p: &Path| write_wav(p, &[])),
            "no samples",
        ),
        (
            "silent",
            Box::new(|p: &Path| write_wav(p, &vec![0.0; 16_000])),
            "silent",
        ),
    ];
    for (name, make, says) in cases {
        let data = write_chapter(
            &dir.join(name),
            &[good.clone(), good.clone()],
            &["A B".into(), "C D".into()],
        );
        let bad = data.join("19/198/19-198-0001.wav");
        make(&bad);
        let examples = workflow::read_examples(&data, None).unwrap();
        let e = workflow::label(&base, &examples, &settings(), None, 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("19-198-0001.wav") && e.contains(says),
            "{name}: {e}"
        );
        let out = dir.join(format!("run-{name}"));
        let mut cfg = flexi_config();
        cfg.method = Method::Lora { rank: 2 };
        let e = fit(whisper.clone(), cfg, None, out.clone(), &examples)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("19-198-0001.wav") && e.contains(says),
            "{name}: {e}"
        );
        assert!(!out.join("run.json").exists());
    }
    // Nothing already written is lost.
    assert_eq!(
        std::fs::read_to_string(labels_dir.join("labels.jsonl")).unwrap(),
        "kept\n"
    );

    // A transcript that does not match the audio files.
    let data = write_chapter(
        &dir.join("stray"),
        std::slice::from_ref(&good),
        &["A B".into()],
    );
    write_wav(&data.join("19/198/19-198-0009.wav"), &good);
    let e = workflow::read_examples(&data, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("19-198-0009.wav") && e.contains("19-198.trans.txt"),
        "{e}"
    );

    // A router trained for text, given to a Whisper run, and the reverse.
    let data = write_chapter(
        &dir.join("ok"),
        &[good.clone(), utterance(1)],
        &["A B".into(), "C D".into()],
    );
    let examples = workflow::read_examples(&data, None).unwrap();
    let text_router = dir.join("text-router");
    let router = flexi_burn::RouterConfig::new(64)
        .with_hidden(Some(8))
        .init::<B>(&device);
    let meta = RouterMeta {
        input: RouterInput::Text(TextInput {
            model: "tiny_tied".into(),
            d_model: 64,
            vocab_size: 256,
            max_len: 48,
            chat_template: None,
            layer: None,
        }),
        num_classes: 2,
        class_ranks: "(2,8)".into(),
        train_accuracy: 1.0,
        heldout_accuracy: None,
        training: train::router::RouterTraining {
            hidden: Some(8),
            ..Default::default()
        },
    };
    save_router(&router, &meta, &text_router).unwrap();
    let out = dir.join("run-text-router");
    let e = fit(
        whisper.clone(),
        flexi_config(),
        Some(text_router),
        out.clone(),
        &examples,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("modality") && e.contains("text") && e.contains("audio"),
        "{e}"
    );
    assert!(!out.join("run.json").exists());

    let audio_router = dir.join("audio-router");
    let labels: Vec<datasets::labels::LabeledSample> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::from_value(serde_json::json!({
                "id": e.id, "score": i as f64, "label": if i == 0 { "easy" } else { "hard" }
            }))
            .unwrap()
        })
        .collect();
    workflow::fit_router::<Ad>(&base, &examples, &labels, &router_spec(), &device)
        .unwrap()
        .save(&audio_router)
        .unwrap();
    let qa = dir.join("qa.jsonl");
    std::fs::write(
        &qa,
        r#"{"header": {"dataset": "Tiny", "split": "train"}}
{"id": "c0", "context": "apple river stone", "qas": [{"qid": "q0", "question": "Which word?", "answers": ["river"]}]}
"#,
    )
    .unwrap();
    let text_examples = workflow::read_examples(&qa, None).unwrap();
    let mut cfg = flexi_config();
    cfg.max_len = 64;
    cfg.adapter.targets = TrainConfig::default().adapter.targets;
    let e = fit(
        fixture("tiny_tied"),
        cfg,
        Some(audio_router),
        dir.join("run-audio-router"),
        &text_examples,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("modality") && e.contains("audio") && e.contains("text"),
        "{e}"
    );
}
