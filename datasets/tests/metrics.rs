//! Metrics against hand-computed values.

use datasets::metrics::math::{Tolerance, answers_match, extract_answer, is_correct};
use datasets::metrics::qa::{exact_match, f1, normalize_answer, score};
use datasets::metrics::wer::{
    EditCounts, Normalizer, align, cer, char_edits, normalize_english, wer, word_edits,
};
use datasets::metrics::{EvalOptions, Evaluator, ScoreTable};
use datasets::{Example, Task};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn mrqa_normalisation_examples() {
    // The official normalize_answer: lower, remove punctuation, remove a/an/the, fix spaces.
    assert_eq!(normalize_answer("The Denver Broncos!"), "denver broncos");
    assert_eq!(
        normalize_answer("  A  quick, brown   fox. "),
        "quick brown fox"
    );
    assert_eq!(normalize_answer("an apple and THE pear"), "apple and pear");
    assert_eq!(
        normalize_answer("Theater"),
        "theater",
        "articles only as whole words"
    );
    assert_eq!(
        normalize_answer("the-end"),
        "theend",
        "punctuation goes before article removal"
    );
    assert_eq!(normalize_answer("24-10"), "2410");
    assert_eq!(normalize_answer("Levi's Stadium"), "levis stadium");
    assert_eq!(
        normalize_answer("“the” end"),
        "“ ” end",
        "non-ASCII quotes are not string.punctuation"
    );
    assert_eq!(normalize_answer("a"), "");
}

#[test]
fn mrqa_f1_and_em_hand_computed() {
    // pred tokens [cat, sat, on, mat], gold [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7.
    assert!(close(
        f1("the cat sat on the mat", "a cat on a mat"),
        6.0 / 7.0
    ));
    assert!(close(exact_match("The Broncos.", "broncos"), 1.0));
    assert!(close(exact_match("Denver", "Denver Broncos"), 0.0));
    assert!(close(f1("Paris", "London"), 0.0));
    assert!(close(f1("", "anything"), 0.0));
    // Repeated tokens are counted with multiplicity: pred [a, a -> removed]... use words:
    // pred [new, new, york], gold [new, york]: common 2, P = 2/3, R = 1, F1 = 0.8.
    assert!(close(f1("new new york", "new york"), 0.8));
    // Max over gold answers: "Denver" vs ["Denver Broncos", "the Denver Broncos"]: P=1, R=1/2.
    let golds = vec![
        "Denver Broncos".to_string(),
        "the Denver Broncos".to_string(),
    ];
    let s = score("Denver", &golds);
    assert!(close(s.f1, 2.0 / 3.0) && close(s.em, 0.0));
    let s = score("denver broncos", &golds);
    assert!(close(s.f1, 1.0) && close(s.em, 1.0));
}

#[test]
fn math_extraction() {
    assert_eq!(
        extract_answer("Natalia sold 48+24 = 72 clips.\n#### 72").as_deref(),
        Some("72")
    );
    assert_eq!(
        extract_answer("Total 1,000 + 200\n#### 1,200").as_deref(),
        Some("1200")
    );
    assert_eq!(
        extract_answer("So it costs $18.50.\nThe answer is: $18.50.").as_deref(),
        Some("18.5")
    );
    assert_eq!(
        extract_answer("the answer is -3 apples").as_deref(),
        Some("-3")
    );
    assert_eq!(
        extract_answer("The answer is 576. Then 12 more words 9").as_deref(),
        Some("576")
    );
    assert_eq!(
        extract_answer("She ate 1/2 then 3/4 of the pie").as_deref(),
        Some("0.75")
    );
    assert_eq!(
        extract_answer("Rationale: 2 * 11 = 22 cm. The answer is (B).").as_deref(),
        Some("B")
    );
    assert_eq!(
        extract_answer("It grew from 5 to 12.5 metres, i.e. -0.5 less").as_deref(),
        Some("-0.5")
    );
    assert_eq!(extract_answer("no numbers here"), None);
}

#[test]
fn math_comparison_is_numeric_with_tolerance() {
    let tol = Tolerance::default();
    assert!(answers_match("576", "576.0", tol));
    assert!(answers_match("1,200", "1200", tol));
    assert!(answers_match("$5", "5", tol));
    assert!(answers_match("1.8333", "1.8333333333333335", tol));
    assert!(!answers_match("1.8", "1.8333333333333335", tol));
    assert!(answers_match("0.75", "3/4", tol));
    assert!(answers_match("(b)", "B", tol));
    assert!(!answers_match("C", "B", tol));
    let golds = vec!["-15".to_string()];
    assert!(is_correct("x - 6 = ... The answer is: -15", &golds, tol));
    assert!(!is_correct("The answer is: 15", &golds, tol));
}

