//! The tiny random Whisper fixture (`tools/make_whisper_fixtures.py`) against transformers
//! 4.57.6: encoder output, decoder logits, greedy ids; KV-cache decoding against recomputation
//! with per-sample Flexi-LoRA ranks; checkpoint, tokenizer and transcription bad input.

mod common;

use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::module::Param;
use burn::tensor::{Distribution, Tensor};
use flexi_burn::{FlexiLinear, SampleRanks};
use models::format::FormatError;
use models::whisper::{
    GreedyConfig, LogMel, LongForm, MelExtractor, N_SAMPLES, Padding, TimestampRules,
    TranscribeOptions, Whisper, WhisperAdapter, WhisperConfig, WhisperError, WhisperTokenizer,
    greedy_decode, greedy_decode_with_timestamps, join_segments, load_audio, load_whisper,
    split_windows, to_f32_vec, transcribe, transcribe_segments, transcribe_with_ranks,
};
use safetensors::{Dtype, SafeTensors};

type B = Flex;

fn dir() -> PathBuf {
    common::fixture("whisper_tiny")
}

fn refs() -> HashMap<String, common::RefTensor> {
    common::reference(dir().join("reference.safetensors"))
}

/// The analytic test signal (see `whisper_mel.rs` and the fixture script).
fn test_signal(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f64 / 16000.0;
            let env = 0.5 * (1.0 + (2.0 * PI * 0.7 * t).sin());
            let mut x = 0.3 * (2.0 * PI * 440.0 * t).sin();
            x += 0.2 * env * (2.0 * PI * 1234.5 * t + 0.3).sin();
            x += 0.1 * (2.0 * PI * (200.0 * t + 25.0 * t * t)).sin();
            x += 0.05 * (2.0 * PI * 3571.0 * t).sin() * (2.0 * PI * 3.0 * t).cos();
            x as f32
        })
        .collect()
}

/// The two fixture inputs: the WAV and 30 s of the test signal, as 30 s spectrograms.
fn mels() -> Vec<LogMel> {
    let ex = MelExtractor::new(80);
    let wav = load_audio(dir().join("audio_1s.wav")).unwrap();
    vec![
        ex.log_mel(&wav, Padding::ThirtySeconds, "wav").unwrap(),
        ex.log_mel(&test_signal(N_SAMPLES), Padding::ThirtySeconds, "sig")
            .unwrap(),
    ]
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// prompt ++ greedy ids of the reference (`-1` padding -> `<|endoftext|>`), per sample.
fn reference_sequences(r: &HashMap<String, common::RefTensor>, eot: u32) -> Vec<Vec<u32>> {
    let prompts = common::rows(&r["prompt"]);
    let greedy = common::rows(&r["greedy"]);
    prompts
        .into_iter()
        .zip(greedy)
        .map(|(p, g)| {
            p.into_iter()
                .chain(g.into_iter().map(|t| if t < 0 { eot as i64 } else { t }))
                .map(|t| t as u32)
                .collect()
        })
        .collect()
}

/// Generated ids of the reference, without `<|endoftext|>` and padding.
fn reference_generated(r: &HashMap<String, common::RefTensor>, eot: u32) -> Vec<Vec<u32>> {
    common::rows(&r["greedy"])
        .into_iter()
        .map(|g| {
            g.into_iter()
                .take_while(|&t| t >= 0 && t != eot as i64)
                .map(|t| t as u32)
                .collect()
        })
        .collect()
}

fn logits_of(
    model: &Whisper<B>,
    mels: &[LogMel],
    seqs: &[Vec<u32>],
    ranks: &SampleRanks,
) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let enc = model
        .encode(model.mel_batch(mels, &device).unwrap(), ranks)
        .unwrap();
    let ids = model.ids_tensor(seqs, &device).unwrap();
    let mut cache = model.new_cache();
    let logits = model.decode(ids, &enc, &mut cache, ranks).unwrap();
    (to_f32_vec(enc).unwrap(), to_f32_vec(logits).unwrap())
}

