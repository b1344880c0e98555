//! `cargo xtask transcribe` and the Whisper path of `cargo xtask logits` (`--audio`): run a
//! Hugging Face Whisper directory with the native Burn model.
//!
//! ```text
//! cargo xtask transcribe --model DIR FILE... [--backend flex] [--language en] [--translate]
//!                        [--max-new-tokens 224] [--batch-size 8]
//! cargo xtask logits --model DIR --audio FILE [--ids 50258,50259,...] --out FILE.safetensors
//! ```
//!
//! `transcribe` prints one line per file, in order: its transcript (audio longer than 30 s is
//! split into 30 s windows whose texts are joined). `logits` writes float32 `mel [n_mels,
//! frames]`, `encoder_out [frames / 2, d_model]`, `logits [seq, vocab]` and int64
//! `input_ids [seq]` for one 30 s window (longer audio is refused); the default ids are the
//! transcription prompt.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use flexi_burn::SampleRanks;
use flexi_burn::backend::{self, BackendJob, BackendKind};
use models::whisper::{
    MelExtractor, Padding, Task, TranscribeOptions, WhisperAdapter, WhisperTokenizer, load_audio,
    to_f32_vec, transcribe,
};
use safetensors::tensor::TensorView;

/// `cargo xtask transcribe`.
#[derive(Args, Clone, Debug)]
pub struct TranscribeArgs {
    /// Hugging Face Whisper directory (config.json, model.safetensors, tokenizer.json) or a
    /// CTranslate2 directory (model.bin, config.json, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Audio files (WAV or FLAC, any rate, mono or stereo).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Backend: flex (CPU), wgpu or cuda (the latter two need their cargo feature).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Spoken language for multilingual models (en, de, ...; default en).
    #[arg(long)]
    language: Option<String>,
    /// Translate to English instead of transcribing (multilingual models).
    #[arg(long)]
    translate: bool,
    /// Most tokens per 30 s window.
    #[arg(long, default_value_t = 224)]
    max_new_tokens: usize,
    /// 30 s windows decoded together.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

/// Runs `cargo xtask transcribe`.
pub fn run_transcribe(args: TranscribeArgs) -> Result<()> {
    let kind: BackendKind = args
        .backend
        .parse()
        .with_context(|| format!("--backend {}", args.backend))?;
    backend::run(kind, TranscribeJob(args))?
}

struct TranscribeJob(TranscribeArgs);

impl BackendJob for TranscribeJob {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        transcribe_on::<B::InnerBackend>(self.0, &device)
    }
}

fn transcribe_on<B: Backend>(args: TranscribeArgs, device: &B::Device) -> Result<()> {
    let model = models::ct2::load_whisper_any::<B>(&args.model, &WhisperAdapter::none(), device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tok = WhisperTokenizer::from_dir(&args.model)?;
    let audios = args
        .files
        .iter()
        .map(|f| Ok((f.display().to_string(), load_audio(f)?)))
        .collect::<Result<Vec<_>>>()?;
    let options = TranscribeOptions {
        language: args.language.clone(),
        task: if args.translate {
            Task::Translate
        } else {
            Task::Transcribe
        },
        max_new_tokens: args.max_new_tokens,
        batch_size: args.batch_size,
        ..Default::default()
    };
    let texts = transcribe(&model, &tok, &audios, &options, device).context("transcribing")?;
    for text in texts {
        println!("{text}");
    }
    Ok(())
}

/// The Whisper path of `cargo xtask logits`.
#[derive(Clone, Debug)]
pub struct WhisperLogits {
    /// Model directory.
    pub model: PathBuf,
    /// Backend.
    pub backend: BackendKind,
    /// Audio file (one 30 s window at most).
    pub audio: PathBuf,
    /// Decoder ids (default: the transcription prompt).
    pub ids: Option<Vec<u32>>,
    /// Output safetensors file.
    pub out: PathBuf,
}

/// Runs `cargo xtask logits --audio ...`.
pub fn run_logits(args: WhisperLogits) -> Result<()> {
    backend::run(args.backend, LogitsJob(args))?
}

struct LogitsJob(WhisperLogits);

impl BackendJob for LogitsJob {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        logits_on::<B::InnerBackend>(self.0, &device)
    }
}

fn logits_on<B: Backend>(args: WhisperLogits, device: &B::Device) -> Result<()> {
    let model = models::ct2::load_whisper_any::<B>(&args.model, &WhisperAdapter::none(), device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let ids = match &args.ids {
        Some(ids) => ids.clone(),
        None => WhisperTokenizer::from_dir(&args.model)?.prompt(
            model.config.is_multilingual,
            None,
            Task::Transcribe,
        )?,
    };
    if ids.is_empty() {
        bail!("no decoder ids");
    }
    let samples = load_audio(&args.audio)?;
    let mel = MelExtractor::new(model.config.num_mel_bins).log_mel(
        &samples,
        Padding::ThirtySeconds,
        &args.audio.display().to_string(),
    )?;
    let ranks = SampleRanks::new(vec![0]);
    let enc = model.encode(model.mel_batch(std::slice::from_ref(&mel), device)?, &ranks)?;
    let [_, frames, d_model] = enc.dims();
    let mut cache = model.new_cache();
    let logits = model.decode(
        model.ids_tensor(std::slice::from_ref(&ids), device)?,
        &enc,
        &mut cache,
        &ranks,
    )?;
    let [_, seq, vocab] = logits.dims();
    let enc = to_f32_vec(enc)?;
    let logits = to_f32_vec(logits)?;
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (mel_b, enc_b, logit_b) = (f32_bytes(&mel.data), f32_bytes(&enc), f32_bytes(&logits));
    let id_b: Vec<u8> = ids.iter().flat_map(|&t| (t as i64).to_le_bytes()).collect();
    let f32t = safetensors::Dtype::F32;
    let tensors = [
        (
            "mel",
            TensorView::new(f32t, vec![mel.n_mels, mel.frames], &mel_b)?,
        ),
        (
            "encoder_out",
            TensorView::new(f32t, vec![frames, d_model], &enc_b)?,
        ),
        ("logits", TensorView::new(f32t, vec![seq, vocab], &logit_b)?),
        (
            "input_ids",
            TensorView::new(safetensors::Dtype::I64, vec![ids.len()], &id_b)?,
        ),
    ];
    write(&args.out, tensors)?;
    eprintln!(
        "wrote {} (mel [{}, {}], encoder_out [{frames}, {d_model}], logits [{seq}, {vocab}])",
        args.out.display(),
        mel.n_mels,
        mel.frames
    );
    Ok(())
}

fn write<'a>(out: &Path, tensors: [(&str, TensorView<'a>); 4]) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    safetensors::serialize_to_file(tensors, None, out)
        .with_context(|| format!("writing {}", out.display()))
}
