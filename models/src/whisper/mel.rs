//! Whisper's log-mel spectrogram, computed exactly as OpenAI's `log_mel_spectrogram` and
//! transformers' `WhisperFeatureExtractor`:
//!
//! 1. pad or trim the 16 kHz samples to 30 s (480 000 samples, zeros appended) — or, with
//!    [`Padding::None`], take them as they are;
//! 2. STFT: `n_fft = 400`, `hop = 160`, periodic Hann window, `center = True` (reflect padding
//!    of 200 samples on both sides), one-sided; the last frame is dropped, so 30 s give 3000
//!    frames;
//! 3. power spectrum `|X|^2` times the Slaney mel filter bank (`norm = "slaney"`,
//!    `mel_scale = "slaney"`, 0..8000 Hz, 80 or 128 bins), computed here;
//! 4. `log10(max(x, 1e-10))`, then `max(x, max(x) - 8)` over the whole spectrogram, then
//!    `(x + 4) / 4`.
//!
//! Everything is computed in f64 (the FFT with `realfft`) and returned as f32.

use std::f64::consts::PI;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::audio::SAMPLE_RATE;
use super::error::{Result, WhisperError};

/// FFT size.
pub const N_FFT: usize = 400;
/// Hop between frames.
pub const HOP_LENGTH: usize = 160;
/// Seconds in one Whisper window.
pub const CHUNK_SECONDS: u32 = 30;
/// Samples in one window (480 000).
pub const N_SAMPLES: usize = CHUNK_SECONDS as usize * SAMPLE_RATE as usize;
/// Mel frames in one window (3000).
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;

/// How the samples are brought to a length before the STFT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Zero-pad or trim to 30 s (what the model takes): 3000 frames.
    ThirtySeconds,
    /// No padding or trimming: `len / 160` frames (transformers' `padding="longest"`).
    None,
}

/// A log-mel spectrogram `[n_mels, frames]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LogMel {
    /// Mel bins.
    pub n_mels: usize,
    /// Frames.
    pub frames: usize,
    /// `data[m * frames + t]`.
    pub data: Vec<f32>,
}

/// Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa / transformers.
pub fn hz_to_mel(hz: f64) -> f64 {
    let min_log_hz = 1000.0;
    let min_log_mel = 15.0;
    let logstep = 27.0 / 6.4f64.ln();
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() * logstep
    } else {
        3.0 * hz / 200.0
    }
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(mel: f64) -> f64 {
    let min_log_hz = 1000.0;
    let min_log_mel = 15.0;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// The Slaney-normalised triangular mel filter bank `[n_mels, n_fft / 2 + 1]` (row-major) for
/// 16 kHz audio, 0 to 8000 Hz — transformers' `mel_filter_bank(201, n_mels, 0, 8000, 16000,
/// norm="slaney", mel_scale="slaney")`, transposed.
pub fn mel_filters(n_mels: usize) -> Vec<f64> {
    let n_freqs = N_FFT / 2 + 1;
    let (mel_min, mel_max) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE as f64 / 2.0));
    let filter_hz: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(mel_min + (mel_max - mel_min) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let fft_hz: Vec<f64> = (0..n_freqs)
        .map(|i| (SAMPLE_RATE / 2) as f64 * i as f64 / (n_freqs - 1) as f64)
        .collect();
    let mut out = vec![0.0; n_mels * n_freqs];
    for m in 0..n_mels {
        let (lo, center, hi) = (filter_hz[m], filter_hz[m + 1], filter_hz[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (f, &hz) in fft_hz.iter().enumerate() {
            let down = (hz - lo) / (center - lo);
            let up = (hi - hz) / (hi - center);
            out[m * n_freqs + f] = down.min(up).max(0.0) * enorm;
        }
    }
    out
}

/// Computes log-mel spectrograms; holds the filter bank, window and FFT plan.
pub struct MelExtractor {
    n_mels: usize,
    /// `[n_mels, 201]` filters, each with its first and last non-zero frequency bin.
    filters: Vec<(usize, Vec<f64>)>,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor")
            .field("n_mels", &self.n_mels)
            .finish_non_exhaustive()
    }
}

impl MelExtractor {
    /// An extractor for `n_mels` bins (80, or 128 for large-v3).
    pub fn new(n_mels: usize) -> Self {
        let n_freqs = N_FFT / 2 + 1;
        let bank = mel_filters(n_mels);
        let filters = (0..n_mels)
            .map(|m| {
                let row = &bank[m * n_freqs..(m + 1) * n_freqs];
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).unwrap_or(0);
                (first, row[first..=last.max(first)].to_vec())
            })
            .collect();
        // Periodic Hann window (torch.hann_window(400), np.hanning(401)[:-1]).
        let window = (0..N_FFT)
            .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / N_FFT as f64).cos())
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        Self {
            n_mels,
            filters,
            window,
            fft,
        }
    }

    /// Mel bins.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The log-mel spectrogram of 16 kHz mono `samples` (`source` names them in errors).
    ///
    /// With [`Padding::ThirtySeconds`] the samples are zero-padded to 30 s; longer input is
    /// refused with [`WhisperError::AudioTooLong`] (`transcribe` seeks through longer audio;
    /// [`split_windows`] cuts it into hard windows).
    /// Empty input is [`WhisperError::EmptyAudio`]; silence is valid (every value is then
    /// `(log10(1e-10) + 4) / 4 = -1.5`).
    pub fn log_mel(&self, samples: &[f32], padding: Padding, source: &str) -> Result<LogMel> {
        if samples.is_empty() {
            return Err(WhisperError::EmptyAudio {
                input: source.to_string(),
            });
        }
        let padded: Vec<f64> = match padding {
            Padding::ThirtySeconds => {
                if samples.len() > N_SAMPLES {
                    return Err(WhisperError::AudioTooLong {
                        input: source.to_string(),
                        seconds: samples.len() as f64 / SAMPLE_RATE as f64,
                        max_seconds: CHUNK_SECONDS,
                    });
                }
                let mut x: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
                x.resize(N_SAMPLES, 0.0);
                x
            }
            Padding::None => {
                let min = N_FFT / 2 + 1;
                if samples.len() < min {
                    return Err(WhisperError::AudioTooShort {
                        input: source.to_string(),
                        samples: samples.len(),
                        min,
                    });
                }
                samples.iter().map(|&s| s as f64).collect()
            }
        };
        if padded.iter().any(|x| !x.is_finite()) {
            return Err(WhisperError::InvalidInput(format!(
                "{source}: the audio has NaN or infinite samples"
            )));
        }
        Ok(self.compute(&padded))
    }

    fn compute(&self, x: &[f64]) -> LogMel {
        let n = x.len();
        let half = N_FFT / 2;
        // Reflect padding (numpy "reflect": the edge sample is not repeated).
        let mut padded = Vec::with_capacity(n + 2 * half);
        padded.extend((1..=half).rev().map(|i| x[i]));
        padded.extend_from_slice(x);
        padded.extend((0..half).map(|i| x[n - 2 - i]));
        // 1 + n / hop frames; the last one is dropped.
        let frames = n / HOP_LENGTH;
        let mut power = vec![0.0f64; N_FFT / 2 + 1];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut mel = vec![0.0f64; self.n_mels * frames];
        for t in 0..frames {
            let start = t * HOP_LENGTH;
            for (i, v) in input.iter_mut().enumerate() {
                *v = padded[start + i] * self.window[i];
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("FFT buffers have the planned lengths");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = Complex::norm_sqr(c);
            }
            for (m, (first, w)) in self.filters.iter().enumerate() {
                let e: f64 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                mel[m * frames + t] = e.max(1e-10).log10();
            }
        }
        let max = mel.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let data = mel
            .into_iter()
            .map(|v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
            .collect();
        LogMel {
            n_mels: self.n_mels,
            frames,
            data,
        }
    }
}

/// Splits 16 kHz samples into consecutive 30 s windows (the last one shorter): the hard
/// windows of `LongForm::Split` (the default long-form transcription seeks by timestamps
/// instead; see `decode`). Empty input gives no window.
pub fn split_windows(samples: &[f32]) -> Vec<&[f32]> {
    samples.chunks(N_SAMPLES).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_slaney_normalised_triangles() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * 201);
        assert!(f.iter().all(|&w| w >= 0.0));
        // Every filter has some weight.
        for m in 0..80 {
            assert!(f[m * 201..(m + 1) * 201].iter().any(|&w| w > 0.0), "{m}");
        }
        assert!((mel_to_hz(hz_to_mel(3210.0)) - 3210.0).abs() < 1e-9);
    }

    #[test]
    fn silence_is_constant_and_short_input_refused() {
        let mel = MelExtractor::new(80);
        let m = mel
            .log_mel(&[0.0; 16000], Padding::ThirtySeconds, "silence")
            .unwrap();
        assert_eq!((m.n_mels, m.frames), (80, 3000));
        assert!(m.data.iter().all(|&v| (v + 1.5).abs() < 1e-6));
        let e = mel
            .log_mel(&[0.1; 100], Padding::None, "short")
            .unwrap_err();
        assert!(matches!(e, WhisperError::AudioTooShort { .. }), "{e}");
        let e = mel
            .log_mel(&vec![0.0; N_SAMPLES + 1], Padding::ThirtySeconds, "long")
            .unwrap_err();
        assert!(matches!(e, WhisperError::AudioTooLong { .. }), "{e}");
    }
}