#[test]
fn encoder_and_logits_match_transformers() {
    let r = refs();
    let device = Default::default();
    let model = load_whisper::<B>(dir(), &WhisperAdapter::none(), &device).unwrap();
    let eot = model.config.eos_token_id;
    let seqs = reference_sequences(&r, eot);
    let mels = mels();
    let (enc, logits) = logits_of(&model, &mels, &seqs, &SampleRanks::new(vec![0, 0]));

    let want_enc = &r["encoder_out"];
    assert_eq!(want_enc.shape, vec![1500, 64]);
    let d_enc = max_abs_diff(&enc[..1500 * 64], &want_enc.f);
    let want_logits = &r["logits"];
    assert_eq!(want_logits.shape, vec![2, seqs[0].len(), 311]);
    let d_logits = max_abs_diff(&logits, &want_logits.f);
    println!("encoder_out max abs diff {d_enc:e}; logits max abs diff {d_logits:e}");
    assert!(d_enc <= 1e-4, "encoder_out max abs diff {d_enc}");
    assert!(d_logits <= 1e-4, "logits max abs diff {d_logits}");

    // Adapters on all six projections of both stacks, freshly initialised (B = 0): any
    // per-sample rank gives the base model.
    let adapted = load_whisper::<B>(dir(), &WhisperAdapter::all(4, 8.0), &device).unwrap();
    let (_, logits_r) = logits_of(&adapted, &mels, &seqs, &SampleRanks::new(vec![3, 1]));
    let d = max_abs_diff(&logits_r, &want_logits.f);
    println!("with zero-initialised adapters at ranks [3, 1]: max abs diff {d:e}");
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn greedy_ids_match_transformers() {
    let r = refs();
    let device = Default::default();
    let model = load_whisper::<B>(dir(), &WhisperAdapter::none(), &device).unwrap();
    let tok = WhisperTokenizer::from_dir(dir()).unwrap();
    let eot = model.config.eos_token_id;
    let prompt = tok.prompt(model.config.is_multilingual, None, Default::default());
    let prompt = prompt.unwrap();
    let prompts = common::rows(&r["prompt"]);
    assert_eq!(
        prompt,
        prompts[0].iter().map(|&t| t as u32).collect::<Vec<_>>()
    );
    let ranks = SampleRanks::new(vec![0, 0]);
    let enc = model
        .encode(model.mel_batch(&mels(), &device).unwrap(), &ranks)
        .unwrap();
    let want = reference_generated(&r, eot);
    let max_new = r["greedy"].shape[1];
    for use_cache in [true, false] {
        let config = GreedyConfig {
            use_cache,
            ..GreedyConfig::from_model(&model, max_new)
        };
        let got = greedy_decode(
            &model,
            &enc,
            &[prompt.clone(), prompt.clone()],
            &ranks,
            &config,
        )
        .unwrap();
        assert_eq!(got, want, "use_cache = {use_cache}");
    }
    // Stopping: take a token the random model emits as the end token. Sample 1 generates
    // [270, 270, 10, 1, ...]: with end token 1 it stops after three tokens while sample 0
    // (all 10s) runs on; with end token 10 sample 0 stops at once and sample 1 after two.
    assert_eq!(want[1][..4], [270, 270, 10, 1]);
    assert!(want[0].iter().all(|&t| t == 10));
    for (end, expect) in [
        (1u32, vec![want[0].clone(), vec![270, 270, 10]]),
        (10, vec![vec![], vec![270, 270]]),
    ] {
        let config = GreedyConfig {
            eos_token_id: end,
            ..GreedyConfig::from_model(&model, max_new)
        };
        let got = greedy_decode(
            &model,
            &enc,
            &[prompt.clone(), prompt.clone()],
            &ranks,
            &config,
        )
        .unwrap();
        assert_eq!(got, expect, "end token {end}");
    }
    // Suppression is active: without it the first steps choose differently.
    let free = GreedyConfig {
        suppress_tokens: vec![],
        begin_suppress_tokens: vec![],
        ..GreedyConfig::from_model(&model, max_new)
    };
    let got = greedy_decode(&model, &enc, &[prompt.clone(), prompt], &ranks, &free).unwrap();
    assert_ne!(got, want);
}

/// Every adapted projection of the model.
fn adapters(model: &mut Whisper<B>) -> Vec<&mut FlexiLinear<B>> {
    let mut out = Vec::new();
    for l in model.encoder.layers.iter_mut() {
        let a = &mut l.self_attn;
        for p in [
            &mut a.q_proj,
            &mut a.k_proj,
            &mut a.v_proj,
            &mut a.out_proj,
            &mut l.fc1,
            &mut l.fc2,
        ] {
            out.extend(p.adapter_mut());
        }
    }
    for l in model.decoder.layers.iter_mut() {
        let (s, c) = (&mut l.self_attn, &mut l.encoder_attn);
        for p in [
            &mut s.q_proj,
            &mut s.k_proj,
            &mut s.v_proj,
            &mut s.out_proj,
            &mut c.q_proj,
            &mut c.k_proj,
            &mut c.v_proj,
            &mut c.out_proj,
            &mut l.fc1,
            &mut l.fc2,
        ] {
            out.extend(p.adapter_mut());
        }
    }
    out
}

#[test]
fn kv_cache_decoding_equals_recomputation_with_per_sample_ranks() {
    let device = Default::default();
    let mut model = load_whisper::<B>(dir(), &WhisperAdapter::all(4, 8.0), &device).unwrap();
    let layers = adapters(&mut model);
    assert_eq!(layers.len(), 2 * 6 + 2 * 10);
    for l in layers {
        let [d_out, r] = l.lora_b.dims();
        l.lora_b = Param::from_tensor(Tensor::random(
            [d_out, r],
            Distribution::Normal(0.0, 0.05),
            &device,
        ));
    }
    let mels = mels();
    let ranks = SampleRanks::new(vec![1, 4]);
    let enc = model
        .encode(model.mel_batch(&mels, &device).unwrap(), &ranks)
        .unwrap();
    let tok = WhisperTokenizer::from_dir(dir()).unwrap();
    let prompt = tok.prompt(true, Some("en"), Default::default()).unwrap();
    let prompts = vec![prompt.clone(), prompt.clone()];
    let mut results = Vec::new();
    for use_cache in [true, false] {
        let config = GreedyConfig {
            use_cache,
            ..GreedyConfig::from_model(&model, 20)
        };
        results.push(greedy_decode(&model, &enc, &prompts, &ranks, &config).unwrap());
    }
    assert_eq!(results[0], results[1]);

    // Logits: prompt, then one token at a time through the cache, against one full pass.
    let eot = model.config.eos_token_id;
    let seqs: Vec<Vec<u32>> = results[0]
        .iter()
        .map(|g| {
            let mut s = prompt.clone();
            s.extend(g);
            s.resize(prompt.len() + 20, eot);
            s
        })
        .collect();
    let full = model.ids_tensor(&seqs, &device).unwrap();
    let mut fresh = model.new_cache();
    let want = to_f32_vec(model.decode(full, &enc, &mut fresh, &ranks).unwrap()).unwrap();
    let vocab = model.config.vocab_size;
    let n = seqs[0].len();
    let mut cache = model.new_cache();
    let mut got = vec![0.0f32; 2 * n * vocab];
    let mut pos = 0;
    for chunk in [prompt.len(), 1, 2, 1, n - prompt.len() - 4] {
        let part: Vec<Vec<u32>> = seqs.iter().map(|s| s[pos..pos + chunk].to_vec()).collect();
        let ids = model.ids_tensor(&part, &device).unwrap();
        let l = to_f32_vec(model.decode(ids, &enc, &mut cache, &ranks).unwrap()).unwrap();
        for b in 0..2 {
            for t in 0..chunk {
                let src = (b * chunk + t) * vocab;
                let dst = (b * n + pos + t) * vocab;
                got[dst..dst + vocab].copy_from_slice(&l[src..src + vocab]);
            }
        }
        pos += chunk;
    }
    assert_eq!(cache.len, n);
    // The cache holds keys and values of ranks [1, 4]: reusing it at other ranks is refused.
    let one: Vec<Vec<u32>> = seqs.iter().map(|s| s[..1].to_vec()).collect();
    let err = model
        .decode(
            model.ids_tensor(&one, &device).unwrap(),
            &enc,
            &mut cache,
            &SampleRanks::new(vec![4, 4]),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 4]") && err.contains("[4, 4]"), "{err}");
    assert_eq!(cache.len, n);
    let d = max_abs_diff(&got, &want);
    println!("cached vs recomputed logits (ranks [1, 4]): max abs diff {d:e}");
    assert!(d <= 1e-4, "{d}");

    // The ranks reach the layers: rank 0 for both samples gives other logits.
    let base_ranks = SampleRanks::new(vec![0, 0]);
    let enc0 = model
        .encode(model.mel_batch(&mels, &device).unwrap(), &base_ranks)
        .unwrap();
    let ids = model.ids_tensor(&seqs, &device).unwrap();
    let mut c0 = model.new_cache();
    let base = to_f32_vec(model.decode(ids, &enc0, &mut c0, &base_ranks).unwrap()).unwrap();
    assert!(max_abs_diff(&base, &want) > 1e-3);
    // Too large a rank is a typed error.
    let e = model
        .encode(
            model.mel_batch(&mels, &device).unwrap(),
            &SampleRanks::new(vec![5, 1]),
        )
        .unwrap_err();
    assert!(matches!(e, WhisperError::Flexi(_)), "{e}");
}

/// Writes a copy of the fixture directory with `edit` applied to its tensors and config.
fn variant(
    name: &str,
    edit_config: impl Fn(&mut serde_json::Value),
    edit_tensors: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    for f in ["generation_config.json", "tokenizer.json"] {
        std::fs::copy(dir().join(f), tmp.path().join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    edit_config(&mut cfg);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let bytes = std::fs::read(dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit_tensors(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), out).unwrap();
    tmp
}

fn to_f32(tensors: &mut [(String, Dtype, Vec<usize>, Vec<u8>)]) {
    for (_, dtype, _, bytes) in tensors.iter_mut() {
        assert_eq!(*dtype, Dtype::F16);
        *bytes = bytes
            .chunks_exact(2)
            .flat_map(|c| {
                half::f16::from_le_bytes([c[0], c[1]])
                    .to_f32()
                    .to_le_bytes()
            })
            .collect();
        *dtype = Dtype::F32;
    }
}

#[test]
fn f32_checkpoint_gives_the_same_logits() {
    let tmp = variant("whisper-f32", |_| {}, |t| to_f32(t));
    let r = refs();
    let device = Default::default();
    let model = load_whisper::<B>(tmp.path(), &WhisperAdapter::none(), &device).unwrap();
    let seqs = reference_sequences(&r, model.config.eos_token_id);
    let (_, logits) = logits_of(&model, &mels(), &seqs, &SampleRanks::new(vec![0, 0]));
    let d = max_abs_diff(&logits, &r["logits"].f);
    println!("f32 checkpoint: logits max abs diff {d:e}");
    assert!(d <= 1e-4, "{d}");
}

fn load_err(path: &Path) -> WhisperError {
    load_whisper::<B>(path, &WhisperAdapter::none(), &Default::default()).unwrap_err()
}

#[test]
fn bad_checkpoints_give_typed_errors_naming_the_problem() {
    // Wrong model type.
    let tmp = variant(
        "whisper-llama",
        |c| c["model_type"] = "llama".into(),
        |_| {},
    );
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, WhisperError::WrongModelType { found, .. } if found == "llama"),
        "{e}"
    );
    assert!(e.to_string().contains("config.json"), "{e}");
    // The Llama fixture directory is not Whisper either.
    let e = load_err(&common::fixture("tiny_tied"));
    assert!(matches!(e, WhisperError::WrongModelType { .. }), "{e}");
    // Missing tensor.
    let name = "model.decoder.layers.1.encoder_attn.v_proj.bias";
    let tmp = variant("whisper-missing", |_| {}, |t| t.retain(|x| x.0 != name));
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, WhisperError::Format(FormatError::MissingTensor { tensor, .. }) if tensor == name),
        "{e}"
    );
    // Unexpected tensor.
    let tmp = variant(
        "whisper-extra",
        |_| {},
        |t| t.push(("model.extra.weight".into(), Dtype::F32, vec![2], vec![0; 8])),
    );
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, WhisperError::Format(FormatError::UnexpectedTensors { tensors, .. }) if tensors == &["model.extra.weight"]),
        "{e}"
    );
    // Shape mismatch (config says another FFN width).
    let tmp = variant(
        "whisper-shape",
        |c| c["encoder_ffn_dim"] = 128.into(),
        |_| {},
    );
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, WhisperError::Format(FormatError::ShapeMismatch { tensor, .. }) if tensor == "model.encoder.layers.0.fc1.weight"),
        "{e}"
    );
    // Bad config fields.
    let tmp = variant(
        "whisper-heads",
        |c| c["decoder_attention_heads"] = 3.into(),
        |_| {},
    );
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, WhisperError::ConfigField { field, .. } if field == "decoder_attention_heads"),
        "{e}"
    );
    let tmp = variant(
        "whisper-act",
        |c| c["activation_function"] = "relu".into(),
        |_| {},
    );
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, WhisperError::ConfigField { field, .. } if field == "activation_function"),
        "{e}"
    );
    // Corrupt weights file.
    let tmp = variant("whisper-corrupt", |_| {}, |_| {});
    let f = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(tmp.path());
    assert!(
        matches!(e, WhisperError::Format(FormatError::Safetensors { .. })),
        "{e}"
    );
    // No weights, no config.
    let tmp = variant("whisper-noweights", |_| {}, |_| {});
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    assert!(matches!(
        load_err(tmp.path()),
        WhisperError::Format(FormatError::NoWeights { .. })
    ));
    let e = load_err(Path::new("/nonexistent/whisper"));
    assert!(matches!(e, WhisperError::Io { .. }), "{e}");
    // A tokenizer without Whisper's special tokens.
    let e = WhisperTokenizer::from_dir(common::fixture("tiny_tied")).unwrap_err();
    assert!(matches!(e, WhisperError::Tokenizer { .. }), "{e}");
    assert!(e.to_string().contains("<|startoftranscript|>"), "{e}");
}

