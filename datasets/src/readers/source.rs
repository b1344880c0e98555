//! Streaming record sources: JSON lines, JSON arrays (split element by element without
//! loading the file) and CSV. Each yields one [`RawRecord`] per record with the 1-based line
//! where it starts, so that errors can name the file and the line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{DataError, Result};

/// One undecoded record: a JSON value (CSV rows become an object of header -> string).
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    /// 1-based line where the record starts.
    pub line: usize,
    /// The record.
    pub value: Value,
}

/// A boxed stream of records.
pub(crate) type RecordStream = Box<dyn Iterator<Item = Result<RawRecord>>>;

/// How the records of a file are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
    /// CSV with a header row.
    Csv,
}

/// Opens a file for buffered reading, transparently decompressing gzip (by magic bytes).
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let is_gzip = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    if is_gzip {
        let decoder = flate2::read::MultiGzDecoder::new(file);
        Ok(Box::new(BufReader::new(decoder)))
    } else {
        Ok(Box::new(file))
    }
}

/// Guesses the container from the extension and the first non-blank byte.
pub(crate) fn sniff_container(path: &Path) -> Result<Container> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    if stem.ends_with(".csv") {
        return Ok(Container::Csv);
    }
    let mut reader = open_text(path)?;
    let mut buf = [0u8; 1];
    loop {
        let n = reader.read(&mut buf).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        match buf[0] {
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            // A UTF-8 byte-order mark.
            0xEF | 0xBB | 0xBF => continue,
            b'[' => return Ok(Container::JsonArray),
            b'{' => return Ok(Container::JsonLines),
            _ if stem.ends_with(".json") || stem.ends_with(".jsonl") => {
                return Err(DataError::MalformedFile {
                    path: path.to_path_buf(),
                    line: 1,
                    message: "a JSON data file must start with `[` or `{`".into(),
                });
            }
            _ => {
                return Err(DataError::UnknownFormat {
                    path: path.to_path_buf(),
                    reason: "not JSON, JSON lines or CSV".into(),
                });
            }
        }
    }
}

/// Opens the record stream of a file with the given container.
pub(crate) fn open_records(path: &Path, container: Container) -> Result<RecordStream> {
    let reader = open_text(path)?;
    Ok(match container {
        Container::JsonLines => Box::new(JsonLines::new(path, reader)),
        Container::JsonArray => Box::new(JsonArray::new(path, reader)),
        Container::Csv => Box::new(CsvRecords::new(path, reader)?),
    })
}

/// A serde_json error without its record-relative "at line L column C" suffix (the caller
/// reports the file line), keeping the column.
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text
        .rfind(" at line ")
        .map_or(text.as_str(), |i| &text[..i]);
    if e.column() > 0 {
        format!("invalid JSON: {text} (column {})", e.column())
    } else {
        format!("invalid JSON: {text}")
    }
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes)
}

/// JSON lines: one record per non-blank line.
pub(crate) struct JsonLines {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    line: usize,
    buf: Vec<u8>,
    done: bool,
}

impl JsonLines {
    fn new(path: &Path, reader: Box<dyn BufRead>) -> Self {
        Self {
            path: path.to_path_buf(),
            reader,
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }
}

impl Iterator for JsonLines {
    type Item = Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    let bytes = if self.line == 1 {
                        strip_bom(&self.buf)
                    } else {
                        &self.buf[..]
                    };
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let parsed =
                        serde_json::from_slice::<Value>(bytes).map_err(|e| DataError::Malformed {
                            path: self.path.clone(),
                            line: self.line,
                            message: json_message(&e),
                        });
                    return Some(parsed.map(|value| RawRecord {
                        line: self.line,
                        value,
                    }));
                }
                Err(source) => {
                    self.done = true;
                    return Some(Err(DataError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
        }
        None
    }
}

/// Where the JSON array splitter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// Expecting an element or `]`.
    BeforeElement,
    /// Inside an element.
    InElement,
    /// After an element: expecting `,` or `]`.
    AfterElement,
    /// After the closing `]`.
    End,
}

