//! Whisper (OpenAI's encoder–decoder speech recogniser) with Flexi-LoRA on a configurable set
//! of projections, loading Hugging Face checkpoints.
//!
//! | file | concern |
//! | --- | --- |
//! | [`config`] | `config.json` / `generation_config.json` -> [`WhisperConfig`]; adapter targets |
//! | [`audio`] | WAV / FLAC decoding, down-mix, Kaiser-windowed sinc resampling to 16 kHz |
//! | [`mel`] | Whisper's log-mel spectrogram (Slaney filter bank, 30 s windows) |
//! | [`attention`] | multi-head self / cross attention, causal mask, KV caches |
//! | [`encoder`] | conv front end, sinusoidal positions, pre-norm blocks |
//! | [`decoder`] | learned positions, self + cross attention, tied output projection |
//! | [`model`] | [`Whisper`]: encode / decode with per-sample ranks |
//! | [`load`] | HF safetensors (f32 / f16 / bf16) -> [`Whisper`] |
//! | [`decode`] | batched greedy decoding with KV cache; timestamp rules; transcription with long-form seeking |
//! | [`tokenizer`] | `tokenizer.json`, special-token prompts |
//! | [`error`] | [`WhisperError`] |
//!
//! ```no_run
//! # use burn::backend::Flex;
//! use models::whisper::*;
//! let device = Default::default();
//! let model = load_whisper::<Flex>("whisper-tiny.en", &WhisperAdapter::all(8, 16.0), &device)?;
//! let tok = WhisperTokenizer::from_dir("whisper-tiny.en")?;
//! let audio = load_audio("1089-134686-0000.flac")?;
//! let texts = transcribe(&model, &tok, &[("utt".into(), audio)], &TranscribeOptions::default(), &device)?;
//! # Ok::<(), WhisperError>(())
//! ```

pub mod attention;
pub mod audio;
pub mod config;
pub mod decode;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod load;
pub mod mel;
pub mod model;
pub mod tokenizer;

pub use attention::{DecoderCache, LayerCache, WhisperAttention};
pub use audio::{Audio, SAMPLE_RATE, decode_bytes, decode_file, load_audio, resample};
pub use config::{WhisperAdapter, WhisperConfig, WhisperTarget};
pub use decode::{
    GreedyConfig, INPUT_STRIDE, LongForm, MAX_INITIAL_TIMESTAMP_INDEX, Segment, TIME_PRECISION,
    TimestampRules, TranscribeOptions, WindowSegment, greedy_decode, greedy_decode_with_timestamps,
    join_segments, segment_window, to_f32_vec, transcribe, transcribe_segments,
    transcribe_with_ranks,
};
pub use decoder::{DecoderLayer, WhisperDecoder};
pub use encoder::{EncoderLayer, WhisperEncoder};
pub use error::{Result, WhisperError};
pub use load::{build_whisper, build_whisper_in, load_whisper, load_whisper_in};
pub use mel::{HOP_LENGTH, LogMel, MelExtractor, N_FRAMES, N_SAMPLES, Padding, split_windows};
pub use model::Whisper;
pub use tokenizer::{Task, WhisperTokenizer};