#[test]
fn wer_with_substitution_insertion_deletion() {
    // ref: the cat sat on  the mat
    // hyp: a   cat sat --  the mat down
    //      S            D           I     -> 3 errors / 6 words
    let c = word_edits(
        "the cat sat on the mat",
        "a cat sat the mat down",
        Normalizer::None,
    );
    assert_eq!(
        c,
        EditCounts {
            hits: 4,
            substitutions: 1,
            deletions: 1,
            insertions: 1
        }
    );
    assert!(close(c.rate(), 0.5));
    // The same after Whisper-style normalisation of case and punctuation.
    assert!(close(
        wer(
            "The cat sat on the mat.",
            "A cat sat, the MAT down!",
            Normalizer::English
        ),
        0.5
    ));
    // Two substitutions and one deletion out of four: 75 %.
    let c = word_edits("one two three four", "one too tree", Normalizer::None);
    assert_eq!((c.substitutions, c.deletions, c.insertions), (2, 1, 0));
    assert!(close(c.rate(), 0.75));
    // Generic alignment.
    assert_eq!(
        align(&[1, 2, 3], &[1, 2, 3]),
        EditCounts {
            hits: 3,
            ..EditCounts::default()
        }
    );
    assert_eq!(align::<u8>(&[], &[1, 2]).insertions, 2);
}

#[test]
fn cer_counts_characters() {
    // "abc" -> "axcd": b->x (S) and +d (I): 2 / 3.
    let c = char_edits("abc", "axcd", Normalizer::None);
    assert_eq!((c.substitutions, c.insertions, c.deletions), (1, 1, 0));
    assert!(close(cer("abc", "axcd", Normalizer::None), 2.0 / 3.0));
    // Spaces count: "a b" vs "ab" is one deletion of 3 characters.
    assert!(close(cer("a b", "ab", Normalizer::None), 1.0 / 3.0));
}

#[test]
fn whisper_style_normalisation() {
    assert_eq!(
        normalize_english("Hello, [inaudible] WORLD (laughs)!"),
        "hello world"
    );
    assert_eq!(
        normalize_english("Um, I can't go, Mr. Brown."),
        "i can not go mister brown"
    );
    assert_eq!(
        normalize_english("It's 3.5% of $1,000."),
        "it is 3.5% of $1000"
    );
    assert_eq!(
        normalize_english("HE HOPED THERE WOULD BE STEW FOR DINNER"),
        "he hoped there would be stew for dinner"
    );
}

fn ex(id: &str, task: Task, source: &str, answers: &[&str]) -> Example {
    Example {
        id: id.into(),
        task,
        source: source.into(),
        question: String::new(),
        context: None,
        target: answers[0].into(),
        answers: answers.iter().map(|s| s.to_string()).collect(),
        audio: None,
    }
}

#[test]
fn evaluator_tables_per_set_and_average() {
    let mut ev = Evaluator::new(EvalOptions::default());
    // gsm8k: 1 of 2 correct (50 %); svamp: 1 of 1 (100 %); average 75 %.
    ev.add(&ex("g1", Task::Math, "gsm8k", &["12"]), "3*4=12\n#### 12");
    ev.add(&ex("g2", Task::Math, "gsm8k", &["7"]), "The answer is: 8");
    ev.add(&ex("s1", Task::Math, "svamp", &["51"]), "so 51");
    // QA: F1 6/7 and EM 0 on one set.
    ev.add(
        &ex("q1", Task::Qa, "SQuAD", &["a cat on a mat"]),
        "the cat sat on the mat",
    );
    // Speech: corpus WER 3/6 + 0/2 = 3/8 = 37.5 %.
    ev.add(
        &ex(
            "u1",
            Task::Speech,
            "test-clean",
            &["THE CAT SAT ON THE MAT"],
        ),
        "a cat sat the mat down",
    );
    ev.add(
        &ex("u2", Task::Speech, "test-clean", &["HELLO WORLD"]),
        "hello world",
    );

    let math = ev.table(Task::Math, "LoRA-8").expect("math table");
    assert!(close(math.get("gsm8k", "Acc").unwrap_or(f64::NAN), 50.0));
    assert!(close(math.get("svamp", "Acc").unwrap_or(f64::NAN), 100.0));
    assert!(close(math.get("average", "Acc").unwrap_or(f64::NAN), 75.0));
    let qa = ev.table(Task::Qa, "").expect("qa table");
    assert!(close(
        qa.get("SQuAD", "F1").unwrap_or(f64::NAN),
        600.0 / 7.0
    ));
    assert!(close(qa.get("SQuAD", "EM").unwrap_or(f64::NAN), 0.0));
    let sp = ev.table(Task::Speech, "").expect("speech table");
    assert!(close(sp.get("test-clean", "WER").unwrap_or(f64::NAN), 37.5));
    assert!(close(sp.get("test-clean", "ACC").unwrap_or(f64::NAN), 62.5));
    assert_eq!(ev.samples().len(), 6);
    assert!(close(ev.samples()[1].score, 0.0));

    let printed = math.to_string();
    assert!(printed.contains("| gsm8k | 2 | 50.00 |"), "{printed}");
    assert!(printed.contains("| average | 3 | 75.00 |"), "{printed}");
    let back: ScoreTable = serde_json::from_str(&math.to_json()).expect("json round trip");
    assert_eq!(back, math);
}
