//! A synthetic speech set without downloads: sentences spoken by Debian's `espeak-ng`
//! (several voices, variants, speeds and pitches), resampled in Rust to 16 kHz mono 16-bit
//! WAV and written in the LibriSpeech layout:
//!
//! ```text
//! OUT/SPLIT/SPK/CH/SPK-CH-0000.wav
//! OUT/SPLIT/SPK/CH/SPK-CH.trans.txt      lines "SPK-CH-0000 THE OLD FARMER ..."
//! OUT/SPLIT/SPEAKERS.txt                 voice, speed and pitch of every speaker
//! ```
//!
//! Install the tool with `apt-get update && apt-get install -y espeak-ng` (sox is not
//! needed: resampling is done here). The output is deterministic for a seed (given the same
//! espeak-ng version). Transcripts are upper-case without punctuation, like LibriSpeech.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::{DataError, Result};

/// Output sample rate (Hz).
pub const SAMPLE_RATE: u32 = 16_000;

/// espeak-ng English voices used for speakers.
pub const VOICES: [&str; 8] = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
];

/// espeak-ng voice variants (`voice+variant`); empty for the plain voice.
pub const VARIANTS: [&str; 9] = ["", "m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4"];

const SUBJECTS: [&str; 15] = [
    "the old farmer",
    "my younger sister",
    "a tall stranger",
    "the quiet teacher",
    "our new neighbor",
    "the little boy",
    "a busy doctor",
    "the young sailor",
    "his grandmother",
    "the village baker",
    "a curious student",
    "the tired driver",
    "her best friend",
    "the kind nurse",
    "an honest merchant",
];

const ACTIONS: [&str; 15] = [
    "carried a heavy basket",
    "found a silver key",
    "painted the wooden fence",
    "read a long letter",
    "opened the front door",
    "planted seven apple trees",
    "cooked a warm supper",
    "lost a green umbrella",
    "wrote a short story",
    "fixed the broken clock",
    "bought fresh bread",
    "watched the bright stars",
    "cleaned the dusty shelves",
    "sang an old song",
    "counted the gold coins",
];

const ENDINGS: [&str; 12] = [
    "before the sun went down",
    "near the river",
    "in the morning",
    "after the long journey",
    "on a cold winter night",
    "at the edge of the forest",
    "during the summer fair",
    "beside the small harbor",
    "while the children slept",
    "under the gray sky",
    "in the crowded market",
    "at the end of the day",
];

/// The built-in sentences: every subject x action x ending (2,700 plain English sentences,
/// numbers spelled out, no punctuation), in a fixed order.
pub fn sentences() -> Vec<String> {
    let mut out = Vec::with_capacity(SUBJECTS.len() * ACTIONS.len() * ENDINGS.len());
    for s in SUBJECTS {
        for a in ACTIONS {
            for e in ENDINGS {
                out.push(format!("{s} {a} {e}"));
            }
        }
    }
    out
}

/// Which built-in sentences a set draws from: a fixed partition of [`sentences`] so that a
/// training set and a test set never share a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SentencePart {
    /// Every sentence (2,700).
    #[default]
    All,
    /// The 80 % not in [`SentencePart::Test`].
    Train,
    /// A fixed, hashed fifth of the sentences.
    Test,
}

impl SentencePart {
    /// Whether sentence `index` of [`sentences`] belongs to this part.
    pub fn contains(self, index: usize) -> bool {
        // SplitMix64 of the index: a fixed pseudo-random fifth is the test part.
        let mut z = (index as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let test = (z ^ (z >> 31)).is_multiple_of(5);
        match self {
            SentencePart::All => true,
            SentencePart::Train => !test,
            SentencePart::Test => test,
        }
    }

    /// The part's sentences, in [`sentences`]' order.
    pub fn sentences(self) -> Vec<String> {
        sentences()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.contains(*i))
            .map(|(_, s)| s)
            .collect()
    }
}

