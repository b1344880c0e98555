//! Whisper's English number standardisation: the behaviour of transformers'
//! `EnglishNumberNormalizer` (4.57.6), re-implemented.
//!
//! Three passes over the text:
//! 1. [`preprocess`]: `<number> and a half` -> `<number> point five`; a space at every
//!    ASCII letter/digit boundary; a space removed again before `st nd rd th s` suffixes.
//! 2. [`Numbers`]: a left-to-right pass over the words that turns spelled-out numbers into
//!    digits (`twenty one` -> `21`, `one oh five` -> `105`, `point five` -> `.5`, `double
//!    seven` -> `77`), keeps ordinal and plural suffixes (`21st`, `1960s`), and attaches
//!    currency and percent words (`five dollars` -> `$5`, `fifty percent` -> `50%`).
//! 3. [`postprocess`]: `$5 and ¢50` -> `$5.50`, `$0.05` -> `¢5`, and a lone `1`/`1s`
//!    written back as `one`/`ones`.
//!
//! The reference's quirks are kept on purpose (the point is to score the way Whisper users
//! score): `ninth` is not a number word (its table has `nineth`), `point` before a
//! non-decimal number word is dropped, `and a half` on its own disappears, and the
//! `one` rewrite also applies inside `1.5` and `$1`.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use super::english::{decimal_value, is_space, is_word, split_words};

/// A non-negative whole number in decimal digits, without leading zeros (`"0"` for zero).
/// Python's integers are unbounded and so are spelled-out numbers (`nine decillion` is
/// 10^33 * 9), so this is a digit string with the few operations the normaliser needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Int(String);

impl Int {
    /// From decimal digit values (most significant first), leading zeros dropped.
    fn from_digits(digits: impl IntoIterator<Item = u32>) -> Int {
        let s: String = digits
            .into_iter()
            .skip_while(|&d| d == 0)
            .filter_map(|d| char::from_digit(d, 10))
            .collect();
        if s.is_empty() {
            Int("0".into())
        } else {
            Int(s)
        }
    }

    fn small(n: u32) -> Int {
        Int(n.to_string())
    }

    /// 10^exp.
    fn pow10(exp: usize) -> Int {
        Int(format!("1{}", "0".repeat(exp)))
    }

    fn is_zero(&self) -> bool {
        self.0 == "0"
    }

    /// `self % 10^n`.
    fn low(&self, n: usize) -> u32 {
        let start = self.0.len().saturating_sub(n);
        self.0[start..]
            .bytes()
            .fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
    }

    fn add(&self, other: &Int) -> Int {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut sum = Vec::with_capacity(a.len().max(b.len()) + 1);
        let mut carry = 0;
        for k in 0..a.len().max(b.len()) {
            let digit = |s: &[u8]| {
                s.len()
                    .checked_sub(k + 1)
                    .map_or(0, |i| u32::from(s[i] - b'0'))
            };
            let d = digit(a) + digit(b) + carry;
            sum.push(d % 10);
            carry = d / 10;
        }
        if carry > 0 {
            sum.push(carry);
        }
        Int::from_digits(sum.into_iter().rev())
    }

    fn add_small(&self, n: u32) -> Int {
        self.add(&Int::small(n))
    }

    /// `self * 10^exp`.
    fn shifted(&self, exp: usize) -> Int {
        if self.is_zero() {
            self.clone()
        } else {
            Int(format!("{}{}", self.0, "0".repeat(exp)))
        }
    }

