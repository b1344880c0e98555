//! Audio input: WAV and FLAC decoding, down-mixing to mono and resampling to Whisper's
//! 16 kHz.
//!
//! - **WAV** (via `hound`): PCM integers of 8, 16, 24 or 32 bits and 32-bit float, any sample
//!   rate, any channel count (also `WAVE_FORMAT_EXTENSIBLE`).
//! - **FLAC** (via `claxon`): any bit depth, rate and channel count the format allows.
//! - Other containers (MP3, Ogg, ...) are recognised by their magic bytes and refused with
//!   [`WhisperError::UnsupportedAudio`]; undecodable data gives
//!   [`WhisperError::CorruptAudio`]; a file without samples gives [`WhisperError::EmptyAudio`].
//!
//! Integer samples are scaled to `[-1, 1)` by `2^(bits-1)` (16-bit: `/ 32768`, as Whisper's
//! ffmpeg path does); channels are averaged.
//!
//! **Resampling** ([`resample`]) is band-limited interpolation with a Kaiser-windowed sinc
//! kernel (32 zero crossings, Kaiser β = 9, cutoff 0.945 of the lower Nyquist frequency,
//! i.e. roughly -90 dB stop band), evaluated as a polyphase filter: for the rational ratio
//! `to / from = L / M` (reduced by their gcd) the `L` distinct fractional offsets get one
//! precomputed tap set each (when `L <= 4096`; otherwise taps are computed per output
//! sample). This is the same design as `resampy`'s `kaiser_best` / libsoxr's high-quality
//! mode, not bit-identical to ffmpeg's `swr` that OpenAI's Whisper uses; on 16 kHz input
//! nothing is resampled.

use std::f64::consts::PI;
use std::io::Cursor;
use std::path::Path;

use super::error::{Result, WhisperError, io_err};

/// Whisper's sample rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// Decoded audio: mono samples at `sample_rate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    /// Mono samples in `[-1, 1]`.
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
}

impl Audio {
    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }

    /// Resampled to `rate` (a copy when it already is).
    pub fn resampled(&self, rate: u32) -> Audio {
        Audio {
            samples: resample(&self.samples, self.sample_rate, rate),
            sample_rate: rate,
        }
    }
}

/// Reads a WAV or FLAC file, down-mixes to mono and resamples to 16 kHz.
pub fn load_audio(path: impl AsRef<Path>) -> Result<Vec<f32>> {
    let path = path.as_ref();
    let audio = decode_file(path)?;
    Ok(resample(&audio.samples, audio.sample_rate, SAMPLE_RATE))
}

/// Reads a WAV or FLAC file into mono samples at its own rate.
pub fn decode_file(path: impl AsRef<Path>) -> Result<Audio> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    decode_bytes(&bytes, path)
}

/// Decodes WAV or FLAC bytes (`path` names them in errors) into mono samples.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Audio> {
    let unsupported = |reason: String| WhisperError::UnsupportedAudio {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(WhisperError::EmptyAudio {
            input: format!("{} (empty file)", path.display()),
        });
    }
    let audio = if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
        decode_wav(bytes, path)?
    } else if bytes.starts_with(b"fLaC") {
        decode_flac(bytes, path)?
    } else {
        return Err(unsupported(format!(
            "{} (only WAV and FLAC are read; convert with e.g. `sox in.mp3 -r 16000 out.wav`)",
            sniff(bytes)
        )));
    };
    if audio.samples.is_empty() {
        return Err(WhisperError::EmptyAudio {
            input: path.display().to_string(),
        });
    }
    Ok(audio)
}

/// A name for what the first bytes look like.
fn sniff(bytes: &[u8]) -> String {
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0) {
        "MP3 data".into()
    } else if starts(b"OggS") {
        "an Ogg stream (Vorbis/Opus)".into()
    } else if bytes.len() >= 8 && &bytes[4..8] == b"ftyp" {
        "an MP4/M4A container".into()
    } else if starts(b"RIFF") {
        "a RIFF file that is not WAVE".into()
    } else if starts(b"RF64") {
        "an RF64 (64-bit WAV) file".into()
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("unknown format (first bytes {})", head.join(" "))
    }
}

