//! Whisper's English text normaliser: the behaviour of transformers'
//! `EnglishTextNormalizer` (4.57.6) with Whisper's spelling mapping, re-implemented step by
//! step (see [`normalize_english`]). Character classes follow Python's `re` module: `\w` is
//! a letter, number or `_`, `\s` is Python's whitespace, `\d` any Unicode decimal digit,
//! while `[0-9]` and `[a-z]` are ASCII.

use std::collections::HashMap;
use std::sync::OnceLock;

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

use super::numbers::standardize_numbers;

/// Python's `str.isspace` / regex `\s` (Unicode whitespace and the ASCII separators
/// `\x1c`-`\x1f`).
pub(super) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's regex `\w`: a letter, a number or `_`.
pub(super) fn is_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        c.is_letter() || c.is_number()
    }
}

/// The value of a Unicode decimal digit (regex `\d`, Python's `int()`), any script.
pub(super) fn decimal_value(c: char) -> Option<u32> {
    if c.is_ascii_digit() {
        return c.to_digit(10);
    }
    if !c.is_number_decimal_digit() {
        return None;
    }
    // Unicode assigns decimal digits in contiguous runs 0..9, so the value is the
    // position in the run of digits before it.
    let before = (0..u32::from(c))
        .rev()
        .map_while(|p| char::from_u32(p).filter(|p| p.is_number_decimal_digit()))
        .count();
    u32::try_from(before % 10).ok()
}

/// Python's `str.split()`: the words between runs of whitespace.
pub(super) fn split_words(s: &str) -> impl DoubleEndedIterator<Item = &str> {
    s.split(is_space).filter(|w| !w.is_empty())
}

/// Regex `\b` before byte `i`, when the character at `i` is a word character.
pub(super) fn word_starts_at(s: &str, i: usize) -> bool {
    !s[..i].chars().next_back().is_some_and(is_word)
}

/// Regex `\b` at byte `i`, after a word character.
pub(super) fn word_ends_at(s: &str, i: usize) -> bool {
    !s[i..].chars().next().is_some_and(is_word)
}

/// Removes every `open ... close` span (`close` the first closing character after the
/// opening one; with `non_empty`, `()` is kept), left to right.
fn cut_spans(s: &str, open: &[char], close: &[char], non_empty: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let inner = &rest[c.len_utf8()..];
        if open.contains(&c) {
            match inner.find(close) {
                // Nothing closes after this point: no further span either.
                None => break,
                Some(k) if non_empty && k == 0 => {}
                Some(k) => {
                    let closing = inner[k..].chars().next().map_or(0, char::len_utf8);
                    rest = &inner[k + closing..];
                    continue;
                }
            }
        }
        out.push(c);
        rest = inner;
    }
    out.push_str(rest);
    out
}

/// `[<\[][^>\]]*[>\]]` and then `\(([^)]+?)\)` removed: text in `[...]`, `<...>` (either
/// closing character ends either) and non-empty `(...)`.
pub(super) fn remove_bracketed(s: &str) -> String {
    let s = cut_spans(s, &['[', '<'], &[']', '>'], false);
    cut_spans(&s, &['('], &[')'], true)
}

/// Fillers Whisper ignores (`\b(hmm|mm|mhm|mmm|uh|um)\b`).
const FILLERS: [&str; 6] = ["hmm", "mm", "mhm", "mmm", "uh", "um"];

/// Removes the words (maximal runs of word characters) that are fillers.
fn remove_fillers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let len = if is_word(c) {
            rest.find(|c| !is_word(c)).unwrap_or(rest.len())
        } else {
            c.len_utf8()
        };
        let (piece, tail) = rest.split_at(len);
        if !FILLERS.contains(&piece) {
            out.push_str(piece);
        }
        rest = tail;
    }
    out
}

/// `\s+'` -> `'`.
fn join_apostrophes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut spaces = String::new();
    for c in s.chars() {
        if is_space(c) {
            spaces.push(c);
            continue;
        }
        if c != '\'' {
            out.push_str(&spaces);
        }
        spaces.clear();
        out.push(c);
    }
    out.push_str(&spaces);
    out
}

