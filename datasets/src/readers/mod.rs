//! File readers. [`open`] streams the examples of a file or LibriSpeech tree; [`read_all`]
//! collects them. The format is detected from the file unless named in [`ReadOptions`].
//!
//! Record errors (a malformed line, a missing answer, a missing audio file) name the file and
//! line. By default the first one stops the read; with [`ReadOptions::skip_bad`] they are
//! skipped and counted ([`ExampleReader::skipped`], [`Dataset::skipped`]).

mod fields;
pub mod librispeech;
mod math;
mod mrqa;
mod source;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde_json::Value;

use self::fields::RecordCtx;
use self::librispeech::LibriSpeechReader;
use self::source::{Container, RawRecord, RecordStream};
use crate::{DataError, Example, Format, Result};

/// How to read a file.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The format; detected from the file when `None`.
    pub format: Option<Format>,
    /// Skip (and count) malformed records instead of stopping at the first.
    pub skip_bad: bool,
    /// Data set name to give the examples, overriding the one derived from the file.
    pub source: Option<String>,
}

impl ReadOptions {
    /// Options with a named format.
    pub fn with_format(format: Format) -> Self {
        Self {
            format: Some(format),
            ..Self::default()
        }
    }
}

/// How many skipped-record errors are kept for the report.
const KEEP_SKIPPED: usize = 10;

/// Records of one file, in the reader's uniform shape.
enum Records {
    Json(RecordStream),
    Speech(LibriSpeechReader),
}

/// A streaming reader over the examples of one file (or LibriSpeech tree).
///
/// Yields `Ok(example)` in file order. With `skip_bad`, record errors are counted instead of
/// yielded. A file without records yields [`DataError::Empty`].
pub struct ExampleReader {
    path: PathBuf,
    format: Format,
    source: String,
    source_is_explicit: bool,
    records: Records,
    pending: VecDeque<Example>,
    skip_bad: bool,
    index: usize,
    records_seen: usize,
    produced: usize,
    skipped: usize,
    skipped_errors: Vec<DataError>,
    finished: bool,
}

impl std::fmt::Debug for ExampleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExampleReader")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("source", &self.source)
            .field("produced", &self.produced)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl ExampleReader {
    /// The format in use.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The file or directory read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records skipped so far (only with `skip_bad`).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The first few skipped-record errors.
    pub fn skipped_errors(&self) -> &[DataError] {
        &self.skipped_errors
    }

    /// Number of examples yielded so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    /// The data set name given to examples (MRQA: updated by the header line; LibriSpeech:
    /// each example carries its split name instead).
    pub fn source(&self) -> &str {
        &self.source
    }

    fn convert(&mut self, rec: RawRecord) -> Result<Option<Vec<Example>>> {
        if self.format == Format::Mrqa
            && let Some(name) = mrqa::header_dataset(&rec.value)
        {
            if let Some(name) = name.filter(|_| !self.source_is_explicit) {
                self.source = name;
            }
            return Ok(None);
        }
        let ctx = RecordCtx {
            path: &self.path,
            line: rec.line,
            index: self.index,
            source: &self.source,
        };
        self.index += 1;
        let v = &rec.value;
        let out = match self.format {
            Format::Mrqa => mrqa::context_line(&ctx, v)?,
            Format::Gsm8k => vec![math::gsm8k(&ctx, v)?],
            Format::MetaMathQa => vec![math::metamath(&ctx, v)?],
            Format::Svamp => vec![math::svamp(&ctx, v)?],
            Format::MultiArith => vec![math::multiarith(&ctx, v)?],
            Format::Instruction => vec![math::instruction(&ctx, v)?],
            Format::MawpsJson => vec![math::mawps_json(&ctx, v)?],
            Format::MawpsCsv => vec![math::mawps_csv(&ctx, v)?],
            Format::Examples => vec![example(
                &ctx,
                v,
                self.source_is_explicit.then_some(&self.source),
            )?],
            Format::LibriSpeech => {
                return Err(DataError::InvalidArgument(
                    "librispeech records are not JSON".into(),
                ));
            }
        };
        Ok(Some(out))
    }
}