fn downmix(interleaved: Vec<f32>, channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved;
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

fn decode_wav(bytes: &[u8], path: &Path) -> Result<Audio> {
    let wav_err = |e: hound::Error| match e {
        hound::Error::Unsupported => WhisperError::UnsupportedAudio {
            path: path.to_path_buf(),
            reason: "WAV encoding not supported (PCM integer or 32-bit float only)".into(),
        },
        other => WhisperError::CorruptAudio {
            path: path.to_path_buf(),
            reason: format!("WAV: {other}"),
        },
    };
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(wav_err)?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(WhisperError::CorruptAudio {
            path: path.to_path_buf(),
            reason: format!(
                "WAV header has {} channels at {} Hz",
                spec.channels, spec.sample_rate
            ),
        });
    }
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(WhisperError::UnsupportedAudio {
                    path: path.to_path_buf(),
                    reason: format!("{}-bit float WAV (only 32-bit)", spec.bits_per_sample),
                });
            }
            reader
                .into_samples::<f32>()
                .collect::<std::result::Result<_, _>>()
                .map_err(wav_err)?
        }
        hound::SampleFormat::Int => {
            let bits = spec.bits_per_sample;
            if !(1..=32).contains(&bits) {
                return Err(WhisperError::UnsupportedAudio {
                    path: path.to_path_buf(),
                    reason: format!("{bits}-bit integer WAV"),
                });
            }
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<std::result::Result<_, _>>()
                .map_err(wav_err)?
        }
    };
    Ok(Audio {
        samples: downmix(samples, spec.channels as usize),
        sample_rate: spec.sample_rate,
    })
}

fn decode_flac(bytes: &[u8], path: &Path) -> Result<Audio> {
    let flac_err = |e: claxon::Error| match e {
        claxon::Error::Unsupported(what) => WhisperError::UnsupportedAudio {
            path: path.to_path_buf(),
            reason: format!("FLAC: {what}"),
        },
        other => WhisperError::CorruptAudio {
            path: path.to_path_buf(),
            reason: format!("FLAC: {other}"),
        },
    };
    let mut reader = claxon::FlacReader::new(Cursor::new(bytes)).map_err(flac_err)?;
    let info = reader.streaminfo();
    if info.channels == 0 || info.sample_rate == 0 || info.bits_per_sample == 0 {
        return Err(WhisperError::CorruptAudio {
            path: path.to_path_buf(),
            reason: "FLAC stream info has zero channels, rate or bit depth".into(),
        });
    }
    let scale = 1.0 / (1u64 << (info.bits_per_sample - 1)) as f64;
    let samples: Vec<f32> = reader
        .samples()
        .map(|s| s.map(|v| (v as f64 * scale) as f32))
        .collect::<std::result::Result<_, _>>()
        .map_err(flac_err)?;
    Ok(Audio {
        samples: downmix(samples, info.channels as usize),
        sample_rate: info.sample_rate,
    })
}

const ZERO_CROSSINGS: f64 = 32.0;
const KAISER_BETA: f64 = 9.0;
const ROLLOFF: f64 = 0.945;
const MAX_TABLE_PHASES: u64 = 4096;

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The interpolation kernel.
struct Kernel {
    cutoff: f64,
    half_width: f64,
    i0_beta: f64,
}

impl Kernel {
    fn new(from: u32, to: u32) -> Self {
        let cutoff = ROLLOFF * (to as f64 / from as f64).min(1.0);
        Self {
            cutoff,
            half_width: ZERO_CROSSINGS / cutoff,
            i0_beta: bessel_i0(KAISER_BETA),
        }
    }

    /// Weight of an input sample at distance `d` (in input samples) from the output instant.
    fn weight(&self, d: f64) -> f64 {
        let u = d / self.half_width;
        if u.abs() >= 1.0 {
            return 0.0;
        }
        let x = self.cutoff * d;
        let sinc = if x.abs() < 1e-12 {
            1.0
        } else {
            (PI * x).sin() / (PI * x)
        };
        let window = bessel_i0(KAISER_BETA * (1.0 - u * u).sqrt()) / self.i0_beta;
        self.cutoff * sinc * window
    }
}

