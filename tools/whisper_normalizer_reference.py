#!/usr/bin/env python3
"""Reference outputs of Whisper's English normaliser and of jiwer's WER / CER on its output.

Writes `datasets/tests/fixtures/whisper_normalizer.json`:

- `cases`: for each input string, the output of transformers' `EnglishTextNormalizer` given
  Whisper's British-to-American spelling mapping (spelled-out numbers of every kind, ordinals,
  plurals, decimals, `oh`, currencies, percent, years, digits mixed with words, contractions,
  titles, British spellings, brackets, fillers, accents and other Unicode, punctuation, empty
  strings, and LibriSpeech / espeak-ng style transcripts: upper case, no punctuation);
- `pairs`: reference / hypothesis pairs, both normalised as above, with `jiwer.wer` and
  `jiwer.cer` of the normalised pair (`wer` and `cer` are null where the normalised reference
  is empty: jiwer refuses empty references); `corpus_wer` / `corpus_cer` are jiwer's rates over
  all pairs with a non-empty reference.

`datasets/tests/whisper_normalizer.rs` checks `datasets::metrics::wer::normalize_english`
against `cases` (identical strings) and `wer` / `cer` / `word_edits` / `char_edits` against
`pairs` (equal to 1e-9). CI only runs that Rust test; this script is run by hand when the
cases change. It is deterministic (fixed inputs, no randomness).

The mapping is Whisper's `whisper/normalizers/english.json` (openai-whisper, MIT), committed as
`datasets/src/metrics/wer/english_spelling.json`; to compare with a fresh copy:
    pip download --no-deps openai-whisper -d /tmp/ow && tar xzf /tmp/ow/openai_whisper-*.tar.gz -C /tmp/ow
    ... --mapping /tmp/ow/openai_whisper-*/whisper/normalizers/english.json

Run with the tools venv (transformers==4.57.6, jiwer):
    /root/torchvenv/bin/python tools/whisper_normalizer_reference.py \
        [--mapping PATH] [--out datasets/tests/fixtures/whisper_normalizer.json]
"""

import argparse
import importlib.metadata
import json
from pathlib import Path

import jiwer
import transformers
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "datasets" / "src" / "metrics" / "wer" / "english_spelling.json"
OUT = ROOT / "datasets" / "tests" / "fixtures" / "whisper_normalizer.json"