#[test]
fn config_and_prompts() {
    let c = WhisperConfig::from_dir(dir()).unwrap();
    assert_eq!((c.d_model, c.encoder_layers, c.decoder_layers), (64, 2, 2));
    assert_eq!(c.suppress_tokens, vec![117, 288, 305, 307, 308, 309]);
    assert_eq!(c.begin_suppress_tokens, vec![220, 300]);
    assert!(c.is_multilingual);
    let tok = WhisperTokenizer::from_dir(dir()).unwrap();
    // English-only models: no language or task token.
    assert_eq!(
        tok.prompt(false, Some("de"), Default::default()).unwrap(),
        vec![301, 310]
    );
    assert_eq!(
        tok.prompt(true, Some("de"), models::whisper::Task::Translate)
            .unwrap(),
        vec![301, 303, 305, 310]
    );
    let e = tok
        .prompt(true, Some("xx"), Default::default())
        .unwrap_err();
    assert!(e.to_string().contains("<|xx|>"), "{e}");
    let ids = tok.encode("hello world").unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "hello world");
}

#[test]
fn transcription_silence_empty_and_long_audio() {
    let device = Default::default();
    let model = load_whisper::<B>(dir(), &WhisperAdapter::none(), &device).unwrap();
    let tok = WhisperTokenizer::from_dir(dir()).unwrap();
    let options = TranscribeOptions {
        max_new_tokens: 4,
        ..Default::default()
    };
    // Silence decodes (whatever a random model says), no error, no panic.
    let silent = ("silence".to_string(), vec![0.0f32; 16000]);
    let texts = transcribe(&model, &tok, &[silent], &options, &device).unwrap();
    assert_eq!(texts.len(), 1);
    // Empty audio is refused by name.
    let e = transcribe(
        &model,
        &tok,
        &[("empty.wav".into(), vec![])],
        &options,
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(&e, WhisperError::EmptyAudio { input } if input == "empty.wav"),
        "{e}"
    );
    // Audio longer than 30 s seeks by timestamps, which this toy vocabulary lacks
    // (<|notimestamps|> is its last token): a typed error naming the alternative.
    assert_eq!(tok.timestamp_begin, model.config.vocab_size as u32);
    let long = test_signal(N_SAMPLES + 8000);
    let e = transcribe(
        &model,
        &tok,
        &[("long".into(), long.clone())],
        &options,
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            WhisperError::NoTimestampTokens {
                timestamp_begin: 311,
                vocab_size: 311
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("LongForm::Split"), "{e}");
    // With LongForm::Split it is cut into 30 s windows whose texts are joined.
    let split = TranscribeOptions {
        long_form: LongForm::Split,
        ..options.clone()
    };
    let whole = transcribe(
        &model,
        &tok,
        &[("long".into(), long.clone())],
        &split,
        &device,
    )
    .unwrap();
    let parts: Vec<String> = split_windows(&long)
        .into_iter()
        .map(|w| {
            transcribe(&model, &tok, &[("w".into(), w.to_vec())], &options, &device)
                .unwrap()
                .remove(0)
        })
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(split_windows(&long).len(), 2);
    assert_eq!(whole[0], parts.join(" "));
}

#[test]
fn gradients_reach_only_the_adapters_with_per_sample_ranks() {
    type Ad = burn::backend::Autodiff<Flex>;
    let device = Default::default();
    let mut model = load_whisper::<Ad>(dir(), &WhisperAdapter::all(2, 4.0), &device).unwrap();
    // Non-zero B so that A gets a gradient too.
    for l in model.encoder.layers.iter_mut().flat_map(|l| {
        [&mut l.self_attn.q_proj, &mut l.fc2]
            .into_iter()
            .filter_map(|p| p.adapter_mut())
            .collect::<Vec<_>>()
    }) {
        let [d_out, r] = l.lora_b.dims();
        l.lora_b = Param::from_tensor(Tensor::random(
            [d_out, r],
            Distribution::Normal(0.0, 0.05),
            &device,
        ));
    }
    // A short spectrogram (200 frames -> 100 encoder positions) keeps the test cheap.
    let mel: Tensor<Ad, 3> = Tensor::random([2, 80, 200], Distribution::Normal(0.0, 1.0), &device);
    let ids = model
        .ids_tensor(
            &[vec![301, 302, 306, 310], vec![301, 302, 306, 310]],
            &device,
        )
        .unwrap();
    // Sample 0 at rank 0 (base only), sample 1 at rank 2.
    let ranks = SampleRanks::new(vec![0, 2]);
    let logits = model.forward(mel, ids, &ranks).unwrap();
    let loss = logits.powi_scalar(2).mean();
    let grads = loss.backward();
    let enc0 = &model.encoder.layers[0];
    let q = enc0.self_attn.q_proj.adapter().expect("adapted");
    let ga = q.lora_a.val().grad(&grads).expect("lora_a gradient");
    let gb = q.lora_b.val().grad(&grads).expect("lora_b gradient");
    assert!(to_f32_vec(ga.abs().sum()).unwrap()[0] > 0.0);
    assert!(to_f32_vec(gb.abs().sum()).unwrap()[0] > 0.0);
    // Decoder cross-attention adapters get gradients as well.
    let cross = model.decoder.layers[1]
        .encoder_attn
        .v_proj
        .adapter()
        .unwrap();
    assert!(cross.lora_b.val().grad(&grads).is_some());
    // Frozen: base weights, norms, embeddings, convolutions.
    assert!(q.base.weight.val().grad(&grads).is_none());
    assert!(enc0.self_attn_layer_norm.gamma.val().grad(&grads).is_none());
    assert!(
        model
            .decoder
            .embed_tokens
            .weight
            .val()
            .grad(&grads)
            .is_none()
    );
    assert!(model.encoder.conv1.weight.val().grad(&grads).is_none());
}

#[test]
fn transcription_with_per_input_ranks() {
    let device = Default::default();
    let tok = WhisperTokenizer::from_dir(dir()).unwrap();
    let options = TranscribeOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    let wav = load_audio(dir().join("audio_1s.wav")).unwrap();
    let audios = vec![("a".to_string(), wav.clone()), ("b".to_string(), wav)];
    let base = load_whisper::<B>(dir(), &WhisperAdapter::none(), &device).unwrap();
    let want = transcribe(&base, &tok, &audios[..1], &options, &device).unwrap();
    let mut model = load_whisper::<B>(dir(), &WhisperAdapter::all(2, 4.0), &device).unwrap();
    for l in adapters(&mut model) {
        let [d_out, r] = l.lora_b.dims();
        l.lora_b = Param::from_tensor(Tensor::random(
            [d_out, r],
            Distribution::Normal(0.0, 0.5),
            &device,
        ));
    }
    // Rank 0 is the base model, whatever the adapter holds.
    let got = transcribe_with_ranks(&model, &tok, &audios, &[0, 2], &options, &device).unwrap();
    assert_eq!(got[0], want[0]);
    assert_eq!(got.len(), 2);
    let e = transcribe_with_ranks(&model, &tok, &audios, &[0], &options, &device).unwrap_err();
    assert!(matches!(e, WhisperError::InvalidInput(_)), "{e}");
    let e = transcribe_with_ranks(&model, &tok, &audios, &[0, 3], &options, &device).unwrap_err();
    assert!(matches!(e, WhisperError::Flexi(_)), "{e}");
}

#[test]
fn long_form_seeking_batches_inputs_at_their_own_ranks() {
    let device = Default::default();
    // The toy vocabulary has no timestamp tokens; let its last 161 ids (150..=310) play them,
    // so that the seeking loop runs end to end on the random model.
    let mut tok = WhisperTokenizer::from_dir(dir()).unwrap();
    tok.timestamp_begin = 150;
    let mut model = load_whisper::<B>(dir(), &WhisperAdapter::all(2, 4.0), &device).unwrap();
    for l in adapters(&mut model) {
        let [d_out, r] = l.lora_b.dims();
        l.lora_b = Param::from_tensor(Tensor::random(
            [d_out, r],
            Distribution::Normal(0.0, 0.5),
            &device,
        ));
    }
    let rules = TimestampRules::new(&model, &tok).unwrap();
    assert_eq!(rules.timestamp_begin, 150);
    // Decoding under the rules: a timestamp first (<= 1.0 s), then pairs, never decreasing.
    let mel = MelExtractor::new(80)
        .log_mel(&test_signal(16000 * 3), Padding::ThirtySeconds, "3 s")
        .unwrap();
    let ranks = SampleRanks::new(vec![0, 2]);
    let enc = model
        .encode(
            model.mel_batch(&[mel.clone(), mel], &device).unwrap(),
            &ranks,
        )
        .unwrap();
    let prompt = tok
        .timestamp_prompt(true, Some("en"), Default::default())
        .unwrap();
    assert_eq!(prompt, vec![301, 302, 306]);
    let config = GreedyConfig::from_model(&model, 30);
    let got = greedy_decode_with_timestamps(
        &model,
        &enc,
        &[prompt.clone(), prompt],
        &ranks,
        &config,
        &rules,
    )
    .unwrap();
    for ids in &got {
        assert!((150..=200).contains(&ids[0]), "{ids:?}");
        let stamps: Vec<u32> = ids.iter().copied().filter(|&t| t >= 150).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
        // No three timestamps in a row, and none right after a segment's start.
        assert!(
            ids.windows(3).all(|w| !w.iter().all(|&t| t >= 150)),
            "{ids:?}"
        );
        assert!(ids[1] < 150, "{ids:?}");
    }

    // Two long inputs and a short one, at ranks 0, 2 and 1: batched together (each at its
    // own seek position, the shorter one leaving the batch first) they give what each gives
    // alone.
    let options = TranscribeOptions {
        max_new_tokens: 12,
        ..Default::default()
    };
    let audios = vec![
        ("a".to_string(), test_signal(16000 * 45)),
        ("b".to_string(), test_signal(16000 * 36)[8000..].to_vec()),
        ("c".to_string(), test_signal(16000 * 5)),
    ];
    let ranks = [0, 2, 1];
    let together = transcribe_segments(&model, &tok, &audios, &ranks, &options, &device).unwrap();
    for (i, audio) in audios.iter().enumerate() {
        let single = TranscribeOptions {
            batch_size: 1,
            ..options.clone()
        };
        let alone = transcribe_segments(
            &model,
            &tok,
            std::slice::from_ref(audio),
            &ranks[i..=i],
            &single,
            &device,
        )
        .unwrap();
        assert_eq!(together[i], alone[0], "input {i}");
        let seconds = audio.1.len() as f64 / 16000.0;
        for s in &together[i] {
            assert!(s.start <= s.end && s.end <= seconds, "{s:?}");
        }
        assert!(together[i].windows(2).all(|w| w[0].start <= w[1].start));
    }
    // The short input is one short-form window (no timestamps).
    assert!(together[2].len() <= 1);
    let texts = transcribe_with_ranks(&model, &tok, &audios, &ranks, &options, &device).unwrap();
    assert_eq!(texts.len(), 3);
    assert_eq!(texts[0], join_segments(&together[0]));
}
