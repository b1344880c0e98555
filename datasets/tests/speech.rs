//! Synthetic speech with espeak-ng (skipped with a printed reason when it is not installed:
//! `apt-get update && apt-get install -y espeak-ng`).

use std::collections::BTreeMap;
use std::path::Path;

use datasets::speech::{SAMPLE_RATE, SpeechConfig, espeak_available, synthesize};
use datasets::{Format, ReadOptions, Task, read_all};

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[test]
fn synthetic_librispeech_set() {
    if !espeak_available() {
        eprintln!(
            "SKIPPED synthetic_librispeech_set: espeak-ng is not installed (apt-get install -y espeak-ng)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SpeechConfig::new(dir.path().join("a"), 6);
    cfg.speakers = 3;
    cfg.seed = 11;
    let report = synthesize(&cfg).expect("synthesize");
    assert_eq!(report.utterances, 6);
    assert_eq!(report.speakers.len(), 3);
    assert!(
        report.seconds > 6.0,
        "about 2-4 s per sentence, got {}",
        report.seconds
    );
    let voices: std::collections::BTreeSet<_> = report.speakers.iter().map(|s| &s.voice).collect();
    assert_eq!(voices.len(), 3, "distinct voices");

    let d = read_all(&report.root, &ReadOptions::default()).expect("read back");
    assert_eq!(d.format, Format::LibriSpeech);
    assert_eq!(d.examples.len(), 6);
    for e in &d.examples {
        assert_eq!(e.task, Task::Speech);
        assert_eq!(e.source, "synthetic");
        assert!(
            e.target
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == ' ' || c == '\''),
            "{}",
            e.target
        );
        let audio = e.audio.as_ref().expect("audio path");
        let r = hound::WavReader::open(audio).expect("wav");
        let spec = r.spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (SAMPLE_RATE, 1, 16)
        );
        assert!(r.duration() > SAMPLE_RATE / 2, "{} samples", r.duration());
    }
    assert!(report.root.join("SPEAKERS.txt").is_file());

    // Same seed, same bytes; another seed, other sentences.
    let mut again = cfg.clone();
    again.out = dir.path().join("b");
    synthesize(&again).expect("again");
    assert_eq!(
        files(&cfg.out),
        files(&again.out),
        "deterministic for a seed"
    );
    let mut other = cfg.clone();
    other.out = dir.path().join("c");
    other.seed = 12;
    synthesize(&other).expect("other seed");
    assert_ne!(files(&cfg.out), files(&other.out));

    // An existing, non-empty output is not overwritten by accident.
    assert!(synthesize(&cfg).is_err());
    cfg.overwrite = true;
    synthesize(&cfg).expect("overwrite");
}
