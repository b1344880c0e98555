//! Prompts, tokenisation with truncation, answer-only labels, batching, shuffling and
//! difficulty labels.

use std::sync::Arc;

use datasets::batch::{PadSide, batch_indices, batches, collate, shuffled_indices};
use datasets::labels::{
    Difficulty, LabelRule, balanced_split, count, label_scores, read_jsonl, read_scores_jsonl,
    write_jsonl,
};
use datasets::prompt::{ChatTemplate, PromptTemplate, Prompted, Prompter};
use datasets::tokenize::{
    EncodeOptions, IGNORE_INDEX, TextTokenizer, TooLong, Truncation, encode_all, encode_pair,
    encode_prompt,
};
use datasets::{DataError, Example, Result, Task};

/// One token per whitespace-separated word: id = 10 + word length (easy to reason about).
struct WordTok;

impl TextTokenizer for WordTok {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text
            .split_whitespace()
            .map(|w| 10 + w.len() as u32)
            .collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids
            .iter()
            .map(|i| "x".repeat((*i as usize).saturating_sub(10)))
            .collect::<Vec<_>>()
            .join(" "))
    }
    fn bos_id(&self) -> Option<u32> {
        Some(1)
    }
    fn eos_id(&self) -> Option<u32> {
        Some(2)
    }
    fn pad_id(&self) -> u32 {
        0
    }
}

fn math_example() -> Example {
    Example {
        id: "m1".into(),
        task: Task::Math,
        source: "gsm8k".into(),
        question: "Tom has 3 boxes of 4 apples. How many apples?".into(),
        context: None,
        target: "3 * 4 = 12\n#### 12".into(),
        answers: vec!["12".into()],
        audio: None,
    }
}

#[test]
fn default_prompts() {
    let p = Prompter::default();
    let m = p.render(&math_example()).unwrap();
    assert_eq!(
        m.prompt,
        "Question: Tom has 3 boxes of 4 apples. How many apples?\nAnswer:"
    );
    assert_eq!(m.target, " 3 * 4 = 12\n#### 12");
    let mut qa = math_example();
    qa.task = Task::Qa;
    qa.context = Some("Apples {question} grow.".into());
    qa.question = "Where?".into();
    qa.target = "trees".into();
    let q = p.render(&qa).unwrap();
    assert_eq!(
        q.prompt, "Context: Apples {question} grow.\nQuestion: Where?\nAnswer:",
        "text is never re-expanded"
    );
    assert_eq!(q.target, " trees");
}

#[test]
fn custom_and_chat_templates() {
    let t = PromptTemplate::new("{context}\n{question}", "Solve: {question} {{literal}}\nA:")
        .expect("valid");
    let p = Prompter::default()
        .with_template(Task::Math, t)
        .expect("set");
    assert_eq!(
        p.render(&math_example()).unwrap().prompt,
        "Solve: Tom has 3 boxes of 4 apples. How many apples? {literal}\nA:"
    );
    assert!(
        PromptTemplate::new("{question}", "{answer}").is_err(),
        "unknown placeholder"
    );
    // The chat hook: the model's template wraps the rendered task prompt, its end-of-turn
    // closes the target (a marker format here; real templates are tested in `models`).
    struct Marked;
    impl ChatTemplate for Marked {
        fn render(&self, system: Option<&str>, user: &str) -> Result<String, String> {
            Ok(format!(
                "[sys:{}][user:{user}][assistant:",
                system.unwrap_or("-")
            ))
        }
        fn end_of_turn(&self) -> &str {
            "]"
        }
    }
    let chat = Prompter::default().with_chat(Arc::new(Marked));
    let c = chat.render(&math_example()).unwrap();
    assert!(
        c.prompt.starts_with("[sys:-][user:Question: Tom"),
        "{}",
        c.prompt
    );
    assert!(c.prompt.ends_with("][assistant:"));
    assert_eq!(c.target, "3 * 4 = 12\n#### 12]");
}