impl std::str::FromStr for SentencePart {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(SentencePart::All),
            "train" => Ok(SentencePart::Train),
            "test" => Ok(SentencePart::Test),
            other => Err(DataError::InvalidArgument(format!(
                "unknown sentence part {other:?}: expected all, train or test"
            ))),
        }
    }
}

/// Settings of [`synthesize`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechConfig {
    /// Root directory (created if missing).
    pub out: PathBuf,
    /// Split directory name below `out`.
    pub split: String,
    /// Number of utterances.
    pub n: usize,
    /// Number of speakers (each one voice / variant / speed / pitch); at least 1.
    pub speakers: usize,
    /// Seed for sentences and speakers.
    pub seed: u64,
    /// Replace an existing, non-empty split directory.
    pub overwrite: bool,
    /// Which sentences to draw from (disjoint training and test sets).
    pub part: SentencePart,
}

impl SpeechConfig {
    /// `n` utterances by up to 8 speakers in `out/synthetic`, seed 0.
    pub fn new(out: impl Into<PathBuf>, n: usize) -> Self {
        Self {
            out: out.into(),
            split: "synthetic".into(),
            n,
            speakers: n.clamp(1, 8),
            seed: 0,
            overwrite: false,
            part: SentencePart::All,
        }
    }
}

/// One synthetic speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    /// LibriSpeech-style speaker id.
    pub id: u32,
    /// Chapter id.
    pub chapter: u32,
    /// espeak-ng voice (`en-us+f2`).
    pub voice: String,
    /// Words per minute.
    pub speed: u32,
    /// Pitch 0..99.
    pub pitch: u32,
}

/// What [`synthesize`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechReport {
    /// The split directory (read it with [`crate::readers::open`]).
    pub root: PathBuf,
    /// Utterances written.
    pub utterances: usize,
    /// The speakers.
    pub speakers: Vec<Speaker>,
    /// Total audio duration in seconds.
    pub seconds: f64,
}

/// Whether `espeak-ng` can be run.
pub fn espeak_available() -> bool {
    Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Draws the speakers of a seed.
pub fn speakers(count: usize, seed: u64) -> Vec<Speaker> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5bea_c0de);
    let mut voices: Vec<&str> = VOICES.to_vec();
    voices.shuffle(&mut rng);
    (0..count.max(1))
        .map(|k| {
            let base = voices[k % voices.len()];
            let variant = VARIANTS.choose(&mut rng).copied().unwrap_or("");
            let voice = if variant.is_empty() {
                base.to_string()
            } else {
                format!("{base}+{variant}")
            };
            let k = u32::try_from(k).unwrap_or(u32::MAX);
            Speaker {
                id: 100 + k,
                chapter: 1000 + k,
                voice,
                speed: rng.random_range(130..=185),
                pitch: rng.random_range(30..=70),
            }
        })
        .collect()
}

fn tool_error(message: impl Into<String>) -> DataError {
    DataError::Tool {
        tool: "espeak-ng".into(),
        message: message.into(),
    }
}