/// Resamples mono `samples` from `from` Hz to `to` Hz with a Kaiser-windowed sinc (see the
/// module docs). The output has `ceil(len * to / from)` samples; the signal is taken as zero
/// outside the input. Returns a copy when the rates are equal, and an empty vector for empty
/// input or a zero rate.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return samples.to_vec();
    }
    if samples.is_empty() || from == 0 || to == 0 {
        return Vec::new();
    }
    let g = gcd(from as u64, to as u64);
    let (l, m) = (to as u64 / g, from as u64 / g);
    let n = samples.len() as u64;
    let out_len = (n * l).div_ceil(m) as usize;
    let kernel = Kernel::new(from, to);
    let reach = kernel.half_width.ceil() as i64;
    let taps = (2 * reach + 1) as usize;
    // Per-phase taps: phase p (offset p / l of an input sample) weights input base + j - reach.
    let table: Option<Vec<f64>> = (l <= MAX_TABLE_PHASES).then(|| {
        let mut t = Vec::with_capacity(l as usize * taps);
        for p in 0..l {
            let frac = p as f64 / l as f64;
            for j in 0..taps {
                let k = j as i64 - reach;
                t.push(kernel.weight(frac - k as f64));
            }
        }
        t
    });
    let mut out = Vec::with_capacity(out_len);
    let mut row = vec![0.0f64; taps];
    for i in 0..out_len as u64 {
        let pos = i * m;
        let base = (pos / l) as i64;
        let p = pos % l;
        let weights: &[f64] = match &table {
            Some(t) => &t[p as usize * taps..(p as usize + 1) * taps],
            None => {
                let frac = p as f64 / l as f64;
                for (j, w) in row.iter_mut().enumerate() {
                    *w = kernel.weight(frac - (j as i64 - reach) as f64);
                }
                &row
            }
        };
        let lo = (base - reach).max(0);
        let hi = (base + reach).min(n as i64 - 1);
        let mut acc = 0.0f64;
        for k in lo..=hi {
            acc += samples[k as usize] as f64 * weights[(k - base + reach) as usize];
        }
        out.push(acc as f32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * PI * freq * i as f64 / rate as f64).sin() as f32 * 0.5)
            .collect()
    }

    fn max_err_mid(got: &[f32], want: &[f32]) -> f64 {
        let (a, b) = (got.len() / 10, got.len() * 9 / 10);
        (a..b)
            .map(|i| (got[i] as f64 - want[i] as f64).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn resample_sines_match_analytic() {
        for (from, freq) in [
            (44_100, 1000.0),
            (48_000, 3000.0),
            (8_000, 440.0),
            (22_050, 7000.0),
        ] {
            let x = sine(from, freq, from as usize / 2);
            let y = resample(&x, from, SAMPLE_RATE);
            assert_eq!(y.len(), SAMPLE_RATE as usize / 2, "{from}");
            let want = sine(SAMPLE_RATE, freq, y.len());
            let err = max_err_mid(&y, &want);
            assert!(err < 2e-3, "{from} Hz -> 16 kHz, {freq} Hz: max err {err}");
        }
    }

    #[test]
    fn resample_removes_content_above_new_nyquist() {
        // 10 kHz cannot exist at 16 kHz: it must be filtered out, not aliased to 6 kHz.
        let x = sine(44_100, 10_000.0, 22_050);
        let y = resample(&x, 44_100, SAMPLE_RATE);
        let err = max_err_mid(&y, &vec![0.0; y.len()]);
        assert!(err < 1e-3, "alias amplitude {err}");
    }

    #[test]
    fn odd_rates_use_direct_taps() {
        // gcd(44_057, 16_000) = 1: 16_000 phases, beyond the table.
        let x = sine(44_057, 500.0, 44_057 / 4);
        let y = resample(&x, 44_057, SAMPLE_RATE);
        let want = sine(SAMPLE_RATE, 500.0, y.len());
        assert!(max_err_mid(&y, &want) < 2e-3);
    }

    #[test]
    fn unknown_formats_are_named() {
        let e = decode_bytes(b"ID3\x03\x00\x00\x00\x00", Path::new("x.mp3")).unwrap_err();
        assert!(matches!(e, WhisperError::UnsupportedAudio { .. }), "{e}");
        assert!(e.to_string().contains("MP3"), "{e}");
        let e = decode_bytes(b"", Path::new("empty.wav")).unwrap_err();
        assert!(matches!(e, WhisperError::EmptyAudio { .. }), "{e}");
    }
}