    /// The reference's rule for a multiplier word after a whole number: the part below a
    /// thousand is multiplied, the rest kept (`two thousand five hundred` -> 2000 + 5 * 100).
    fn scale_last_group(&self, exp: usize) -> Int {
        let split = self.0.len().saturating_sub(3);
        let thousands = if split == 0 {
            Int::small(0)
        } else {
            Int(format!("{}000", &self.0[..split]))
        };
        thousands.add(&Int::small(self.low(3)).shifted(exp))
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A decimal number read the way Python's `Fraction(str)` reads the strings that occur
/// here: digits, optionally `.` and more digits, at least one digit in all, any Unicode
/// decimal digits. Returns the digit values before and after the point.
fn parse_decimal(s: &str) -> Option<(Vec<u32>, Vec<u32>)> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| t.chars().map(decimal_value).collect::<Option<Vec<u32>>>();
    let whole = digits(whole)?;
    let frac = match frac {
        Some(f) => digits(f)?,
        None => Vec::new(),
    };
    // Python's pattern wants a digit first, or a point and then a digit.
    (!whole.is_empty() || !frac.is_empty()).then_some((whole, frac))
}

/// `re.match(r"^\d+(\.\d+)?$", s)`: digits with an optional fractional part.
fn is_numeric(s: &str) -> bool {
    let all_digits = |t: &str| !t.is_empty() && t.chars().all(|c| decimal_value(c).is_some());
    match s.split_once('.') {
        Some((w, f)) => all_digits(w) && all_digits(f),
        None => all_digits(s),
    }
}

/// `Fraction(s) * 10^exp` when that is a whole number.
fn scaled_whole(s: &str, exp: usize) -> Option<Int> {
    let (whole, frac) = parse_decimal(s)?;
    let kept = frac.len().min(exp);
    if frac[kept..].iter().any(|&d| d != 0) {
        return None;
    }
    let zeros = std::iter::repeat_n(0, exp - kept);
    Some(Int::from_digits(
        whole
            .into_iter()
            .chain(frac[..kept].iter().copied())
            .chain(zeros),
    ))
}

/// What a word means to the normaliser (the reference's word tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// `o`, `oh`, `zero`.
    Zero,
    /// `one` ... `nineteen`.
    One(u32),
    /// Plurals and ordinals of the above: `sixes`, `first`, `zeroth`, `twelfth`.
    OneSuffixed(u32, &'static str),
    /// `twenty` ... `ninety`.
    Ten(u32),
    /// `twenties`, `twentieth`, ...
    TenSuffixed(u32, &'static str),
    /// `hundred`, `thousand`, `million`, ... as a power of ten.
    Multiplier(usize),
    /// `hundreds`, `thousandth`, ...
    MultiplierSuffixed(usize, &'static str),
    /// `minus`, `negative`, `plus`, `positive`: a sign before the number that follows.
    SignPrefix(char),
    /// `dollar(s)`, `pound(s)`, `euro(s)`, `cent(s)`: a symbol before the number before.
    CurrencyPrefix(char),
    /// `per` (of `per cent`).
    Per,
    /// `percent`.
    Percent,
    And,
    Double,
    Triple,
    Point,
}

impl Word {
    fn is_decimal(self) -> bool {
        matches!(self, Word::Zero | Word::One(_) | Word::Ten(_))
    }
}

const ONES: [&str; 19] = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const MULTIPLIERS: [(&str, usize); 12] = [
    ("hundred", 2),
    ("thousand", 3),
    ("million", 6),
    ("billion", 9),
    ("trillion", 12),
    ("quadrillion", 15),
    ("quintillion", 18),
    ("sextillion", 21),
    ("septillion", 24),
    ("octillion", 27),
    ("nonillion", 30),
    ("decillion", 33),
];

/// The word table, built once with the reference's rules.
fn words() -> &'static HashMap<String, Word> {
    static WORDS: OnceLock<HashMap<String, Word>> = OnceLock::new();
    WORDS.get_or_init(|| {
        let mut m = HashMap::new();
        for z in ["o", "oh", "zero"] {
            m.insert(z.to_string(), Word::Zero);
        }
        for (value, name) in (1..).zip(ONES) {
            m.insert(name.to_string(), Word::One(value));
            let plural = if name == "six" {
                "sixes".to_string()
            } else {
                format!("{name}s")
            };
            m.insert(plural, Word::OneSuffixed(value, "s"));
        }
        // Irregular ordinals; the others add `th` (`h` after a `t`), so nine -> `nineth`.
        let irregular = [
            ("zeroth", 0, "th"),
            ("first", 1, "st"),
            ("second", 2, "nd"),
            ("third", 3, "rd"),
            ("fifth", 5, "th"),
            ("twelfth", 12, "th"),
        ];
        for (name, value, suffix) in irregular {
            m.insert(name.to_string(), Word::OneSuffixed(value, suffix));
        }
        for (value, name) in (1..).zip(ONES) {
            if value > 3 && value != 5 && value != 12 {
                let h = if name.ends_with('t') { "h" } else { "th" };
                m.insert(format!("{name}{h}"), Word::OneSuffixed(value, "th"));
            }
        }
        for (value, name) in (2..).map(|t| t * 10).zip(TENS) {
            m.insert(name.to_string(), Word::Ten(value));
            m.insert(name.replace('y', "ies"), Word::TenSuffixed(value, "s"));
            m.insert(name.replace('y', "ieth"), Word::TenSuffixed(value, "th"));
        }
        for (name, exp) in MULTIPLIERS {
            m.insert(name.to_string(), Word::Multiplier(exp));
            m.insert(format!("{name}s"), Word::MultiplierSuffixed(exp, "s"));
            m.insert(format!("{name}th"), Word::MultiplierSuffixed(exp, "th"));
        }
        for (name, sign) in [
            ("minus", '-'),
            ("negative", '-'),
            ("plus", '+'),
            ("positive", '+'),
        ] {
            m.insert(name.to_string(), Word::SignPrefix(sign));
        }
        for (name, symbol) in [
            ("pound", '£'),
            ("pounds", '£'),
            ("euro", '€'),
            ("euros", '€'),
            ("dollar", '$'),
            ("dollars", '$'),
            ("cent", '¢'),
            ("cents", '¢'),
        ] {
            m.insert(name.to_string(), Word::CurrencyPrefix(symbol));
        }
        m.insert("per".into(), Word::Per);
        m.insert("percent".into(), Word::Percent);
        m.insert("and".into(), Word::And);
        m.insert("double".into(), Word::Double);
        m.insert("triple".into(), Word::Triple);
        m.insert("point".into(), Word::Point);
        m
    })
}

fn word(s: &str) -> Option<Word> {
    words().get(s).copied()
}

/// Symbols that may start a numeric token (`$5`).
const PREFIX_SYMBOLS: [char; 6] = ['-', '+', '£', '€', '$', '¢'];

/// The number being read: a whole number, or digits kept as text (`"105"` after `one oh
/// five`, `"1.5"`, `"0"`), as the reference keeps `int` or `str`.
#[derive(Debug, Clone)]
enum Value {
    Int(Int),
    Text(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Text(t) => t.clone(),
        }
    }

    /// Python's `str(value or "")`: a zero integer counts as nothing.
    fn text_or_empty(value: Option<&Value>) -> String {
        match value {
            Some(Value::Int(i)) if i.is_zero() => String::new(),
            Some(v) => v.text(),
            None => String::new(),
        }
    }

    /// `value * 10^exp` when that is a whole number (`Fraction(value) * multiplier`).
    fn scaled(&self, exp: usize) -> Option<Int> {
        match self {
            Value::Int(i) => Some(i.shifted(exp)),
            Value::Text(t) => scaled_whole(t, exp),
        }
    }
}

/// `text` without its last character (Python's `value[:-1]`).
fn drop_last(text: &str) -> &str {
    text.char_indices()
        .next_back()
        .map_or(text, |(i, _)| &text[..i])
}

/// The word pass (`process_words`): the state is the number being read and a pending
/// symbol that goes in front of the next output.
#[derive(Default)]
struct Numbers {
    out: Vec<String>,
    prefix: Option<char>,
    value: Option<Value>,
}

impl Numbers {
    /// Outputs `text` behind the pending symbol; the number and symbol are done.
    fn emit(&mut self, text: String) {
        let mut s = String::with_capacity(text.len() + 2);
        s.extend(self.prefix.take());
        s.push_str(&text);
        self.value = None;
        self.out.push(s);
    }