/// A JSON array read element by element: the splitter tracks strings and nesting, so only
/// one element is in memory at a time and each element knows the line it starts on.
pub(crate) struct JsonArray {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    state: ArrayState,
    line: usize,
    elem: Vec<u8>,
    elem_line: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl JsonArray {
    fn new(path: &Path, reader: Box<dyn BufRead>) -> Self {
        Self {
            path: path.to_path_buf(),
            reader,
            state: ArrayState::Start,
            line: 1,
            elem: Vec::new(),
            elem_line: 1,
            depth: 0,
            in_string: false,
            escaped: false,
            done: false,
        }
    }

    fn file_error(&mut self, line: usize, message: impl Into<String>) -> Option<Result<RawRecord>> {
        self.done = true;
        Some(Err(DataError::MalformedFile {
            path: self.path.clone(),
            line,
            message: message.into(),
        }))
    }

    fn finish_element(&mut self) -> Result<RawRecord> {
        let line = self.elem_line;
        let parsed = serde_json::from_slice::<Value>(&self.elem);
        self.elem.clear();
        parsed
            .map(|value| RawRecord { line, value })
            .map_err(|e| DataError::Malformed {
                path: self.path.clone(),
                line: line + e.line().saturating_sub(1),
                message: json_message(&e),
            })
    }
}

impl Iterator for JsonArray {
    type Item = Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(source) => {
                    self.done = true;
                    return Some(Err(DataError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            if chunk.is_empty() {
                return match self.state {
                    ArrayState::End => {
                        self.done = true;
                        None
                    }
                    ArrayState::Start => {
                        self.done = true;
                        Some(Err(DataError::Empty {
                            path: self.path.clone(),
                        }))
                    }
                    ArrayState::InElement => {
                        let line = self.elem_line;
                        self.file_error(
                            line,
                            "unterminated JSON element (missing `}` or `]`?) starting here",
                        )
                    }
                    _ => {
                        let line = self.line;
                        self.file_error(
                            line,
                            "unexpected end of file: the JSON array is not closed with `]`",
                        )
                    }
                };
            }
            let chunk = chunk.to_vec();
            let mut consumed = 0;
            let mut out: Option<Result<RawRecord>> = None;
            for &b in &chunk {
                consumed += 1;
                let at_line = self.line;
                if b == b'\n' {
                    self.line += 1;
                }
                match self.state {
                    ArrayState::Start => match b {
                        b'[' => self.state = ArrayState::BeforeElement,
                        0xEF | 0xBB | 0xBF => {}
                        _ if b.is_ascii_whitespace() => {}
                        _ => {
                            self.reader.consume(consumed);
                            return self.file_error(at_line, "expected a JSON array `[`");
                        }
                    },
                    ArrayState::BeforeElement | ArrayState::AfterElement => match b {
                        _ if b.is_ascii_whitespace() => {}
                        b']' => self.state = ArrayState::End,
                        b',' if self.state == ArrayState::AfterElement => {
                            self.state = ArrayState::BeforeElement;
                        }
                        _ if self.state == ArrayState::BeforeElement && b != b',' => {
                            self.state = ArrayState::InElement;
                            self.elem_line = at_line;
                            self.depth = 0;
                            self.in_string = false;
                            self.escaped = false;
                            self.elem.clear();
                            self.elem.push(b);
                            match b {
                                b'{' | b'[' => self.depth = 1,
                                b'"' => self.in_string = true,
                                _ => {}
                            }
                        }
                        _ => {
                            self.reader.consume(consumed);
                            return self.file_error(
                                at_line,
                                format!("unexpected `{}` between array elements", b as char),
                            );
                        }
                    },
                    ArrayState::InElement => {
                        if self.in_string {
                            self.elem.push(b);
                            if self.escaped {
                                self.escaped = false;
                            } else if b == b'\\' {
                                self.escaped = true;
                            } else if b == b'"' {
                                self.in_string = false;
                            }
                            continue;
                        }
                        match b {
                            b'"' => {
                                self.in_string = true;
                                self.elem.push(b);
                            }
                            b'{' | b'[' => {
                                self.depth += 1;
                                self.elem.push(b);
                            }
                            b'}' | b']' if self.depth > 0 => {
                                self.depth -= 1;
                                self.elem.push(b);
                            }
                            b',' | b']' if self.depth == 0 => {
                                self.state = if b == b']' {
                                    ArrayState::End
                                } else {
                                    ArrayState::BeforeElement
                                };
                                out = Some(self.finish_element());
                                break;
                            }
                            _ => self.elem.push(b),
                        }
                    }
                    ArrayState::End => {
                        if !b.is_ascii_whitespace() {
                            self.reader.consume(consumed);
                            return self
                                .file_error(at_line, "unexpected data after the closing `]`");
                        }
                    }
                }
            }
            self.reader.consume(consumed);
            if out.is_some() {
                return out;
            }
        }
    }
}

/// CSV rows with a header line, each turned into a JSON object of strings.
pub(crate) struct CsvRecords {
    path: PathBuf,
    headers: Vec<String>,
    reader: csv::Reader<Box<dyn BufRead>>,
    record: csv::StringRecord,
    done: bool,
}

impl CsvRecords {
    fn new(path: &Path, reader: Box<dyn BufRead>) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        let headers = reader
            .headers()
            .map_err(|e| csv_error(path, &e, 1))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
            .collect::<Vec<_>>();
        if headers.iter().all(String::is_empty) {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            headers,
            reader,
            record: csv::StringRecord::new(),
            done: false,
        })
    }

    /// The header row.
    pub(crate) fn headers(&self) -> &[String] {
        &self.headers
    }
}

fn csv_error(path: &Path, e: &csv::Error, fallback_line: u64) -> DataError {
    let line = e.position().map(|p| p.line()).unwrap_or(fallback_line);
    match e.kind() {
        csv::ErrorKind::Io(err) => DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(err.kind(), err.to_string()),
        },
        _ => DataError::Malformed {
            path: path.to_path_buf(),
            line: usize::try_from(line).unwrap_or(usize::MAX),
            message: format!("invalid CSV: {e}"),
        },
    }
}

impl Iterator for CsvRecords {
    type Item = Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let last_line = self.reader.position().line();
        match self.reader.read_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map(|p| p.line())
                    .unwrap_or(last_line);
                let line = usize::try_from(line).unwrap_or(usize::MAX);
                let mut map = Map::new();
                for (h, v) in self.headers.iter().zip(self.record.iter()) {
                    map.insert(h.clone(), Value::String(v.to_string()));
                }
                Some(Ok(RawRecord {
                    line,
                    value: Value::Object(map),
                }))
            }
            Err(e) => {
                let err = csv_error(&self.path, &e, last_line);
                if !err.is_record_error() {
                    self.done = true;
                }
                Some(Err(err))
            }
        }
    }
}

/// Opens only the CSV header of a file (for format detection).
pub(crate) fn csv_headers(path: &Path) -> Result<Vec<String>> {
    let reader = open_text(path)?;
    Ok(CsvRecords::new(path, reader)?.headers().to_vec())
}
