//! `normalize_english` against transformers' `EnglishTextNormalizer` (with Whisper's spelling
//! mapping), and WER / CER against jiwer on the normalised text. The fixture is written by
//! `tools/whisper_normalizer_reference.py` (transformers 4.57.6, jiwer 4.0.0).

use datasets::metrics::wer::{Normalizer, cer, char_edits, normalize_english, wer, word_edits};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    input: String,
    expected: String,
}

#[derive(Deserialize)]
struct Pair {
    reference: String,
    hypothesis: String,
    reference_norm: String,
    hypothesis_norm: String,
    /// `None` where the normalised reference is empty (jiwer refuses to score it).
    wer: Option<f64>,
    cer: Option<f64>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
    pairs: Vec<Pair>,
    corpus_wer: f64,
    corpus_cer: f64,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/whisper_normalizer.json"
    );
    let text = std::fs::read_to_string(path).expect("read the fixture");
    serde_json::from_str(&text).expect("parse the fixture")
}

#[test]
fn normalisation_matches_transformers() {
    let f = fixture();
    assert!(f.cases.len() >= 150, "{} cases", f.cases.len());
    let failures: Vec<String> = f
        .cases
        .iter()
        .filter_map(|c| {
            let actual = normalize_english(&c.input);
            (actual != c.expected).then(|| {
                format!(
                    "input    {:?}\nexpected {:?}\nactual   {:?}",
                    c.input, c.expected, actual
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from transformers:\n\n{}",
        failures.len(),
        f.cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn error_rates_match_jiwer() {
    let f = fixture();
    assert!(f.pairs.len() >= 30, "{} pairs", f.pairs.len());
    let mut failures = Vec::new();
    let (mut words, mut chars) = Default::default();
    for p in &f.pairs {
        let (r, h) = (&p.reference, &p.hypothesis);
        let context = format!("reference {r:?}\nhypothesis {h:?}");
        let (rn, hn) = (normalize_english(r), normalize_english(h));
        if (&rn, &hn) != (&p.reference_norm, &p.hypothesis_norm) {
            failures.push(format!(
                "{context}\nexpected normalised {:?} / {:?}\nactual   normalised {rn:?} / {hn:?}",
                p.reference_norm, p.hypothesis_norm
            ));
        }
        let (Some(expected_wer), Some(expected_cer)) = (p.wer, p.cer) else {
            // An empty normalised reference: jiwer has no rate; ours counts insertions.
            assert!(rn.trim().is_empty(), "{context}: jiwer gave no rate");
            let c = word_edits(r, h, Normalizer::English);
            assert_eq!(c.rate(), hn.split_whitespace().count() as f64, "{context}");
            continue;
        };
        let (actual_wer, actual_cer) = (
            wer(r, h, Normalizer::English),
            cer(r, h, Normalizer::English),
        );
        for (name, expected, actual) in [
            ("WER", expected_wer, actual_wer),
            ("CER", expected_cer, actual_cer),
        ] {
            if (expected - actual).abs() > 1e-9 {
                failures.push(format!(
                    "{context}\n{name}: jiwer {expected}, ours {actual}"
                ));
            }
        }
        let add = |total: &mut datasets::metrics::wer::EditCounts, c| total.add(c);
        add(&mut words, word_edits(r, h, Normalizer::English));
        add(&mut chars, char_edits(r, h, Normalizer::English));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        (words.rate() - f.corpus_wer).abs() < 1e-9,
        "corpus WER: jiwer {}, ours {}",
        f.corpus_wer,
        words.rate()
    );
    assert!(
        (chars.rate() - f.corpus_cer).abs() < 1e-9,
        "corpus CER: jiwer {}, ours {}",
        f.corpus_cer,
        chars.rate()
    );
}
