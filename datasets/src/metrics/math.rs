//! Math answers: extraction of the final answer from generated text and numeric comparison.
//!
//! Extraction ([`extract_answer`]), in order: the text after the last `####`; the text after
//! the last `The answer is` (with or without `:`; case-insensitive); otherwise the last number
//! in the text. Numbers may carry commas (`1,000`), a `$`, a sign (`-3`), decimals (`2.5`,
//! `.5`) or be fractions (`3/4`). A non-numeric answer after `The answer is` (a multiple-choice
//! letter such as `(C)`) is kept as text.

use std::ops::Range;

/// How close two numbers must be to count as equal: `|p - g| <= abs`, or
/// `|p - g| <= rel * |g|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance (default `1e-3`, enough for answers written to 3 decimals).
    pub abs: f64,
    /// Relative tolerance (default `1e-6`).
    pub rel: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            abs: 1e-3,
            rel: 1e-6,
        }
    }
}

/// Writes a number the short way: integers without a fraction (`51.0` -> `51`), others with
/// Rust's shortest round-trip form (`1.8333333333333335`).
pub fn format_number(x: f64) -> String {
    // Turn -0 into 0.
    let x = if x == 0.0 { 0.0 } else { x };
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Parses a string that is one number: `1,000`, `$5`, `-3.5`, `.5`, `3/4`, `50%` (-> 50),
/// with surrounding spaces and a trailing full stop allowed. `None` otherwise.
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim().trim_end_matches('.').trim();
    let spans = find_numbers(t);
    match spans.as_slice() {
        [(range, x)] => {
            let rest = format!("{}{}", &t[..range.start], &t[range.end..]);
            let rest = rest.trim();
            (rest.is_empty() || rest == "%").then_some(*x)
        }
        _ => None,
    }
}

/// Every number in `text`, with its byte range, in order.
pub fn find_numbers(text: &str) -> Vec<(Range<usize>, f64)> {
    let b = text.as_bytes();
    let n = b.len();
    let digits_from = |mut i: usize| {
        while i < n && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let prev_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let mut j = i;
        let mut negative = false;
        if b[j] == b'-'
            && !prev_word
            && i + 1 < n
            && (b[i + 1].is_ascii_digit() || b[i + 1] == b'$' || b[i + 1] == b'.')
        {
            negative = true;
            j += 1;
        }
        if j < n && b[j] == b'$' {
            j += 1;
        }
        let int_start = j;
        let int_end = digits_from(j);
        let starts_with_dot =
            int_end == int_start && j + 1 < n && b[j] == b'.' && b[j + 1].is_ascii_digit();
        if int_end == int_start && !starts_with_dot {
            i += 1;
            continue;
        }
        // A digit run glued to letters before it (e.g. "x2") still counts; "-" glued to a
        // word is a hyphen, handled above.
        let mut text_num = String::new();
        text_num.push_str(&text[int_start..int_end]);
        let mut k = int_end;
        // Thousands separators: ",ddd" not followed by another digit.
        while int_end > int_start
            && k + 4 <= n
            && b[k] == b','
            && b[k + 1..k + 4].iter().all(u8::is_ascii_digit)
            && (k + 4 == n || !b[k + 4].is_ascii_digit())
        {
            text_num.push_str(&text[k + 1..k + 4]);
            k += 4;
        }
        let mut value;
        if k + 1 < n && b[k] == b'.' && b[k + 1].is_ascii_digit() {
            let frac_end = digits_from(k + 1);
            text_num.push_str(&text[k..frac_end]);
            k = frac_end;
            value = text_num.parse::<f64>().ok();
        } else {
            value = text_num.parse::<f64>().ok();
            // A fraction "a/b" of integers.
            if k + 1 < n && b[k] == b'/' && b[k + 1].is_ascii_digit() {
                let den_end = digits_from(k + 1);
                let den = text[k + 1..den_end].parse::<f64>().ok();
                if let (Some(num), Some(den)) = (value, den)
                    && den != 0.0
                {
                    value = Some(num / den);
                    k = den_end;
                }
            }
        }
        if let Some(mut v) = value {
            if negative {
                v = -v;
            }
            out.push((i..k, v));
        }
        i = k.max(i + 1);
    }
    out
}

/// The final answer in a generated solution (see the module docs), written canonically
/// (numbers via [`format_number`]). `None` when the text holds no answer.
pub fn extract_answer(text: &str) -> Option<String> {
    if let Some(pos) = text.rfind("####") {
        let seg = &text[pos + 4..];
        return first_number(seg).or_else(|| word_answer(seg));
    }
    let lower = text.to_ascii_lowercase();
    if let Some(pos) = lower.rfind("the answer is") {
        let seg = &text[pos + "the answer is".len()..];
        let seg = seg.trim_start().trim_start_matches(':');
        return first_number(seg).or_else(|| word_answer(seg));
    }
    find_numbers(text).last().map(|(_, x)| format_number(*x))
}

fn first_number(seg: &str) -> Option<String> {
    // Only look at the first line after the marker.
    let line = seg.trim_start().lines().next().unwrap_or("");
    find_numbers(line).first().map(|(_, x)| format_number(*x))
}

/// A non-numeric answer: the first word, without brackets and punctuation (`(C).` -> `C`).
fn word_answer(seg: &str) -> Option<String> {
    let word = seg.split_whitespace().next()?;
    let w = word.trim_matches(|c: char| !c.is_alphanumeric());
    (!w.is_empty()).then(|| w.to_string())
}

/// Whether a predicted answer equals a gold answer: numerically within `tol` when both are
/// numbers, otherwise as case-insensitive text without surrounding punctuation.
pub fn answers_match(pred: &str, gold: &str, tol: Tolerance) -> bool {
    match (parse_number(pred), parse_number(gold)) {
        (Some(p), Some(g)) => {
            let d = (p - g).abs();
            d <= tol.abs || d <= tol.rel * g.abs()
        }
        _ => {
            let norm = |s: &str| {
                s.trim()
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            };
            let p = norm(pred);
            !p.is_empty() && p == norm(gold)
        }
    }
}

/// Whether the answer extracted from a generated `prediction` matches any gold answer.
pub fn is_correct(prediction: &str, golds: &[String], tol: Tolerance) -> bool {
    extract_answer(prediction).is_some_and(|p| golds.iter().any(|g| answers_match(&p, g, tol)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(t: &str) -> Vec<f64> {
        find_numbers(t).into_iter().map(|(_, x)| x).collect()
    }

    #[test]
    fn finds_numbers() {
        assert_eq!(
            nums("a 1,234 b -5 c $3.50 d 3/4 e .5"),
            vec![1234.0, -5.0, 3.5, 0.75, 0.5]
        );
        assert_eq!(nums("pages 12-15"), vec![12.0, 15.0]);
        assert_eq!(nums("1,2,3"), vec![1.0, 2.0, 3.0]);
        assert_eq!(nums("-$7"), vec![-7.0]);
    }

    #[test]
    fn parses_single_numbers() {
        assert_eq!(parse_number(" 1,000 "), Some(1000.0));
        assert_eq!(parse_number("$18."), Some(18.0));
        assert_eq!(parse_number("-15.0"), Some(-15.0));
        assert_eq!(parse_number("50%"), Some(50.0));
        assert_eq!(parse_number("7/2"), Some(3.5));
        assert_eq!(parse_number("C"), None);
        assert_eq!(parse_number("1 2"), None);
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(format_number(51.0), "51");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(-15.0), "-15");
        assert_eq!(format_number(0.5), "0.5");
    }
}