/// Replaces `pattern` where it ends a word (regex `pattern\b`) and, with `whole_word`,
/// also starts one (`\bpattern\b`); left to right, without overlaps.
fn replace_word(s: &str, pattern: &str, with: &str, whole_word: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(k) = s[from..].find(pattern) {
        let at = from + k;
        let end = at + pattern.len();
        if (!whole_word || word_starts_at(s, at)) && word_ends_at(s, end) {
            out.push_str(&s[copied..at]);
            out.push_str(with);
            copied = end;
            from = end;
        } else {
            from = at + s[at..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Whisper's contraction and title replacements, in its order: `(pattern, replacement,
/// whole_word)`.
const REPLACERS: &[(&str, &str, bool)] = &[
    // Common contractions.
    ("won't", "will not", true),
    ("can't", "can not", true),
    ("let's", "let us", true),
    ("ain't", "aint", true),
    ("y'all", "you all", true),
    ("wanna", "want to", true),
    ("gotta", "got to", true),
    ("gonna", "going to", true),
    ("i'ma", "i am going to", true),
    ("imma", "i am going to", true),
    ("woulda", "would have", true),
    ("coulda", "could have", true),
    ("shoulda", "should have", true),
    ("ma'am", "madam", true),
    // Titles and prefixes.
    ("mr", "mister ", true),
    ("mrs", "missus ", true),
    ("st", "saint ", true),
    ("dr", "doctor ", true),
    ("prof", "professor ", true),
    ("capt", "captain ", true),
    ("gov", "governor ", true),
    ("ald", "alderman ", true),
    ("gen", "general ", true),
    ("sen", "senator ", true),
    ("rep", "representative ", true),
    ("pres", "president ", true),
    ("rev", "reverend ", true),
    ("hon", "honorable ", true),
    ("asst", "assistant ", true),
    ("assoc", "associate ", true),
    ("lt", "lieutenant ", true),
    ("col", "colonel ", true),
    ("jr", "junior ", true),
    ("sr", "senior ", true),
    ("esq", "esquire ", true),
    // Perfect tenses.
    ("'d been", " had been", false),
    ("'s been", " has been", false),
    ("'d gone", " had gone", false),
    ("'s gone", " has gone", false),
    ("'d done", " had done", false),
    ("'s got", " has got", false),
    // General contractions.
    ("n't", " not", false),
    ("'re", " are", false),
    ("'s", " is", false),
    ("'d", " would", false),
    ("'ll", " will", false),
    ("'t", " not", false),
    ("'ve", " have", false),
    ("'m", " am", false),
];

/// `(\d),(\d)` -> `\1\2`. Matches do not overlap, so `1,2,3` becomes `12,3`, as in Python.
fn join_digit_commas(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let digit = |i: usize| chars.get(i).is_some_and(|&c| decimal_value(c).is_some());
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        out.push(chars[i]);
        if digit(i) && chars.get(i + 1) == Some(&',') && digit(i + 2) {
            out.push(chars[i + 2]);
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// `\.([^0-9]|$)` -> ` \1`: a full stop not before an ASCII digit becomes a space (the
/// character after it is consumed, so `..` becomes ` .`).
fn drop_periods(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('.', Some(next)) if !next.is_ascii_digit() => {
                out.push(' ');
                out.extend(chars.next());
            }
            ('.', None) => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Letters that NFKD does not split into a base letter and a mark.
fn additional_diacritic(c: char) -> Option<&'static str> {
    Some(match c {
        'œ' => "oe",
        'Œ' => "OE",
        'ø' => "o",
        'Ø' => "O",
        'æ' => "ae",
        'Æ' => "AE",
        'ß' => "ss",
        'ẞ' => "SS",
        'đ' | 'ð' => "d",
        'Đ' | 'Ð' => "D",
        'þ' | 'Þ' => "th",
        'ł' => "l",
        'Ł' => "L",
        _ => return None,
    })
}

/// Symbols kept for the number standardisation.
const NUMERIC_SYMBOLS: [char; 6] = ['.', '%', '$', '¢', '€', '£'];

/// Whisper's `remove_symbols_and_diacritics(s, keep=".%$¢€£")`: NFKD, then non-spacing
/// marks dropped, other marks, symbols and punctuation replaced by a space.
fn remove_symbols_and_diacritics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfkd() {
        if NUMERIC_SYMBOLS.contains(&c) {
            out.push(c);
        } else if let Some(folded) = additional_diacritic(c) {
            out.push_str(folded);
        } else if c.is_mark_nonspacing() {
            continue;
        } else if c.is_mark() || c.is_symbol() || c.is_punctuation() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// British -> American spellings: `whisper/normalizers/english.json` of the openai-whisper
/// package (MIT licence, Copyright (c) 2022 OpenAI).
const SPELLING_JSON: &str = include_str!("english_spelling.json");

fn spellings() -> &'static HashMap<String, String> {
    static MAP: OnceLock<HashMap<String, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        serde_json::from_str(SPELLING_JSON).expect("english_spelling.json is a JSON object")
    })
}

/// Whisper's `EnglishSpellingNormalizer`: each word mapped, joined by single spaces.
fn standardize_spellings(s: &str) -> String {
    let map = spellings();
    split_words(s)
        .map(|w| map.get(w).map_or(w, String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `[.$¢€£]([^0-9])` -> ` \1` and then `([^0-9])%` -> `\1 `: the symbols kept for numbers
/// go unless a digit follows (or precedes, for `%`). As in Python, a symbol at the very
/// end (or a `%` at the very start) has nothing to match with and stays.
fn remove_loose_symbols(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(next) if matches!(c, '.' | '$' | '¢' | '€' | '£') && !next.is_ascii_digit() => {
                out.push(' ');
                out.extend(chars.next());
            }
            _ => out.push(c),
        }
    }
    let s = out;
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if !c.is_ascii_digit() && chars.next_if_eq(&'%').is_some() {
            out.push(' ');
        }
    }
    out
}

/// `\s+` -> ` ` (like Whisper, without trimming the ends).
fn squeeze_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.chars() {
        if is_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// Whisper's English normalisation, as transformers' `EnglishTextNormalizer` with Whisper's
/// spelling mapping computes it, in its order:
///
/// 1. lower-case;
/// 2. remove text in `[...]` / `<...>`, then in `(...)`;
/// 3. remove the fillers `hmm mm mhm mmm uh um`;
/// 4. join a space before an apostrophe;
/// 5. expand Whisper's contractions and titles (`won't` -> `will not`, `n't` -> ` not`,
///    `'s` -> ` is`, `mr` -> `mister`, ...);
/// 6. remove commas between digits; full stops not before a digit become spaces;
/// 7. NFKD; drop diacritics (and fold `æ ø ß ł ...`); symbols and punctuation other than
///    `. % $ ¢ € £` become spaces;
/// 8. spelled-out numbers to digits (`twenty one` -> `21`, `fifty percent` -> `50%`,
///    `five dollars and ten cents` -> `$5.10`, `nineteen eighties` -> `1980s`);
/// 9. British to American spelling (`colour` -> `color`);
/// 10. `. $ ¢ € £` not before a digit and `%` not after one become spaces; whitespace
///     runs become one space.
///
/// Like Whisper's, the result is not trimmed: it can start or end with one space (`$a`
/// gives ` a`); word and character error rates ignore that.
pub fn normalize_english(s: &str) -> String {
    let mut s = remove_bracketed(&s.to_lowercase());
    s = remove_fillers(&s);
    s = join_apostrophes(&s);
    for (pattern, with, whole_word) in REPLACERS {
        s = replace_word(&s, pattern, with, *whole_word);
    }
    s = join_digit_commas(&s);
    s = drop_periods(&s);
    s = remove_symbols_and_diacritics(&s);
    s = standardize_numbers(&s);
    s = standardize_spellings(&s);
    s = remove_loose_symbols(&s);
    squeeze_spaces(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_replacement_follows_regex_boundaries() {
        assert_eq!(
            replace_word("mr smith mrs x", "mr", "mister ", true),
            "mister  smith mrs x"
        );
        assert_eq!(replace_word("don't", "n't", " not", false), "do not");
        assert_eq!(replace_word("xmr mr_ mr.", "mr", "M", true), "xmr mr_ M.");
    }

    #[test]
    fn fillers_are_whole_words() {
        assert_eq!(
            remove_fillers("umbrella um, mmm hmm_ uh"),
            "umbrella ,  hmm_ "
        );
    }

    #[test]
    fn brackets_in_two_passes() {
        assert_eq!(remove_bracketed("a [b] <c] d (e) () (f"), "a   d  () (f");
        assert_eq!(remove_bracketed("(a [b) c]"), "(a ");
    }

    #[test]
    fn python_regex_overlaps() {
        assert_eq!(join_digit_commas("1,2,3 1,000,000"), "12,3 1000000");
        assert_eq!(drop_periods("a..b. 1.5."), "a .b  1.5 ");
        assert_eq!(
            remove_loose_symbols("$a $5 x$ %5 a%% 5%"),
            " a $5 x   5 a % 5%"
        );
    }

    #[test]
    fn unicode_classes() {
        assert_eq!(decimal_value('٣'), Some(3));
        assert_eq!(decimal_value('𝟗'), Some(9));
        assert_eq!(decimal_value('½'), None);
        assert!(is_word('é') && is_word('_') && !is_word('\''));
        assert!(is_space('\u{1f}') && !is_space('\u{200b}'));
    }

    #[test]
    fn spelling_map_loads() {
        assert_eq!(spellings().len(), 1739);
        assert_eq!(
            standardize_spellings(" colour  of  the  aeroplane "),
            "color of the airplane"
        );
    }
}