    /// Outputs the number being read, if any.
    fn flush(&mut self) {
        if let Some(v) = self.value.take() {
            self.emit(v.text());
        }
    }

    /// The number after `one` ... `nineteen` (value `ones`, also for their plurals and
    /// ordinals) that follows the word `prev`.
    fn join_ones(&self, ones: u32, prev: Option<Word>) -> Value {
        match &self.value {
            None => Value::Int(Int::small(ones)),
            Some(Value::Int(i)) if !matches!(prev, Some(Word::One(_))) => {
                // `twenty` + `one`, `hundred` + `twelve`: added when the place is free.
                let free = if ones < 10 { i.low(1) } else { i.low(2) };
                if free == 0 {
                    Value::Int(i.add_small(ones))
                } else {
                    Value::Text(format!("{i}{ones}"))
                }
            }
            Some(v) => {
                // Digit strings (`one two` -> `12`) grow by appending.
                let text = v.text();
                if matches!(prev, Some(Word::Ten(_))) && ones < 10 {
                    // `twenty` wrote `20`: its zero becomes the digit.
                    Value::Text(format!("{}{ones}", drop_last(&text)))
                } else {
                    Value::Text(format!("{text}{ones}"))
                }
            }
        }
    }

    /// `twenty` ... `ninety` after the current value.
    fn join_tens(&self, tens: u32) -> Value {
        match &self.value {
            None => Value::Int(Int::small(tens)),
            Some(Value::Text(t)) => Value::Text(format!("{t}{tens}")),
            Some(Value::Int(i)) if i.low(2) == 0 => Value::Int(i.add_small(tens)),
            Some(Value::Int(i)) => Value::Text(format!("{i}{tens}")),
        }
    }