fn item(prompt: &str, target: &str) -> Prompted {
    Prompted {
        id: "x".into(),
        prompt: prompt.into(),
        target: target.into(),
    }
}

#[test]
fn labels_cover_answer_tokens_only() {
    let opts = EncodeOptions {
        max_len: 64,
        ..EncodeOptions::default()
    };
    let e = encode_pair(&WordTok, &item("aa bbb c", "dddd ee"), &opts).expect("encode");
    assert_eq!(e.input_ids, vec![1, 12, 13, 11, 14, 12, 2]);
    assert_eq!(
        e.labels,
        vec![
            IGNORE_INDEX,
            IGNORE_INDEX,
            IGNORE_INDEX,
            IGNORE_INDEX,
            14,
            12,
            2
        ]
    );
    assert_eq!(e.prompt_len, 4);
    assert_eq!(e.prompt_tokens_cut, 0);
    assert_eq!(e.prompt_ids(), &[1, 12, 13, 11]);
}

#[test]
fn truncation_cuts_the_prompt_never_the_answer() {
    // 6 prompt words, 2 answer words, BOS + EOS: 10 tokens; max 7 -> cut 3 prompt tokens.
    let it = item("p1 p22 p333 p4444 p55555 p666666", "a1 a22");
    let left = EncodeOptions {
        max_len: 7,
        ..EncodeOptions::default()
    };
    let e = encode_pair(&WordTok, &it, &left).expect("left");
    assert_eq!(
        e.input_ids,
        vec![1, 15, 16, 17, 12, 13, 2],
        "kept the prompt's end"
    );
    assert_eq!(e.prompt_tokens_cut, 3);
    assert_eq!(&e.labels[4..], &[12, 13, 2]);
    let mid = EncodeOptions {
        truncation: Truncation::Middle,
        ..left
    };
    let e = encode_pair(&WordTok, &it, &mid).expect("middle");
    assert_eq!(
        e.input_ids,
        vec![1, 12, 16, 17, 12, 13, 2],
        "kept 1 head + 2 tail prompt tokens"
    );
    // The answer alone (2 + BOS + EOS = 4) does not fit into 3: an error, with numbers.
    let tiny = EncodeOptions {
        max_len: 3,
        ..EncodeOptions::default()
    };
    let err = encode_pair(&WordTok, &it, &tiny).expect_err("too long");
    assert!(
        matches!(
            err,
            DataError::AnswerTooLong {
                answer_tokens: 2,
                special: 2,
                max_len: 3,
                ..
            }
        ),
        "{err}"
    );
    // Inference prompts keep room for generation.
    let p = encode_prompt(&WordTok, "x", "p1 p22 p333", &left, 4).expect("prompt");
    assert_eq!(p.input_ids, vec![1, 13, 14]);
    assert!(p.labels.iter().all(|&l| l == IGNORE_INDEX));
}

#[test]
fn encode_all_counts_truncations_and_long_answers() {
    let items = vec![
        item("a b c d e f", "x"),
        item("a", "x"),
        item("a", "x y z w v u"),
    ];
    let opts = EncodeOptions {
        max_len: 6,
        ..EncodeOptions::default()
    };
    let err = encode_all(&WordTok, &items, &opts, TooLong::Error).expect_err("stops");
    assert!(
        matches!(
            err,
            DataError::AnswersTooLong {
                count: 1,
                total: 3,
                ..
            }
        ),
        "{err}"
    );
    let r = encode_all(&WordTok, &items, &opts, TooLong::Drop).expect("drop");
    assert_eq!(r.encoded.len(), 2);
    assert_eq!(r.truncated, 1);
    assert_eq!(r.dropped, vec!["x".to_string()]);
}