/// Speaks `n` sentences and writes them in the LibriSpeech layout (see the module docs).
pub fn synthesize(cfg: &SpeechConfig) -> Result<SpeechReport> {
    let all = cfg.part.sentences();
    if cfg.n == 0 || cfg.n > all.len() {
        return Err(DataError::InvalidArgument(format!(
            "n must be between 1 and {} (the built-in sentences of part {:?}), got {}",
            all.len(),
            cfg.part,
            cfg.n
        )));
    }
    if !espeak_available() {
        return Err(tool_error(
            "not found; install it with `apt-get update && apt-get install -y espeak-ng`",
        ));
    }
    let root = cfg.out.join(&cfg.split);
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Write { path, source }
    };
    if root.exists() && fs::read_dir(&root).map_err(werr(&root))?.next().is_some() {
        if !cfg.overwrite {
            return Err(DataError::InvalidArgument(format!(
                "{} exists and is not empty (use overwrite)",
                root.display()
            )));
        }
        fs::remove_dir_all(&root).map_err(werr(&root))?;
    }
    fs::create_dir_all(&root).map_err(werr(&root))?;

    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let chosen: Vec<String> = all.choose_multiple(&mut rng, cfg.n).cloned().collect();
    let speakers = speakers(cfg.speakers.min(cfg.n), cfg.seed);

    // Utterance i goes to speaker i % k; numbered within its speaker.
    let jobs: Vec<(usize, PathBuf, String)> = chosen
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let spk = &speakers[i % speakers.len()];
            let utt = i / speakers.len();
            let dir = root.join(spk.id.to_string()).join(spk.chapter.to_string());
            let name = format!("{}-{}-{utt:04}", spk.id, spk.chapter);
            (i, dir.join(format!("{name}.wav")), text.clone())
        })
        .collect();
    for spk in &speakers {
        let dir = root.join(spk.id.to_string()).join(spk.chapter.to_string());
        fs::create_dir_all(&dir).map_err(werr(&dir))?;
    }

    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = jobs.len().div_ceil(threads);
    let results: Vec<Result<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk.max(1))
            .map(|part| {
                let speakers = &speakers;
                s.spawn(move || {
                    part.iter()
                        .map(|(i, wav, text)| speak(&speakers[i % speakers.len()], text, wav))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(tool_error("a synthesis thread panicked"))])
            })
            .collect()
    });
    let mut seconds = 0.0;
    for r in results {
        seconds += r?;
    }

    // Transcripts, one file per speaker/chapter, in utterance order.
    for (k, spk) in speakers.iter().enumerate() {
        let dir = root.join(spk.id.to_string()).join(spk.chapter.to_string());
        let path = dir.join(format!("{}-{}.trans.txt", spk.id, spk.chapter));
        let mut text = String::new();
        for (i, sentence) in chosen
            .iter()
            .enumerate()
            .filter(|(i, _)| i % speakers.len() == k)
        {
            let utt = i / speakers.len();
            text.push_str(&format!(
                "{}-{}-{utt:04} {}\n",
                spk.id,
                spk.chapter,
                transcript(sentence)
            ));
        }
        fs::write(&path, text).map_err(werr(&path))?;
    }
    let mut table = String::from("; ID | VOICE | SPEED (wpm) | PITCH\n");
    for s in &speakers {
        table.push_str(&format!(
            "{} | {} | {} | {}\n",
            s.id, s.voice, s.speed, s.pitch
        ));
    }
    let path = root.join("SPEAKERS.txt");
    fs::write(&path, table).map_err(werr(&path))?;
    Ok(SpeechReport {
        root,
        utterances: cfg.n,
        speakers,
        seconds,
    })
}