impl Iterator for ExampleReader {
    type Item = Result<Example>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ex) = self.pending.pop_front() {
                self.produced += 1;
                return Some(Ok(ex));
            }
            if self.finished {
                return None;
            }
            let next: Option<Result<Option<Vec<Example>>>> = match &mut self.records {
                Records::Json(stream) => match stream.next() {
                    None => None,
                    Some(Err(e)) => Some(Err(e)),
                    Some(Ok(rec)) => Some(self.convert(rec)),
                },
                Records::Speech(reader) => reader.next().map(|r| r.map(|ex| Some(vec![ex]))),
            };
            match next {
                None => {
                    self.finished = true;
                    if self.produced == 0 {
                        if let Some(first) = self.skipped_errors.first() {
                            return Some(Err(DataError::AllSkipped {
                                path: self.path.clone(),
                                skipped: self.skipped,
                                first: first.to_string(),
                            }));
                        }
                        return Some(Err(DataError::Empty {
                            path: self.path.clone(),
                        }));
                    }
                    return None;
                }
                Some(Ok(None)) => {}
                Some(Ok(Some(examples))) => {
                    self.records_seen += 1;
                    self.pending.extend(examples);
                }
                Some(Err(e)) if e.is_record_error() => {
                    self.records_seen += 1;
                    if self.skip_bad {
                        self.skipped += 1;
                        if self.skipped_errors.len() < KEEP_SKIPPED {
                            self.skipped_errors.push(e);
                        }
                        continue;
                    }
                    return Some(Err(e));
                }
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// One line of an `examples` file: a serialised [`Example`] (its `source` replaced when the
/// options name one).
fn example(ctx: &RecordCtx, v: &Value, source: Option<&String>) -> Result<Example> {
    let obj = ctx.object(v)?;
    for field in ["id", "task", "source", "target", "answers"] {
        ctx.field(obj, field)?;
    }
    let mut ex: Example =
        serde_json::from_value(v.clone()).map_err(|e| ctx.bad("example", e.to_string()))?;
    if ex.id.is_empty() {
        return Err(ctx.bad("id", "empty"));
    }
    if ex.answers.is_empty() && ex.task != crate::Task::Speech {
        return Err(ctx.bad("answers", "no gold answer"));
    }
    if let Some(s) = source {
        ex.source = s.clone();
    }
    Ok(ex)
}

/// All examples of a file, with what was skipped.
#[derive(Debug)]
pub struct Dataset {
    /// The file or directory read.
    pub path: PathBuf,
    /// The format used.
    pub format: Format,
    /// The examples, in file order.
    pub examples: Vec<Example>,
    /// Records skipped because they were malformed (only with `skip_bad`).
    pub skipped: usize,
    /// The first few skipped-record errors, for the report.
    pub skipped_errors: Vec<DataError>,
}

/// Reads every example of a file; stops at the first error unless `skip_bad` is set.
pub fn read_all(path: impl AsRef<Path>, options: &ReadOptions) -> Result<Dataset> {
    let mut reader = open(path, options)?;
    let mut examples = Vec::new();
    for ex in reader.by_ref() {
        examples.push(ex?);
    }
    Ok(Dataset {
        path: reader.path.clone(),
        format: reader.format,
        examples,
        skipped: reader.skipped,
        skipped_errors: std::mem::take(&mut reader.skipped_errors),
    })
}

/// Opens a streaming reader over a file or a LibriSpeech directory.
pub fn open(path: impl AsRef<Path>, options: &ReadOptions) -> Result<ExampleReader> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        if let Some(f) = options.format.filter(|f| *f != Format::LibriSpeech) {
            return Err(DataError::InvalidArgument(format!(
                "{} is a directory, which only the librispeech reader reads (not {f})",
                path.display()
            )));
        }
        let reader = LibriSpeechReader::new(path, options.source.clone())?;
        return Ok(new_reader(
            path,
            Format::LibriSpeech,
            "librispeech".into(),
            Records::Speech(reader),
            options,
        ));
    }
    if options.format == Some(Format::LibriSpeech) {
        return Err(DataError::InvalidArgument(format!(
            "the librispeech reader reads a directory tree, but {} is a file",
            path.display()
        )));
    }
    let container = source::sniff_container(path)?;
    let mut stream = source::open_records(path, container)?;
    let format = match options.format {
        Some(f) => f,
        None => {
            // Peek at the first well-formed record, then put everything back.
            let mut peeked = Vec::new();
            let mut found = None;
            for item in stream.by_ref() {
                match item {
                    Ok(rec) => {
                        let format = detect_from_record(path, container, &rec.value)?;
                        peeked.push(Ok(rec));
                        found = Some(format);
                        break;
                    }
                    Err(e) if e.is_record_error() => peeked.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
            let Some(format) = found else {
                // No readable record at all: report the first problem (or emptiness).
                return match peeked.into_iter().next() {
                    Some(Err(e)) => Err(e),
                    _ => Err(DataError::Empty {
                        path: path.to_path_buf(),
                    }),
                };
            };
            stream = Box::new(peeked.into_iter().chain(stream));
            format
        }
    };
    let source = options
        .source
        .clone()
        .unwrap_or_else(|| default_source(path, format));
    Ok(new_reader(
        path,
        format,
        source,
        Records::Json(stream),
        options,
    ))
}

fn new_reader(
    path: &Path,
    format: Format,
    source: String,
    records: Records,
    options: &ReadOptions,
) -> ExampleReader {
    ExampleReader {
        path: path.to_path_buf(),
        format,
        source,
        source_is_explicit: options.source.is_some(),
        records,
        pending: VecDeque::new(),
        skip_bad: options.skip_bad,
        index: 0,
        records_seen: 0,
        produced: 0,
        skipped: 0,
        skipped_errors: Vec::new(),
        finished: false,
    }
}

/// The data set name for a file: the format's own name (GSM8K, SVAMP, ...); for MRQA the
/// file name up to the first `_`, `-` or `.` (`NewsQA_sample.jsonl` -> `NewsQA`, replaced by
/// the header's `dataset` when there is one); for instruction-style files the name of the
/// directory holding the file (`gsm8k/test_instruction.json` -> `gsm8k`).
pub fn default_source(path: &Path, format: Format) -> String {
    if let Some(name) = format.default_source() {
        return name.to_string();
    }
    let stem = || {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .split(['_', '-', '.'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let name = match format {
        Format::Instruction => path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(stem),
        _ => stem(),
    };
    if name.is_empty() {
        format.name().to_string()
    } else {
        name
    }
}

/// Detects the format of a file or directory by its extension and its first record's fields.
pub fn detect_format(path: impl AsRef<Path>) -> Result<Format> {
    let path = path.as_ref();
    if path.is_dir() {
        return Ok(Format::LibriSpeech);
    }
    let container = source::sniff_container(path)?;
    if container == Container::Csv {
        let headers = source::csv_headers(path)?;
        let value = Value::Object(
            headers
                .into_iter()
                .map(|h| (h, Value::String(String::new())))
                .collect(),
        );
        return detect_from_record(path, container, &value);
    }
    for item in source::open_records(path, container)? {
        match item {
            Ok(rec) => return detect_from_record(path, container, &rec.value),
            Err(e) if e.is_record_error() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(DataError::Empty {
        path: path.to_path_buf(),
    })
}

/// Picks the format from the field names of one record.
fn detect_from_record(path: &Path, container: Container, value: &Value) -> Result<Format> {
    let unknown = |reason: String| DataError::UnknownFormat {
        path: path.to_path_buf(),
        reason,
    };
    let Some(obj) = value.as_object() else {
        return Err(unknown("the first record is not a JSON object".into()));
    };
    let has = |k: &str| obj.contains_key(k);
    let format = if container == Container::Csv {
        if has("Question") && has("Numbers") {
            Format::MawpsCsv
        } else {
            return Err(unknown(format!(
                "CSV columns {:?} are not the MAWPS `Question,Numbers,...` layout",
                obj.keys().collect::<Vec<_>>()
            )));
        }
    } else if has("id") && has("task") && has("target") && has("answers") {
        Format::Examples
    } else if has("header") || (has("context") && has("qas")) {
        Format::Mrqa
    } else if has("query") && has("response") {
        Format::MetaMathQa
    } else if has("instruction") {
        Format::Instruction
    } else if has("question") && has("answer") {
        Format::Gsm8k
    } else if has("Body") && has("Question") {
        Format::Svamp
    } else if has("sQuestion") {
        Format::MultiArith
    } else if has("original_text") || has("segmented_text") {
        Format::MawpsJson
    } else {
        return Err(unknown(format!(
            "the first record's fields {:?} match no known format",
            obj.keys().collect::<Vec<_>>()
        )));
    };
    Ok(format)
}
