//! Word and character error rates with Whisper-style English normalisation.
//!
//! [`normalize_english`] implements these steps of Whisper's `EnglishTextNormalizer`, in its
//! order: lower-case; remove text in `[...]`, `<...>` and `(...)`; remove the fillers
//! `hmm mm mhm mmm uh um`; join a space before an apostrophe; expand Whisper's list of
//! contractions and titles (`won't` -> `will not`, `n't` -> ` not`, `'s` -> ` is`, `mr` ->
//! `mister`, ...); remove commas between digits; drop full stops not followed by a digit;
//! replace other symbols and punctuation with spaces (keeping `. % $ ¢ € £` next to
//! numbers); fold common Latin accents (`é` -> `e`); collapse whitespace.
//!
//! Not implemented (documented deviation): Whisper's number standardisation
//! (`twenty one` -> `21`) and British-to-American spelling map. Both sides of a comparison
//! get the same normalisation, so this only matters where a model writes digits for spoken
//! numbers; LibriSpeech transcripts spell numbers out.

/// Counts of an alignment between a reference and a hypothesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EditCounts {
    /// Matching units.
    pub hits: usize,
    /// Substituted units.
    pub substitutions: usize,
    /// Reference units missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis units not in the reference.
    pub insertions: usize,
}

impl EditCounts {
    /// Substitutions + deletions + insertions.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Length of the reference (hits + substitutions + deletions).
    pub fn reference_len(&self) -> usize {
        self.hits + self.substitutions + self.deletions
    }

    /// Error rate in 0..=inf (errors / reference length); 0 for an empty reference and
    /// hypothesis, 1 per inserted unit for an empty reference.
    pub fn rate(&self) -> f64 {
        let n = self.reference_len();
        if n == 0 {
            self.insertions as f64
        } else {
            self.errors() as f64 / n as f64
        }
    }

    /// Adds another count (for corpus-level rates).
    pub fn add(&mut self, other: EditCounts) {
        self.hits += other.hits;
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
    }
}

/// Levenshtein alignment of two sequences with unit costs. Among alignments of minimal
/// cost, the backtrace prefers hit/substitution, then deletion, then insertion.
pub fn align<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> EditCounts {
    let (n, m) = (reference.len(), hypothesis.len());
    let w = m + 1;
    let mut d = vec![0usize; (n + 1) * w];
    for (i, row_start) in d.iter_mut().step_by(w).enumerate() {
        *row_start = i;
    }
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let diag = d[(i - 1) * w + j - 1] + usize::from(reference[i - 1] != hypothesis[j - 1]);
            let del = d[(i - 1) * w + j] + 1;
            let ins = d[i * w + j - 1] + 1;
            d[i * w + j] = diag.min(del).min(ins);
        }
    }
    let mut c = EditCounts::default();
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        let here = d[i * w + j];
        if i > 0 && j > 0 {
            let same = reference[i - 1] == hypothesis[j - 1];
            if d[(i - 1) * w + j - 1] + usize::from(!same) == here {
                if same {
                    c.hits += 1;
                } else {
                    c.substitutions += 1;
                }
                i -= 1;
                j -= 1;
                continue;
            }
        }
        if i > 0 && d[(i - 1) * w + j] + 1 == here {
            c.deletions += 1;
            i -= 1;
        } else {
            c.insertions += 1;
            j -= 1;
        }
    }
    c
}

/// Which normalisation to apply before WER / CER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalizer {
    /// Compare the text as is (only whitespace collapsed).
    None,
    /// Whisper's `BasicTextNormalizer`: lower-case, remove bracketed text, symbols -> spaces.
    Basic,
    /// Whisper-style English normalisation ([`normalize_english`]).
    #[default]
    English,
}

impl Normalizer {
    /// Applies the normalisation.
    pub fn apply(self, s: &str) -> String {
        match self {
            Normalizer::None => s.split_whitespace().collect::<Vec<_>>().join(" "),
            Normalizer::Basic => normalize_basic(s),
            Normalizer::English => normalize_english(s),
        }
    }
}

/// Word-level edit counts after normalisation.
pub fn word_edits(reference: &str, hypothesis: &str, norm: Normalizer) -> EditCounts {
    let r = norm.apply(reference);
    let h = norm.apply(hypothesis);
    let r: Vec<&str> = r.split_whitespace().collect();
    let h: Vec<&str> = h.split_whitespace().collect();
    align(&r, &h)
}

/// Character-level edit counts after normalisation (spaces between words count as
/// characters, as in `jiwer.cer`).
pub fn char_edits(reference: &str, hypothesis: &str, norm: Normalizer) -> EditCounts {
    let r: Vec<char> = norm.apply(reference).chars().collect();
    let h: Vec<char> = norm.apply(hypothesis).chars().collect();
    align(&r, &h)
}

/// WER of one pair, as a fraction (0.25 = 25 %).
pub fn wer(reference: &str, hypothesis: &str, norm: Normalizer) -> f64 {
    word_edits(reference, hypothesis, norm).rate()
}

