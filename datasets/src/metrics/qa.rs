//! MRQA / SQuAD official F1 and exact match.
//!
//! Normalisation follows the official `normalize_answer`: lower-case, remove ASCII
//! punctuation (Python's `string.punctuation`), remove the articles `a`, `an`, `the` as whole
//! words (`\b(a|an|the)\b`), collapse whitespace. Scores are the maximum over gold answers.

use std::collections::HashMap;

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Python's `\w` for one character (Unicode letters, digits, underscore).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The official MRQA answer normalisation.
pub fn normalize_answer(s: &str) -> String {
    // lower(), then remove_punc()
    let no_punc: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    // remove_articles(): every maximal run of word characters equal to a/an/the -> " "
    let mut no_articles = String::with_capacity(no_punc.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punc.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    // white_space_fix()
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exact match (0 or 1) of normalised strings.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(gold),
    ))
}

/// Token F1 (0..1) of normalised strings; 0 when they share no token.
pub fn f1(prediction: &str, gold: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(gold);
    let p: Vec<&str> = p.split_whitespace().collect();
    let g: Vec<&str> = g.split_whitespace().collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &p {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// EM and F1 of one prediction, each the maximum over the gold answers (0..1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QaScore {
    /// Exact match, 0 or 1.
    pub em: f64,
    /// Token F1 in 0..1.
    pub f1: f64,
}

/// Scores a prediction against all gold answers (0 for both if there are none).
pub fn score(prediction: &str, golds: &[String]) -> QaScore {
    golds.iter().fold(QaScore::default(), |acc, g| QaScore {
        em: acc.em.max(exact_match(prediction, g)),
        f1: acc.f1.max(f1(prediction, g)),
    })
}