#[test]
fn padding_and_masks() {
    let opts = EncodeOptions {
        max_len: 64,
        ..EncodeOptions::default()
    };
    let a = encode_pair(&WordTok, &item("aa b", "c"), &opts).expect("a");
    let b = encode_pair(&WordTok, &item("aa", "c"), &opts).expect("b");
    let right = collate(&[&a, &b], 0, PadSide::Right);
    assert_eq!((right.batch_size, right.seq_len), (2, 5));
    assert_eq!(right.input_ids, vec![1, 12, 11, 11, 2, 1, 12, 11, 2, 0]);
    assert_eq!(right.attention_mask, vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    assert_eq!(
        right.labels[5..],
        [IGNORE_INDEX, IGNORE_INDEX, 11, 2, IGNORE_INDEX]
    );
    assert_eq!(right.label_tokens(), 4);
    let left = collate(&[&a, &b], 0, PadSide::Left);
    assert_eq!(
        left.row(1).map(|r| r.0.to_vec()),
        Some(vec![0, 1, 12, 11, 2])
    );
    assert_eq!(left.row(1).map(|r| r.1.to_vec()), Some(vec![0, 1, 1, 1, 1]));
    assert_eq!(left.prompt_lens, vec![3, 2]);
}

#[test]
fn seeded_shuffling_and_batches() {
    let a = shuffled_indices(100, 7);
    assert_eq!(a, shuffled_indices(100, 7), "same seed, same order");
    assert_ne!(a, shuffled_indices(100, 8));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    let b = batch_indices(10, 4, None, false);
    assert_eq!(b, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    assert_eq!(batch_indices(10, 4, Some(1), true).len(), 2);
    let opts = EncodeOptions::default();
    let enc: Vec<_> = (0..5)
        .map(|i| encode_pair(&WordTok, &item(&"w ".repeat(i + 1), "a"), &opts).expect("enc"))
        .collect();
    let all: Vec<_> = batches(&enc, 2, 0, PadSide::Right, Some(3)).collect();
    assert_eq!(all.iter().map(|b| b.batch_size).sum::<usize>(), 5);
}

#[cfg(feature = "hf-tokenizers")]
#[test]
fn hugging_face_tokenizer_impl() {
    use datasets::tokenize::HfTokenizer;
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {
            "<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "question": 4, ":": 5,
            "how": 6, "many": 7, "?": 8, "answer": 9, "12": 10}}
    });
    let inner: tokenizers::Tokenizer = json.to_string().parse().expect("tokenizer json");
    let tok = HfTokenizer::new_guess(inner);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (Some(1), Some(2), 0)
    );
    assert_eq!(
        tok.encode("Question: how many?").expect("encode"),
        vec![4, 5, 6, 7, 8]
    );
    let e = encode_pair(
        &tok,
        &item("Question: how many?\nAnswer:", " 12"),
        &EncodeOptions::default(),
    )
    .expect("pair");
    assert_eq!(e.input_ids, vec![1, 4, 5, 6, 7, 8, 9, 5, 10, 2]);
    assert_eq!(e.labels.iter().filter(|&&l| l != IGNORE_INDEX).count(), 2);
}