/// CER of one pair, as a fraction.
pub fn cer(reference: &str, hypothesis: &str, norm: Normalizer) -> f64 {
    char_edits(reference, hypothesis, norm).rate()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Removes `[...]`/`<...>` spans and `(...)` spans (Whisper's first two regexes).
fn remove_bracketed(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let close: &[char] = match c {
            '[' | '<' => &[']', '>'],
            '(' => &[')'],
            _ => &[],
        };
        // `(...)` must not be empty: `\(([^)]+?)\)`.
        if !close.is_empty()
            && let Some(k) = chars[i + 1..].iter().position(|x| close.contains(x))
            && (c != '(' || k > 0)
        {
            i += k + 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Replaces `pattern` with `with` where it is followed by a word boundary and, when
/// `start_boundary`, preceded by one (Python regex `\b`).
fn replace_bounded(s: &str, pattern: &str, with: &str, start_boundary: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut prev: Option<char> = None;
    while let Some(pos) = rest.find(pattern) {
        let before = rest[..pos]
            .chars()
            .next_back()
            .or(if pos == 0 { prev } else { None });
        let after = rest[pos + pattern.len()..].chars().next();
        let first = pattern.chars().next();
        let last = pattern.chars().next_back();
        let boundary =
            |a: Option<char>, b: Option<char>| a.is_some_and(is_word) != b.is_some_and(is_word);
        let ok_start = !start_boundary || boundary(before, first);
        let ok_end = boundary(last, after);
        let cut = pos + pattern.len();
        if ok_start && ok_end {
            out.push_str(&rest[..pos]);
            out.push_str(with);
        } else {
            out.push_str(&rest[..cut]);
        }
        prev = rest[..cut].chars().next_back();
        rest = &rest[cut..];
    }
    out.push_str(rest);
    out
}

/// Whisper's contraction and title replacements (`\b...\b` unless marked).
const REPLACERS: &[(&str, &str, bool)] = &[
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
    ("'d been", " had been", false),
    ("'s been", " has been", false),
    ("'d gone", " had gone", false),
    ("'s gone", " has gone", false),
    ("'d done", " had done", false),
    ("'s got", " has got", false),
    ("n't", " not", false),
    ("'re", " are", false),
    ("'s", " is", false),
    ("'d", " would", false),
    ("'ll", " will", false),
    ("'t", " not", false),
    ("'ve", " have", false),
    ("'m", " am", false),
];

/// Fillers Whisper ignores.
const FILLERS: &[&str] = &["hmm", "mm", "mhm", "mmm", "uh", "um"];

/// Folds common accented Latin letters to ASCII (Whisper removes diacritics via NFKD).
fn fold_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' => "c",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'ī' => "i",
        'ñ' | 'ń' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => "o",
        'œ' => "oe",
        'ß' => "ss",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' => "u",
        'ý' | 'ÿ' => "y",
        'ł' => "l",
        'š' | 'ś' => "s",
        'ž' | 'ź' | 'ż' => "z",
        'ð' => "d",
        'þ' => "th",
        _ => return None,
    })
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whisper's `BasicTextNormalizer`: lower-case, remove bracketed text, replace symbols and
/// punctuation with spaces, fold accents, collapse whitespace.
pub fn normalize_basic(s: &str) -> String {
    let s = remove_bracketed(&s.to_lowercase());
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if let Some(f) = fold_accent(c) {
            out.push_str(f);
        } else if c.is_alphanumeric() || c.is_whitespace() {
            out.push(c);
        } else {
            out.push(' ');
        }
    }
    collapse(&out)
}

/// Whisper-style English normalisation (see the module docs for what is implemented).
pub fn normalize_english(s: &str) -> String {
    let mut s = remove_bracketed(&s.to_lowercase());
    for f in FILLERS {
        s = replace_bounded(&s, f, "", true);
    }
    // `\s+'` -> `'`
    let mut joined = String::with_capacity(s.len());
    let mut pending_space = String::new();
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space.push(c);
        } else {
            if c != '\'' {
                joined.push_str(&pending_space);
            }
            pending_space.clear();
            joined.push(c);
        }
    }
    joined.push_str(&pending_space);
    let mut s = joined;
    for (pat, with, bounded) in REPLACERS {
        s = replace_bounded(&s, pat, with, *bounded);
    }
    let chars: Vec<char> = s.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let prev = if i > 0 { at(i - 1) } else { None };
        let next = at(i + 1);
        match c {
            // `(\d),(\d)` -> `\1\2`
            ',' if digit(prev) && digit(next) => {}
            // Periods and currency signs survive only before a digit.
            '.' | '$' | '¢' | '€' | '£' => out.push(if digit(next) { c } else { ' ' }),
            // Percent survives only after a digit.
            '%' => out.push(if digit(prev) { c } else { ' ' }),
            _ => {
                if let Some(f) = fold_accent(c) {
                    out.push_str(f);
                } else if c.is_alphanumeric() || c.is_whitespace() {
                    out.push(c);
                } else {
                    out.push(' ');
                }
            }
        }
    }
    collapse(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_replacement() {
        assert_eq!(
            replace_bounded("mr smith mrs x", "mr", "mister ", true),
            "mister  smith mrs x"
        );
        assert_eq!(replace_bounded("don't", "n't", " not", false), "do not");
        assert_eq!(replace_bounded("umbrella um", "um", "", true), "umbrella ");
    }

    #[test]
    fn english_normalisation() {
        assert_eq!(
            normalize_english("Hello, World! [noise] (laughs)"),
            "hello world"
        );
        assert_eq!(
            normalize_english("I won't pay $1,000.50 or 5%."),
            "i will not pay $1000.50 or 5%"
        );
        assert_eq!(
            normalize_english("Mr. Smith's café, uh, closed"),
            "mister smith is cafe closed"
        );
        assert_eq!(normalize_english("they 're here"), "they are here");
    }
}
