//! Field access with errors that name the file, the line and the field.

use std::path::Path;

use serde_json::{Map, Value};

use crate::metrics::math::{format_number, parse_number};
use crate::{DataError, Result};

/// Where a record came from, for error messages and fallback ids.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordCtx<'a> {
    /// The file.
    pub path: &'a Path,
    /// 1-based line where the record starts.
    pub line: usize,
    /// 0-based index of the record among the file's records.
    pub index: usize,
    /// Data set name.
    pub source: &'a str,
}

impl RecordCtx<'_> {
    /// A missing-field error.
    pub fn missing(&self, field: &str) -> DataError {
        DataError::MissingField {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.to_string(),
        }
    }

    /// A bad-field error.
    pub fn bad(&self, field: &str, message: impl Into<String>) -> DataError {
        DataError::BadField {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The record as a JSON object.
    pub fn object<'v>(&self, value: &'v Value) -> Result<&'v Map<String, Value>> {
        value.as_object().ok_or_else(|| DataError::Malformed {
            path: self.path.to_path_buf(),
            line: self.line,
            message: format!("expected a JSON object, found {}", kind(value)),
        })
    }

    /// A required field (`null` counts as missing).
    pub fn field<'v>(&self, obj: &'v Map<String, Value>, name: &str) -> Result<&'v Value> {
        match obj.get(name) {
            None | Some(Value::Null) => Err(self.missing(name)),
            Some(v) => Ok(v),
        }
    }

    /// A required string field.
    pub fn str_field<'v>(&self, obj: &'v Map<String, Value>, name: &str) -> Result<&'v str> {
        let v = self.field(obj, name)?;
        v.as_str()
            .ok_or_else(|| self.bad(name, format!("expected a string, found {}", kind(v))))
    }

    /// An optional string field (absent or `null` gives `None`).
    pub fn opt_str<'v>(&self, obj: &'v Map<String, Value>, name: &str) -> Result<Option<&'v str>> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(name, format!("expected a string, found {}", kind(v)))),
        }
    }

    /// A required non-empty string field (after trimming).
    pub fn text_field(&self, obj: &Map<String, Value>, name: &str) -> Result<String> {
        let s = self.str_field(obj, name)?.trim();
        if s.is_empty() {
            return Err(self.bad(name, "is empty"));
        }
        Ok(s.to_string())
    }

    /// A required answer given as a number or a string; numbers are written canonically
    /// (`51.0` -> `51`), other strings are kept (trimmed).
    pub fn answer_field(&self, obj: &Map<String, Value>, name: &str) -> Result<String> {
        let v = self.field(obj, name)?;
        answer_value(v).ok_or_else(|| {
            self.bad(
                name,
                format!("expected a non-empty number or string, found {}", kind(v)),
            )
        })
    }

    /// An id field given as a string or number, or `<source>-<index>` when absent.
    pub fn id_field(&self, obj: &Map<String, Value>, name: &str) -> String {
        match obj.get(name) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => self.fallback_id(),
        }
    }

    /// `<source>-<index>`.
    pub fn fallback_id(&self) -> String {
        format!("{}-{}", self.source, self.index)
    }
}

/// Canonical answer text of a JSON number or string; `None` for empty strings and other types.
pub(crate) fn answer_value(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_f64().map(format_number),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() {
                None
            } else {
                Some(canonical_answer(s))
            }
        }
        _ => None,
    }
}

/// Writes an answer string canonically when it is a plain number (`"576.0"` -> `"576"`,
/// `"1,000"` -> `"1000"`); anything else is returned unchanged.
pub(crate) fn canonical_answer(s: &str) -> String {
    match parse_number(s) {
        Some(x) if is_plain_number(s) => format_number(x),
        _ => s.to_string(),
    }
}

/// Whether `s` is a plain decimal number (optional sign, digits, commas, one dot, `$`).
fn is_plain_number(s: &str) -> bool {
    let t = s.trim().trim_start_matches('$');
    let t = t.strip_prefix('-').unwrap_or(t);
    !t.is_empty()
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
        && t.matches('.').count() <= 1
}

/// A short name of a JSON value's type.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