CASES = [
    # Cardinals: ones, tens, multipliers, "and".
    "one", "two", "zero", "ten", "eleven", "nineteen", "twenty", "twenty one", "ninety nine",
    "one hundred", "a hundred", "one hundred and one", "two hundred thirty four",
    "one thousand two hundred thirty four", "two thousand and five",
    "twelve thousand three hundred and forty five", "three million five hundred thousand",
    "one billion two hundred million", "nine decillion",
    "nine hundred ninety nine decillion nine hundred ninety nine decillion",
    "one thousand thousand", "five hundred thousand million", "one two three four",
    "one two three four five six seven eight nine ten eleven twelve hundred",
    "twenty twenty one", "one two twenty three", "hundred", "thousands and thousands",
    "one hundred and", "and one", "rock and roll", "bread and butter and jam",
    # "one" and "ones" stay words.
    "the one I like", "the ones I like", "one of them", "two ones", "1", "1s", "a 1 in 10",
    # Ordinals.
    "first", "second", "third", "fourth", "fifth", "eighth", "ninth", "nineth", "twelfth",
    "zeroth", "twentieth", "twenty first", "twenty second", "the thirty third time",
    "one hundredth", "two thousandth", "millionth", "the hundred and first", "one two third",
    "twenty ninth", "four hundredth anniversary",
    # Plurals.
    "twenties", "the nineteen sixties", "in the eighties", "sixes and sevens", "threes",
    "hundreds of people", "thousands", "tens of thousands", "twenty twenties",
    "one point five millions",
    # Decimals and "point".
    "three point one four", "point five", "zero point five", "one point oh five",
    "two point five million", "point", "point of view", "the point is", "one point five",
    "1.5", "point point five", "0 point five", "one point two point three",
    "one point two point three hundred", "five point", "three point 5", "point 25",
    "seven point twenty five",
    # "oh", "o", "zero", "double", "triple".
    "one oh five", "o", "oh", "oh no", "room two oh one", "double oh seven", "triple five",
    "double", "double trouble", "double o seven", "five o'clock", "zero zero seven",
    "double eleven", "two double four", "oh one two three", "triple x",
    # Currency.
    "five dollars", "one dollar", "a dollar", "five dollars and fifty cents", "fifty cents",
    "twenty pounds", "ten euros", "three hundred million dollars", "$5", "$5 and 50 cents",
    "$0.50", "$0.05", "£3.20", "€10", "$1,000,000", "dollars", "cents", "five cents",
    "twelve dollars and five cents", "a hundred dollars", "two dollars seventy five",
    "fifty pounds and twenty cents", "1 dollar", "$1", "$0 and 5 cents", "$ 5", "$5 ¢7",
    "five euro", "one cent", "$3 million", "ten dollar bill",
    # Percent.
    "fifty percent", "fifty per cent", "5%", "one hundred percent", "percent", "per",
    "three per person", "ten point five percent", "50 %", "a%", "per cent",
    "twenty five percent of the vote",
    # Signs.
    "minus five", "negative ten degrees", "plus two", "minus", "positive thinking",
    "minus and x", "plus or minus three",
    # "and a half".
    "two and a half", "one and a half million", "a year and a half", "and a half",
    "three hundred and a half", "two and a half and a half", "four and a halfway",
    "six and   a half",
    # Years.
    "nineteen eighty four", "twenty twenty", "two thousand twenty three", "nineteen oh five",
    "in eighteen sixty one", "nineteen hundred", "the year two thousand",
    "nineteen ninety nine", "eighteen twelve", "sixteen sixty six",
    # Digits mixed with words.
    "25 thousand", "2 million", "3 point 5", "1.5 million", "room 101", "4th",
    "the 21 st century", "21st", "5 th", "1960s", "3 kg", "covid19", "mp3", "a1b2",
    "100km", "twenty 5", "the 2 of us", "007", "5.0", "5.50", "12.5%", "3rd place",
    "1 st", "10 s", "2nd and 3rd", "ten 20 thirty", "1,2,3", "100,000", "1.2.3.4",
    # Contractions and titles.
    "I won't go", "I can't", "let's go", "y'all", "gonna", "wanna", "gotta", "I'ma do it",
    "imma", "they've been", "she's been there", "he'd gone", "it's got", "don't",
    "I'm here", "we'll see", "they 're here", "he'd done", "ma'am", "ain't", "shoulda",
    "Mr. Smith", "Mrs. Jones", "Dr. Who", "St. Louis", "Prof. X", "Capt. Hook", "Lt. Dan",
    "John Smith Jr.", "Gen. Patton", "Rev. Green, Esq.", "it's", "Sen. Col. Asst. Hon.",
    # British spellings.
    "colour", "The colour of the aeroplane's centre", "organise", "travelled", "grey",
    "realise", "programme", "theatre", "behaviour", "cheque", "defence", "analyse",
    "THE HONOUR OF THE COLOUR", "favourite neighbours",
    # Brackets and fillers.
    "[noise] hello", "<unk> word", "(laughs) okay", "hi () there", "a [b) c]", "(a [b) c]",
    "um", "uh huh", "hmm mm mhm mmm", "umm", "Uh, I think", "um_um", "a <b] c",
    # Accents and other Unicode.
    "café", "naïve résumé", "Ångström", "Straße", "Œuvre", "smørrebrød", "Łódź",
    "ﬁne", "½", "x²", "™", "１２３", "٣ apples", "don’t", "“quoted”", "Ærøskøbing",
    "São Paulo", "ŞİŞLİ", "façade", "ΣΊΣΥΦΟΣ", "emoji 😀 ok", "tab\tand\nnewline",
    # Punctuation and symbols.
    "Hello, world!", "wait... what?", "a-b", "rock'n'roll", "e-mail", "U.S.A.", "3.14",
    "etc.", "$", "%", "it costs $", "#1", "@home", "a/b", "what?!", "a..b", "$a", "fifty%",
    "%5 of", "a%%", "x$ y", "5$", "I won't pay $1,000.50 or 5%.", "It's 3.5% of $1,000.",
    "Um, I can't go, Mr. Brown.", "Hello, [inaudible] WORLD (laughs)!",
    # Empty and blank.
    "", " ", "   \t\n ", ".", "...", "[noise]", "um uh",
    # LibriSpeech and espeak-ng style transcripts.
    "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT "
    "MUTTON PIECES TO BE LADLED OUT IN THICK PEPPERED FLOUR FATTENED SAUCE",
    "CHAPTER TWENTY ONE", "IN EIGHTEEN SIXTY ONE", "THE NINETEENTH CENTURY",
    "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES",
    "HE HAD TWO HUNDRED AND FIFTY POUNDS A YEAR", "ONE OF THE TWO", "IT WAS THE FIRST OF MAY",
    "I'M NOT SURE", "THE OLD FARMER'S KEY FOUND", "THE OLD FARMER PLANTED SEVEN APPLE TREES NEAR "
    "THE RIVER", "A BUSY DOCTOR COUNTED THE GOLD COINS AT THE END OF THE DAY",
    "OUR NEW NEIGHBOR SANG AN OLD SONG UNDER THE GRAY SKY", "THREE TIMES FOUR IS TWELVE",
    "SHE WAS SEVENTEEN YEARS OLD IN EIGHTEEN FORTY", "TEN THOUSAND MEN AND ONE WOMAN",
]