    fn run(mut self, tokens: &[&str]) -> Vec<String> {
        let mut skip = false;
        for (i, &current) in tokens.iter().enumerate() {
            if std::mem::take(&mut skip) {
                continue;
            }
            let prev = i.checked_sub(1).and_then(|k| word(tokens[k]));
            let next = tokens.get(i + 1).copied();
            let next_word = next.and_then(word);
            let next_is_numeric = next.is_some_and(is_numeric);

            let (symbol, bare) = match current.chars().next() {
                Some(c) if PREFIX_SYMBOLS.contains(&c) => (Some(c), &current[c.len_utf8()..]),
                _ => (None, current),
            };
            if is_numeric(bare) {
                // Digits, perhaps with a sign or currency symbol, perhaps decimal.
                match &self.value {
                    Some(Value::Text(t)) if t.ends_with('.') => {
                        // `point` then digits: `1.` + `5`.
                        self.value = Some(Value::Text(format!("{t}{current}")));
                        continue;
                    }
                    Some(_) => self.flush(),
                    None => {}
                }
                if symbol.is_some() {
                    self.prefix = symbol;
                }
                self.value = Some(match scaled_whole(bare, 0) {
                    Some(whole) => Value::Int(whole),
                    None => Value::Text(bare.to_string()),
                });
                continue;
            }
            let Some(kind) = word(current) else {
                self.flush();
                self.emit(current.to_string());
                continue;
            };
            match kind {
                Word::Zero => {
                    let text = Value::text_or_empty(self.value.as_ref());
                    self.value = Some(Value::Text(text + "0"));
                }
                Word::One(ones) => self.value = Some(self.join_ones(ones, prev)),
                Word::OneSuffixed(ones, suffix) => {
                    let number = self.join_ones(ones, prev).text();
                    self.emit(number + suffix);
                }
                Word::Ten(tens) => self.value = Some(self.join_tens(tens)),
                Word::TenSuffixed(tens, suffix) => {
                    let number = self.join_tens(tens).text();
                    self.emit(number + suffix);
                }
                Word::Multiplier(exp) => {
                    self.value = Some(Value::Int(match self.value.take() {
                        None => Int::pow10(exp),
                        Some(Value::Int(i)) if !i.is_zero() => i.scale_last_group(exp),
                        Some(v) => match v.scaled(exp) {
                            Some(whole) => whole,
                            None => {
                                // `1.2.3 hundred`: not a number; both stay as they are.
                                self.emit(v.text());
                                Int::pow10(exp)
                            }
                        },
                    }));
                }
                Word::MultiplierSuffixed(exp, suffix) => match self.value.take() {
                    None => self.emit(format!("{}{suffix}", Int::pow10(exp))),
                    Some(Value::Int(i)) => {
                        self.emit(format!("{}{suffix}", i.scale_last_group(exp)))
                    }
                    Some(Value::Text(t)) => match scaled_whole(&t, exp) {
                        Some(whole) => self.emit(format!("{whole}{suffix}")),
                        None => {
                            self.emit(t);
                            self.emit(format!("{}{suffix}", Int::pow10(exp)));
                        }
                    },
                },
                Word::SignPrefix(sign) => {
                    self.flush();
                    if next_word.is_some() || next_is_numeric {
                        self.prefix = Some(sign);
                    } else {
                        self.emit(current.to_string());
                    }
                }
                Word::CurrencyPrefix(symbol) => {
                    if self.value.is_some() {
                        self.prefix = Some(symbol);
                        self.flush();
                    } else {
                        self.emit(current.to_string());
                    }
                }
                Word::Per | Word::Percent => match self.value.take() {
                    None => self.emit(current.to_string()),
                    Some(v) if kind == Word::Percent => self.emit(v.text() + "%"),
                    Some(v) if next == Some("cent") => {
                        self.emit(v.text() + "%");
                        skip = true;
                    }
                    Some(v) => {
                        self.emit(v.text());
                        self.emit(current.to_string());
                    }
                },
                Word::And | Word::Double | Word::Triple | Word::Point
                    if next_word.is_none() && !next_is_numeric =>
                {
                    // Only special before something that can be a number.
                    self.flush();
                    self.emit(current.to_string());
                }
                Word::And => {
                    // `and` after `hundred`, `thousand`, ... is part of the number.
                    if !matches!(prev, Some(Word::Multiplier(_))) {
                        self.flush();
                        self.emit(current.to_string());
                    }
                }
                Word::Double | Word::Triple => {
                    let digit = match next_word {
                        Some(Word::One(d)) => Some(d),
                        Some(Word::Zero) => Some(0),
                        _ => None,
                    };
                    if let Some(d) = digit {
                        let times = if kind == Word::Double { 2 } else { 3 };
                        let text = Value::text_or_empty(self.value.as_ref());
                        self.value = Some(Value::Text(text + &d.to_string().repeat(times)));
                        skip = true;
                    } else {
                        self.flush();
                        self.emit(current.to_string());
                    }
                }
                Word::Point => {
                    // Before a non-decimal number word (`point hundred`) the word is dropped.
                    if next_word.is_some_and(Word::is_decimal) || next_is_numeric {
                        let text = Value::text_or_empty(self.value.as_ref());
                        self.value = Some(Value::Text(text + "."));
                    }
                }
            }
        }
        self.flush();
        self.out
    }
}

/// Index after `lit` at byte `i` of `s`, if `s` has it there.
fn literal_at(s: &str, i: usize, lit: &str) -> Option<usize> {
    s[i..].starts_with(lit).then_some(i + lit.len())
}

/// Index after a run of at least one whitespace character at byte `i`.
fn spaces_at(s: &str, i: usize) -> Option<usize> {
    let n: usize = s[i..]
        .chars()
        .take_while(|&c| is_space(c))
        .map(char::len_utf8)
        .sum();
    (n > 0).then_some(i + n)
}

/// Regex `\b` before byte `i`, when the character at `i` is a word character.
fn word_starts_at(s: &str, i: usize) -> bool {
    !s[..i].chars().next_back().is_some_and(is_word)
}

/// Regex `\b` at byte `i`, after a word character.
fn word_ends_at(s: &str, i: usize) -> bool {
    !s[i..].chars().next().is_some_and(is_word)
}

/// Byte ranges of the matches of `\band\s+a\s+half\b`, left to right.
fn and_a_half_matches(s: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let end = Some(i)
            .filter(|&i| word_starts_at(s, i))
            .and_then(|i| literal_at(s, i, "and"))
            .and_then(|j| spaces_at(s, j))
            .and_then(|j| literal_at(s, j, "a"))
            .and_then(|j| spaces_at(s, j))
            .and_then(|j| literal_at(s, j, "half"))
            .filter(|&j| word_ends_at(s, j));
        match end {
            Some(end) => {
                found.push((i, end));
                i = end;
            }
            None => i += s[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

/// The reference's `preprocess`.
fn preprocess(s: &str) -> String {
    // `<number> and a half` -> `<number> point five`; otherwise the words stay, but a
    // segment that is only whitespace (`and a half` at the start) is dropped with its
    // `and a half`.
    let mut segments = Vec::new();
    let mut start = 0;
    for (a, b) in and_a_half_matches(s) {
        segments.push((&s[start..a], true));
        start = b;
    }
    segments.push((&s[start..], false));
    let mut parts: Vec<&str> = Vec::new();
    for (segment, before_half) in segments {
        let mut words = split_words(segment);
        let Some(last) = words.next_back() else {
            continue;
        };
        parts.push(segment);
        if before_half {
            let numeric =
                word(last).is_some_and(|w| w.is_decimal() || matches!(w, Word::Multiplier(_)));
            parts.push(if numeric { "point five" } else { "and a half" });
        }
    }
    let s = parts.join(" ");

    // A space at each letter/digit boundary (ASCII only, as `[a-z]`, `[0-9]`).
    let mut spaced = String::with_capacity(s.len() + 8);
    let mut last: Option<char> = None;
    for c in s.chars() {
        if let Some(p) = last
            && ((p.is_ascii_lowercase() && c.is_ascii_digit())
                || (p.is_ascii_digit() && c.is_ascii_lowercase()))
        {
            spaced.push(' ');
        }
        spaced.push(c);
        last = Some(c);
    }

    // ... but `([0-9])\s+(st|nd|rd|th|s)\b` -> `\1\2`.
    let s = spaced;
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let after = i + c.len_utf8();
        if c.is_ascii_digit()
            && let Some(j) = spaces_at(&s, after)
            && let Some(end) = ["st", "nd", "rd", "th", "s"]
                .iter()
                .filter_map(|suffix| literal_at(&s, j, suffix))
                .find(|&end| word_ends_at(&s, end))
        {
            out.push(c);
            out.push_str(&s[j..end]);
            i = end;
        } else {
            out.push(c);
            i = after;
        }
    }
    out
}

/// Index after 1 or 2 ASCII digits at `i` that end a word (`[0-9]{1,2}\b`).
fn cents_at(s: &str, i: usize) -> Option<usize> {
    let digits = s[i..]
        .bytes()
        .take(2)
        .take_while(u8::is_ascii_digit)
        .count();
    (1..=digits)
        .rev()
        .map(|n| i + n)
        .find(|&end| word_ends_at(s, end))
}

fn is_currency(c: char) -> bool {
    matches!(c, '€' | '£' | '$')
}

/// The reference's `postprocess`.
fn postprocess(s: &str) -> String {
    // `([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b` -> `$2.07`.
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let after = i + c.len_utf8();
        let digits = s[after..].bytes().take_while(u8::is_ascii_digit).count();
        let matched = Some(after + digits)
            .filter(|_| is_currency(c) && digits > 0)
            .and_then(|j| literal_at(s, j, " "))
            .map(|j| literal_at(s, j, "and ").unwrap_or(j))
            .and_then(|j| literal_at(s, j, "¢"))
            .and_then(|j| cents_at(s, j).map(|end| (j, end)));
        if let Some((cents_start, end)) = matched {
            let cents: u32 = s[cents_start..end].parse().unwrap_or(0);
            out.push(c);
            out.push_str(&s[after..after + digits]);
            out.push_str(&format!(".{cents:02}"));
            i = end;
        } else {
            out.push(c);
            i = after;
        }
    }

    // `[€£$]0.([0-9]{1,2})\b` -> `¢5` (the `.` is any character but a newline).
    let s = out;
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let after = i + c.len_utf8();
        let matched = Some(after)
            .filter(|_| is_currency(c))
            .and_then(|j| literal_at(&s, j, "0"))
            .and_then(|j| {
                s[j..]
                    .chars()
                    .next()
                    .filter(|&d| d != '\n')
                    .map(|d| j + d.len_utf8())
            })
            .and_then(|j| cents_at(&s, j).map(|end| (j, end)));
        if let Some((cents_start, end)) = matched {
            let cents: u32 = s[cents_start..end].parse().unwrap_or(0);
            out.push_str(&format!("¢{cents}"));
            i = end;
        } else {
            out.push(c);
            i = after;
        }
    }

    // `\b1(s?)\b` -> `one\1`.
    let s = out;
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let after = i + c.len_utf8();
        let end = Some(after)
            .filter(|_| c == '1' && word_starts_at(&s, i))
            .and_then(|j| {
                literal_at(&s, j, "s")
                    .filter(|&e| word_ends_at(&s, e))
                    .or(Some(j).filter(|&e| word_ends_at(&s, e)))
            });
        if let Some(end) = end {
            out.push_str("one");
            out.push_str(&s[after..end]);
            i = end;
        } else {
            out.push(c);
            i = after;
        }
    }
    out
}

