//! Whisper's audio front end against transformers' `WhisperFeatureExtractor` (fixtures from
//! `tools/make_whisper_fixtures.py`), plus WAV / FLAC decoding and audio bad input.

mod common;

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use models::whisper::{
    MelExtractor, N_FRAMES, N_SAMPLES, Padding, WhisperError, decode_bytes, decode_file,
    load_audio, split_windows,
};

fn fixture_dir() -> PathBuf {
    common::fixture("whisper_tiny")
}

/// The analytic test signal of `tools/make_whisper_fixtures.py` (same formula and order of
/// operations, f64, returned as f32).
fn test_signal(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f64 / 16000.0;
            let env = 0.5 * (1.0 + (2.0 * PI * 0.7 * t).sin());
            let mut x = 0.3 * (2.0 * PI * 440.0 * t).sin();
            x += 0.2 * env * (2.0 * PI * 1234.5 * t + 0.3).sin();
            x += 0.1 * (2.0 * PI * (200.0 * t + 25.0 * t * t)).sin();
            x += 0.05 * (2.0 * PI * 3571.0 * t).sin() * (2.0 * PI * 3.0 * t).cos();
            x as f32
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn log_mel_1s_unpadded_matches_transformers() {
    let r = common::reference(fixture_dir().join("reference.safetensors"));
    let want = &r["mel_1s"];
    assert_eq!(want.shape, vec![80, 100]);
    let mel = MelExtractor::new(80)
        .log_mel(&test_signal(16000), Padding::None, "test signal")
        .unwrap();
    assert_eq!((mel.n_mels, mel.frames), (80, 100));
    let d = max_abs_diff(&mel.data, &want.f);
    println!("mel 1 s: max abs diff {d:e}");
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn log_mel_30s_window_matches_transformers() {
    let r = common::reference(fixture_dir().join("reference.safetensors"));
    let want = &r["mel_30s"];
    assert_eq!(want.shape, vec![80, 3000]);
    let mel = MelExtractor::new(80)
        .log_mel(
            &test_signal(N_SAMPLES),
            Padding::ThirtySeconds,
            "test signal",
        )
        .unwrap();
    assert_eq!((mel.n_mels, mel.frames), (80, N_FRAMES));
    let d = max_abs_diff(&mel.data, &want.f);
    println!("mel 30 s: max abs diff {d:e}");
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn wav_padded_to_30s_matches_transformers() {
    let r = common::reference(fixture_dir().join("reference.safetensors"));
    let want = &r["mel_wav_head"]; // [80, 100] of the [80, 3000] window
    let samples = load_audio(fixture_dir().join("audio_1s.wav")).unwrap();
    assert_eq!(samples.len(), 16000);
    let mel = MelExtractor::new(80)
        .log_mel(&samples, Padding::ThirtySeconds, "audio_1s.wav")
        .unwrap();
    let head: Vec<f32> = (0..80)
        .flat_map(|m| mel.data[m * 3000..m * 3000 + 100].to_vec())
        .collect();
    let d = max_abs_diff(&head, &want.f);
    println!("mel of the WAV (padded, first 100 frames): max abs diff {d:e}");
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn flac_decodes_to_the_wav_samples() {
    let wav = decode_file(fixture_dir().join("audio_1s.wav")).unwrap();
    let flac = decode_file(fixture_dir().join("audio_1s.flac")).unwrap();
    assert_eq!(flac.sample_rate, 16000);
    assert_eq!(wav, flac);
}

fn write_wav(spec: hound::WavSpec, frames: &[Vec<f64>]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for frame in frames {
            for &v in frame {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(v as f32).unwrap(),
                    (_, 8) => w.write_sample((v * 127.0).round() as i8).unwrap(),
                    (_, 16) => w.write_sample((v * 32767.0).round() as i16).unwrap(),
                    (_, 24) => w.write_sample((v * 8_388_607.0).round() as i32).unwrap(),
                    (_, 32) => w
                        .write_sample((v * 2_147_483_647.0).round() as i32)
                        .unwrap(),
                    _ => unreachable!(),
                }
            }
        }
        w.finalize().unwrap();
    }
    cursor.into_inner()
}

#[test]
fn wav_rates_depths_and_stereo_are_decoded_and_resampled() {
    let freq = 440.0;
    for (rate, bits, float, channels) in [
        (44_100, 16, false, 2),
        (48_000, 24, false, 1),
        (22_050, 32, true, 2),
        (8_000, 8, false, 1),
        (16_000, 32, false, 1),
    ] {
        let n = rate as usize / 2;
        let frames: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let v = 0.5 * (2.0 * PI * freq * i as f64 / rate as f64).sin();
                // Stereo: the same signal split unevenly over the channels; the mean is v / 2.
                if channels == 2 { vec![v, 0.0] } else { vec![v] }
            })
            .collect();
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let bytes = write_wav(spec, &frames);
        let audio = decode_bytes(&bytes, Path::new("gen.wav")).unwrap();
        assert_eq!(audio.sample_rate, rate);
        assert_eq!(audio.samples.len(), n);
        let resampled = audio.resampled(16_000);
        assert_eq!(resampled.samples.len(), 8000, "{rate}");
        let gain = if channels == 2 { 0.25 } else { 0.5 };
        let tol = if bits == 8 { 2e-2 } else { 2e-3 };
        for i in 800..7200 {
            let want = gain * (2.0 * PI * freq * i as f64 / 16000.0).sin();
            let got = resampled.samples[i] as f64;
            assert!(
                (got - want).abs() < tol,
                "{rate} Hz {bits} bit x{channels}: sample {i}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn bad_audio_gives_typed_errors() {
    let p = Path::new("bad.wav");
    // Empty file and a WAV with no samples.
    assert!(matches!(
        decode_bytes(b"", p),
        Err(WhisperError::EmptyAudio { .. })
    ));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let empty = write_wav(spec, &[]);
    let e = decode_bytes(&empty, p).unwrap_err();
    assert!(matches!(e, WhisperError::EmptyAudio { .. }), "{e}");
    assert!(e.to_string().contains("bad.wav"), "{e}");
    // A truncated WAV.
    let good = std::fs::read(fixture_dir().join("audio_1s.wav")).unwrap();
    let e = decode_bytes(&good[..30], p).unwrap_err();
    assert!(matches!(e, WhisperError::CorruptAudio { .. }), "{e}");
    // A FLAC whose frames are garbage, and one cut inside its header.
    let flac = std::fs::read(fixture_dir().join("audio_1s.flac")).unwrap();
    let mut broken = flac.clone();
    let n = broken.len();
    for b in &mut broken[n / 2..] {
        *b ^= 0x5a;
    }
    let e = decode_bytes(&broken, Path::new("bad.flac")).unwrap_err();
    assert!(matches!(e, WhisperError::CorruptAudio { .. }), "{e}");
    let e = decode_bytes(&flac[..20], Path::new("cut.flac")).unwrap_err();
    assert!(matches!(e, WhisperError::CorruptAudio { .. }), "{e}");
    // Unsupported containers and random bytes.
    for (bytes, what) in [
        (&b"OggS\x00\x02rest of an ogg page"[..], "Ogg"),
        (&b"ID3\x04\x00\x00\x00\x00\x00\x00"[..], "MP3"),
        (&b"hello, this is not audio"[..], "unknown format"),
    ] {
        let e = decode_bytes(bytes, Path::new("x.bin")).unwrap_err();
        assert!(matches!(e, WhisperError::UnsupportedAudio { .. }), "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    // A missing file.
    let e = load_audio("/nonexistent/audio.wav").unwrap_err();
    assert!(matches!(e, WhisperError::Io { .. }), "{e}");
}

#[test]
fn silence_empty_and_long_audio() {
    let mel = MelExtractor::new(80);
    // Silence is valid: a constant spectrogram, no NaN.
    let m = mel
        .log_mel(&vec![0.0; 16000], Padding::ThirtySeconds, "silence")
        .unwrap();
    assert!(m.data.iter().all(|v| (v + 1.5).abs() < 1e-6));
    // Empty input.
    let e = mel
        .log_mel(&[], Padding::ThirtySeconds, "nothing")
        .unwrap_err();
    assert!(matches!(e, WhisperError::EmptyAudio { .. }), "{e}");
    // Longer than 30 s: one window refuses, split_windows splits.
    let long = vec![0.1f32; N_SAMPLES * 2 + 16000];
    let e = mel
        .log_mel(&long, Padding::ThirtySeconds, "long.wav")
        .unwrap_err();
    assert!(matches!(e, WhisperError::AudioTooLong { .. }), "{e}");
    assert!(e.to_string().contains("61.00 s"), "{e}");
    let windows = split_windows(&long);
    assert_eq!(
        windows.iter().map(|w| w.len()).collect::<Vec<_>>(),
        vec![N_SAMPLES, N_SAMPLES, 16000]
    );
    // NaN samples.
    let e = mel
        .log_mel(&[f32::NAN; 400], Padding::ThirtySeconds, "nan")
        .unwrap_err();
    assert!(matches!(e, WhisperError::InvalidInput(_)), "{e}");
}

#[test]
fn log_mel_128_bins_matches_transformers() {
    let r = common::reference(fixture_dir().join("reference.safetensors"));
    let want = &r["mel_1s_128"];
    assert_eq!(want.shape, vec![128, 100]);
    let m = MelExtractor::new(128)
        .log_mel(&test_signal(16000), Padding::None, "x")
        .unwrap();
    assert_eq!((m.n_mels, m.frames), (128, 100));
    let d = max_abs_diff(&m.data, &want.f);
    println!("mel 1 s, 128 bins: max abs diff {d:e}");
    assert!(d <= 1e-4, "max abs diff {d}");
}