PAIRS = [
    ("HE HAD TWO HUNDRED AND FIFTY POUNDS A YEAR", "He had £250 a year."),
    ("CHAPTER TWENTY ONE", "Chapter 21."),
    ("IN EIGHTEEN SIXTY ONE THE WAR BEGAN", "In 1861, the war began."),
    ("fifty percent of the colour", "50% of the color"),
    ("HE HOPED THERE WOULD BE STEW FOR DINNER", "He hoped there would be stew for dinner."),
    ("HE HOPED THERE WOULD BE STEW FOR DINNER", "He hoped there'd be stew for supper."),
    ("THE NINETEENTH CENTURY", "The 19th century."),
    ("IT COST FIVE DOLLARS AND FIFTY CENTS", "It cost $5.50."),
    ("IT COST FIVE DOLLARS AND FIFTY CENTS", "It cost five dollars, fifty."),
    ("I WAS BORN IN NINETEEN EIGHTY FOUR", "I was born in 1984."),
    ("THE ROOM NUMBER IS ONE OH FIVE", "The room number is 105."),
    ("TWENTY FIVE PERCENT OF THE VOTE", "25 per cent of the vote"),
    ("MISTER SMITH WENT TO WASHINGTON", "Mr. Smith went to Washington."),
    ("I DON'T KNOW", "I do not know"),
    ("I CANNOT GO", "I can't go."),
    ("THE OLD FARMER CARRIED A HEAVY BASKET BEFORE THE SUN WENT DOWN",
     "The old farmer carried a heavy basket before the sun went down."),
    ("THE OLD FARMER CARRIED A HEAVY BASKET BEFORE THE SUN WENT DOWN",
     "the old farmer carried heavy baskets before sun went down"),
    ("MY YOUNGER SISTER PLANTED SEVEN APPLE TREES IN THE MORNING",
     "My younger sister planted 7 apple trees in the morning."),
    ("A TALL STRANGER FOUND A SILVER KEY NEAR THE RIVER", "Um, a tall stranger found a key."),
    ("THE CENTRE OF THE THEATRE", "the center of the theater"),
    ("ONE", "1"),
    ("ONE OF THE TWO", "1 of the 2"),
    ("THE SIXTIES WERE WILD", "The 60s were wild."),
    ("HE WAS THIRTY THREE", "He was 33 [laughs]."),
    ("TEN POINT FIVE", "10.5"),
    ("A HUNDRED AND ONE DALMATIANS", "101 Dalmatians"),
    ("SHE PAID TWENTY POUNDS", "She paid £20, uh, yesterday."),
    ("CAFÉ AU LAIT", "cafe au lait"),
    ("THE QUICK BROWN FOX", ""),
    ("THE QUICK BROWN FOX", "the quick brown fox jumps over the lazy dog"),
    ("DOUBLE O SEVEN", "007"),
    ("TWO AND A HALF MILLION", "2.5 million"),
    ("[noise]", "hello there"),
    ("um uh", ""),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mapping", type=Path, default=MAPPING)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    mapping = json.loads(a.mapping.read_text(encoding="utf-8"))
    norm = EnglishTextNormalizer(mapping)

    cases = [{"input": s, "expected": norm(s)} for s in CASES]

    pairs = []
    corpus_refs, corpus_hyps = [], []
    for ref, hyp in PAIRS:
        r, h = norm(ref), norm(hyp)
        scored = r.strip() != ""
        pairs.append({
            "reference": ref,
            "hypothesis": hyp,
            "reference_norm": r,
            "hypothesis_norm": h,
            "wer": jiwer.wer(r, h) if scored else None,
            "cer": jiwer.cer(r, h) if scored else None,
        })
        if scored:
            corpus_refs.append(r)
            corpus_hyps.append(h)

    out = {
        "generator": "tools/whisper_normalizer_reference.py",
        "transformers": transformers.__version__,
        "jiwer": importlib.metadata.version("jiwer"),
        "mapping_entries": len(mapping),
        "cases": cases,
        "pairs": pairs,
        "corpus_wer": jiwer.wer(corpus_refs, corpus_hyps),
        "corpus_cer": jiwer.cer(corpus_refs, corpus_hyps),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{a.out}: {len(cases)} cases, {len(pairs)} pairs "
          f"(transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
