//! Reads every file of the shared real-data directory (`../shared/data` next to the
//! workspace, or `$FLEXI_DATA_DIR`) and checks the counts given in its README. Skipped, with
//! a printed reason, when the directory is absent (a fresh checkout elsewhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datasets::{Format, ReadOptions, Task, read_all};

fn data_dir() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("FLEXI_DATA_DIR").map(PathBuf::from),
        Some(workspace.join("../shared/data")),
        Some(PathBuf::from("/work/shared/data")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("README.md").is_file())
}

/// (path, format, examples) from the data README.
const EXPECTED: &[(&str, Format, usize)] = &[
    ("gsm8k/train.jsonl", Format::Gsm8k, 7473),
    ("gsm8k/test.jsonl", Format::Gsm8k, 1319),
    ("gsm8k/test_instruction.json", Format::Instruction, 1319),
    ("svamp/SVAMP.json", Format::Svamp, 1000),
    ("svamp/test.json", Format::Instruction, 1000),
    ("multiarith/MultiArith.json", Format::MultiArith, 600),
    ("multiarith/test.json", Format::Instruction, 600),
    ("mawps/test.json", Format::Instruction, 238),
    ("mawps/trainset.json", Format::MawpsJson, 1898),
    ("mawps/cv_fold0_train.csv", Format::MawpsCsv, 1537),
    ("mawps/cv_fold0_dev.csv", Format::MawpsCsv, 384),
    ("math_train/math_data.json", Format::Instruction, 3260),
    ("mrqa/NewsQA_sample.jsonl", Format::Mrqa, 17),
];

fn data_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            data_files(&path, out);
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".json")
                || name.ends_with(".jsonl")
                || name.ends_with(".csv")
                || name.ends_with(".gz")
            {
                out.push(path);
            }
        }
    }
}

#[test]
fn every_shared_file_reads_with_readme_counts() {
    let Some(dir) = data_dir() else {
        eprintln!(
            "SKIPPED every_shared_file_reads_with_readme_counts: no shared data directory (../shared/data or $FLEXI_DATA_DIR)"
        );
        return;
    };
    let mut files = Vec::new();
    data_files(&dir, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no data files under {}", dir.display());
    let expected: BTreeMap<&str, (Format, usize)> =
        EXPECTED.iter().map(|(p, f, n)| (*p, (*f, *n))).collect();
    let mut seen = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let d = read_all(path, &ReadOptions::default()).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(d.skipped, 0, "{rel}");
        assert!(
            d.examples
                .iter()
                .all(|e| !e.answers.is_empty() && !e.target.is_empty()),
            "{rel}: empty answers"
        );
        eprintln!(
            "{rel} ({}) -> {} examples, first source {:?}",
            d.format,
            d.examples.len(),
            d.examples[0].source
        );
        if let Some((format, n)) = expected.get(rel.as_str()) {
            assert_eq!(d.format, *format, "{rel}: detected format");
            assert_eq!(d.examples.len(), *n, "{rel}: count");
            seen.push(rel.clone());
        }
        if d.format == Format::Mrqa {
            let contexts: std::collections::BTreeSet<_> = d
                .examples
                .iter()
                .filter_map(|e| e.context.as_ref())
                .collect();
            assert_eq!(contexts.len(), 3, "{rel}: contexts");
            assert!(
                d.examples
                    .iter()
                    .all(|e| e.task == Task::Qa && e.source == "NewsQA")
            );
        }
        if d.format == Format::Gsm8k {
            // The metric's extraction recovers every gold answer from its own solution.
            let tol = datasets::metrics::math::Tolerance::default();
            let bad: Vec<_> = d
                .examples
                .iter()
                .filter(|e| !datasets::metrics::math::is_correct(&e.target, &e.answers, tol))
                .map(|e| &e.id)
                .collect();
            assert!(bad.is_empty(), "{rel}: extraction disagrees on {bad:?}");
        }
        if d.format == Format::MawpsCsv {
            assert!(
                d.examples.iter().all(|e| !e.question.contains("number0")),
                "{rel}: placeholders left"
            );
        }
    }
    assert_eq!(
        seen.len(),
        EXPECTED.len(),
        "files listed in the README but not found: {seen:?}"
    );
}