/// LibriSpeech-style transcript: upper-case, letters, digits, apostrophes and single spaces.
pub fn transcript(sentence: &str) -> String {
    sentence
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c.to_ascii_uppercase()
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Speaks one sentence into a 16 kHz WAV; returns its duration in seconds.
fn speak(spk: &Speaker, text: &str, wav: &Path) -> Result<f64> {
    let tmp = wav.with_extension("espeak.wav");
    let out = Command::new("espeak-ng")
        .args([
            "-v",
            &spk.voice,
            "-s",
            &spk.speed.to_string(),
            "-p",
            &spk.pitch.to_string(),
            "-w",
        ])
        .arg(&tmp)
        .arg(format!("{text}."))
        .output()
        .map_err(|e| tool_error(format!("cannot run: {e}")))?;
    if !out.status.success() {
        return Err(tool_error(format!(
            "failed for voice {}: {}",
            spk.voice,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (samples, rate) = read_wav_mono(&tmp)?;
    let _ = fs::remove_file(&tmp);
    let resampled = resample(&samples, rate, SAMPLE_RATE);
    write_wav(wav, &resampled, SAMPLE_RATE)?;
    Ok(resampled.len() as f64 / f64::from(SAMPLE_RATE))
}

fn wav_error(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Wav {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Reads a 16-bit PCM WAV and mixes it down to mono; returns samples and sample rate.
pub fn read_wav_mono(path: &Path) -> Result<(Vec<i16>, u32)> {
    let mut reader = hound::WavReader::open(path).map_err(|e| wav_error(path, e))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(wav_error(path, "expected 16-bit integer PCM"));
    }
    let raw = reader
        .samples::<i16>()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| wav_error(path, e))?;
    let ch = usize::from(spec.channels.max(1));
    let mono = raw
        .chunks(ch)
        .map(|c| {
            let sum: i32 = c.iter().map(|&s| i32::from(s)).sum();
            i16::try_from(sum / c.len() as i32).unwrap_or(0)
        })
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Writes mono 16-bit PCM.
pub fn write_wav(path: &Path, samples: &[i16], rate: u32) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(|e| wav_error(path, e))?;
    for &s in samples {
        w.write_sample(s).map_err(|e| wav_error(path, e))?;
    }
    w.finalize().map_err(|e| wav_error(path, e))
}

/// Band-limited resampling with a Blackman-windowed sinc (16 zero crossings, cut-off at
/// 0.95 of the lower Nyquist rate). Deterministic.
pub fn resample(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || samples.is_empty() || from == 0 || to == 0 {
        return samples.to_vec();
    }
    let ratio = f64::from(to) / f64::from(from);
    let cutoff = 0.95 * ratio.min(1.0);
    let zeros = 16.0;
    let half = (zeros / cutoff).ceil() as i64;
    let out_len = ((samples.len() as f64) * ratio).round() as usize;
    let n = samples.len() as i64;
    let mut out = Vec::with_capacity(out_len);
    for k in 0..out_len {
        let pos = k as f64 / ratio;
        let center = pos.floor() as i64;
        let mut acc = 0.0;
        for i in (center - half + 1)..=(center + half) {
            if i < 0 || i >= n {
                continue;
            }
            let t = pos - i as f64;
            let x = cutoff * t;
            let sinc = if x.abs() < 1e-12 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let w = t / (half as f64);
            if w.abs() >= 1.0 {
                continue;
            }
            let phase = std::f64::consts::PI * (w + 1.0);
            let blackman = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
            acc += f64::from(samples[i as usize]) * cutoff * sinc * blackman;
        }
        out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_list() {
        let s = sentences();
        assert_eq!(s.len(), 2700);
        assert_eq!(
            transcript("the old farmer's key, found."),
            "THE OLD FARMER'S KEY FOUND"
        );
    }

    #[test]
    fn training_and_test_sentences_are_disjoint() {
        let train = SentencePart::Train.sentences();
        let test = SentencePart::Test.sentences();
        assert_eq!(train.len() + test.len(), 2700);
        // About a fifth is test.
        assert!((480..=600).contains(&test.len()), "{}", test.len());
        let train: std::collections::HashSet<&String> = train.iter().collect();
        assert!(test.iter().all(|s| !train.contains(s)));
        assert_eq!(SentencePart::All.sentences(), sentences());
        assert!("held".parse::<SentencePart>().is_err());
    }

    #[test]
    fn resampling_keeps_a_low_tone() {
        // A 440 Hz tone at 22.05 kHz -> 16 kHz keeps its amplitude and length.
        let from = 22_050u32;
        let tone: Vec<i16> = (0..from)
            .map(|i| {
                (10_000.0
                    * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / f64::from(from)).sin())
                    as i16
            })
            .collect();
        let out = resample(&tone, from, 16_000);
        assert_eq!(out.len(), 16_000);
        let peak = out[1000..15000]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!((9_800..=10_200).contains(&peak), "peak {peak}");
    }
}