/// Spelled-out numbers to digits (transformers' `EnglishNumberNormalizer.__call__`). The
/// words come back joined by single spaces.
pub(super) fn standardize_numbers(s: &str) -> String {
    let s = preprocess(s);
    let tokens: Vec<&str> = split_words(&s).collect();
    let words = Numbers::default().run(&tokens);
    postprocess(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbounded_integers() {
        let a = Int::from_digits([9, 9, 9]);
        assert_eq!(a.add_small(1).to_string(), "1000");
        assert_eq!(Int::pow10(33).add(&Int::small(7)).low(2), 7);
        assert_eq!(Int::small(2005).scale_last_group(3).to_string(), "7000");
        assert_eq!(Int::small(12345).scale_last_group(2).to_string(), "46500");
        assert_eq!(Int::small(0).shifted(3).to_string(), "0");
    }

    #[test]
    fn decimals_scale_like_fractions() {
        assert_eq!(
            scaled_whole("1.5", 2).map(|i| i.to_string()),
            Some("150".into())
        );
        assert_eq!(scaled_whole("1.505", 2), None);
        assert_eq!(
            scaled_whole("05", 2).map(|i| i.to_string()),
            Some("500".into())
        );
        assert_eq!(
            scaled_whole(".5", 3).map(|i| i.to_string()),
            Some("500".into())
        );
        assert_eq!(
            scaled_whole("5.00", 0).map(|i| i.to_string()),
            Some("5".into())
        );
        assert_eq!(scaled_whole("1.2.3", 2), None);
        assert_eq!(scaled_whole(".", 2), None);
        assert!(is_numeric("12.5") && !is_numeric("12.") && !is_numeric(".5"));
    }

    #[test]
    fn word_table() {
        assert_eq!(word("nineth"), Some(Word::OneSuffixed(9, "th")));
        assert_eq!(word("ninth"), None);
        assert_eq!(word("eighth"), Some(Word::OneSuffixed(8, "th")));
        assert_eq!(word("sixes"), Some(Word::OneSuffixed(6, "s")));
        assert_eq!(word("sixs"), None);
        assert_eq!(word("forties"), Some(Word::TenSuffixed(40, "s")));
        assert_eq!(word("millionth"), Some(Word::MultiplierSuffixed(6, "th")));
    }

    #[test]
    fn numbers() {
        let cases = [
            ("twenty one", "21"),
            ("two thousand and five", "2005"),
            ("one oh five", "105"),
            ("twenty first", "21st"),
            ("the nineteen sixties", "the 1960s"),
            ("three point one four", "3.14"),
            ("five dollars and fifty cents", "$5.50"),
            ("fifty per cent", "50%"),
            ("double seven", "77"),
            ("two and a half", "2.5"),
            ("one", "one"),
        ];
        for (input, expected) in cases {
            assert_eq!(standardize_numbers(input), expected, "{input}");
        }
    }
}