#[test]
fn difficulty_labels_and_balanced_split() {
    // QA: F1 >= 0.5 easy.
    let scores = vec![
        ("a", 0.9),
        ("b", 0.5),
        ("c", 0.49),
        ("d", 0.0),
        ("e", 1.0),
        ("f", 0.7),
    ];
    let labels =
        label_scores(scores.clone(), LabelRule::for_task(Task::Qa, None, &[])).expect("labels");
    let got: Vec<Difficulty> = labels.iter().map(|l| l.label).collect();
    use Difficulty::{Easy, Hard};
    assert_eq!(got, vec![Easy, Easy, Hard, Hard, Easy, Easy]);
    let c = count(&labels);
    assert_eq!((c.easy, c.hard), (4, 2));
    // Math: accuracy 1 easy; speech: WER <= t easy.
    assert_eq!(LabelRule::for_task(Task::Math, None, &[]).label(1.0), Easy);
    assert_eq!(LabelRule::for_task(Task::Math, None, &[]).label(0.0), Hard);
    assert_eq!(
        LabelRule::for_task(Task::Speech, Some(0.2), &[]).label(0.2),
        Easy
    );
    assert_eq!(
        LabelRule::for_task(Task::Speech, Some(0.2), &[]).label(0.25),
        Hard
    );
    // Speech without a threshold: the median WER (lower middle of an even count).
    let wers = [0.5, 0.0, 0.3, 0.1, 0.2, 0.9];
    let rule = LabelRule::for_task(Task::Speech, None, &wers);
    assert_eq!(rule, LabelRule::AtMost(0.2));
    let easy = wers.iter().filter(|w| rule.label(**w) == Easy).count();
    assert_eq!(easy, 3);
    // More than half perfect: WER == 0 is easy.
    let rule = LabelRule::for_task(Task::Speech, None, &[0.0, 0.0, 0.0, 0.4]);
    assert_eq!((rule.label(0.0), rule.label(0.01)), (Easy, Hard));

    let split = balanced_split(&labels, 42).expect("split");
    let c = count(&split);
    assert_eq!((c.easy, c.hard), (2, 2));
    assert_eq!(split, balanced_split(&labels, 42).expect("again"), "seeded");
    assert!(
        label_scores(vec![("a", 1.0), ("a", 0.0)], LabelRule::AtLeast(0.5)).is_err(),
        "duplicate id"
    );
    assert!(label_scores(vec![("a", f64::NAN)], LabelRule::AtLeast(0.5)).is_err());
    let all_easy = label_scores(vec![("a", 1.0)], LabelRule::AtLeast(0.5)).expect("one");
    assert!(balanced_split(&all_easy, 0).is_err(), "one class only");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("labels.jsonl");
    write_jsonl(&path, &split).expect("write");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines()
            .all(|l| l.starts_with("{\"id\":") && l.contains("\"label\":\""))
    );
    assert_eq!(read_jsonl(&path).expect("read back"), split);
    let scores_path = dir.path().join("scores.jsonl");
    std::fs::write(
        &scores_path,
        "{\"id\": \"a\", \"score\": 0.5, \"source\": \"SQuAD\"}\n{\"id\": 7, \"score\": 1}\n",
    )
    .expect("write");
    assert_eq!(
        read_scores_jsonl(&scores_path).expect("scores"),
        vec![("a".to_string(), 0.5), ("7".to_string(), 1.0)]
    );
    std::fs::write(
        &scores_path,
        "{\"id\": \"a\", \"score\": 0.5}\n{\"id\": \"b\"}\n",
    )
    .expect("write");
    let err = read_scores_jsonl(&scores_path).expect_err("missing score");
    assert!(matches!(err, DataError::Malformed { line: 2, .. }), "{err}");
}

#[test]
fn a_full_disk_while_writing_labels_keeps_the_previous_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("labels.jsonl");
    let old = label_scores(vec![("a", 1.0), ("b", 0.0)], LabelRule::AtLeast(0.5)).expect("old");
    write_jsonl(&path, &old).expect("first write");
    let before = std::fs::read(&path).expect("read");
    // The next write's temporary file lands on /dev/full: every write fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", dir.path().join("labels.jsonl.tmp")).expect("link");
    let new = label_scores(vec![("c", 1.0)], LabelRule::AtLeast(0.5)).expect("new");
    let err = write_jsonl(&path, &new).expect_err("disk full");
    let msg = err.to_string();
    assert!(matches!(err, DataError::Write { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!("{}: cannot write: ", path.display()))
            && msg.contains("No space left on device"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the old labels"
    );
    assert_eq!(read_jsonl(&path).expect("read back"), old);
    // Once there is room again, the file is replaced whole.
    write_jsonl(&path, &new).expect("write");
    assert_eq!(read_jsonl(&path).expect("read back"), new);
}
