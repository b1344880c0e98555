//! `cargo xtask generate` and `cargo xtask logits`: run a Hugging Face Llama directory with the
//! native Burn model.
//!
//! ```text
//! cargo xtask generate --model DIR --prompt "..." [--backend flex] [--max-new-tokens N]
//!                      [--adapter PEFT_DIR --rank R] [--temperature T --top-p P --seed S]
//! cargo xtask logits --model DIR (--prompt "..." | --ids 1,5,9) --out FILE.safetensors
//! ```
//!
//! `logits` writes float32 `logits [seq, vocab]` (every position) and int64 `input_ids [seq]`,
//! to compare with a reference of one's own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use flexi_burn::SampleRanks;
use flexi_burn::backend::{self, BackendJob, BackendKind};
use models::llama::{
    AdapterConfig, GenerationConfig, Llama, Message, PaddedBatch, Sampling, generate,
};
use safetensors::tensor::TensorView;

/// Model selection shared by both commands.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, model.safetensors[.index.json], tokenizer.json)
    /// or a llama.cpp `.gguf` file.
    #[arg(long)]
    model: PathBuf,
    /// Backend: flex (CPU), wgpu or cuda (the latter two need their cargo feature).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// PEFT LoRA or AdaLoRA adapter directory (adapter_config.json,
    /// adapter_model.safetensors), read as `import` reads it.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Accept a half-precision adapter on an f32 base (converted exactly).
    #[arg(long)]
    allow_upcast: bool,
    /// LoRA rank to run at (0 = base model; default: the adapter's r, or 0 without one).
    #[arg(long)]
    rank: Option<usize>,
    /// Storage type of the frozen weights: f32 (default), bf16 or f16 (matmuls against them
    /// in that type; norms, softmax and the adapter in f32).
    #[arg(long, default_value = "f32")]
    precision: flexi_burn::Precision,
}

impl ModelArgs {
    fn backend(&self) -> Result<BackendKind> {
        self.backend
            .parse()
            .with_context(|| format!("--backend {}", self.backend))
    }

    fn load<B: Backend>(&self, device: &B::Device) -> Result<(Llama<B>, usize)> {
        let (model, r_max) = match &self.adapter {
            Some(adapter) => train::peft::load_llama_with_adapter::<B>(
                &self.model,
                adapter,
                self.allow_upcast,
                self.precision,
                device,
            )
            .with_context(|| {
                format!(
                    "loading {} with adapter {}",
                    self.model.display(),
                    adapter.display()
                )
            })?,
            None => (
                models::auto::load_llama_any_in::<B>(
                    &self.model,
                    &AdapterConfig::none(),
                    self.precision,
                    device,
                )
                .with_context(|| format!("loading {}", self.model.display()))?,
                0,
            ),
        };
        let rank = self.rank.unwrap_or(r_max);
        if rank > r_max {
            if self.adapter.is_none() {
                bail!("--rank {rank} needs --adapter (the model has no LoRA adapter)");
            }
            bail!("--rank {rank} exceeds the adapter's rank {r_max}");
        }
        Ok((model.store_frozen_in(self.precision), rank))
    }
}

/// `cargo xtask generate`.
#[derive(Args, Clone, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt; repeat the flag for a batch.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Most new tokens per prompt.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus (top-p) mass when sampling.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Random seed when sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Encode the prompt as is, without the tokenizer's chat template.
    #[arg(long)]
    raw: bool,
}

/// `cargo xtask logits`.
#[derive(Args, Clone, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to encode (with the tokenizer's special tokens, e.g. BOS; no chat template).
    #[arg(long, conflicts_with_all = ["ids", "audio"], required_unless_present_any = ["ids", "audio"])]
    prompt: Option<String>,
    /// Token ids, comma-separated, used as they are.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Output safetensors file (`logits` f32 [seq, vocab], `input_ids` i64 [seq]).
    #[arg(long)]
    out: PathBuf,
    /// Whisper: an audio file (WAV/FLAC, at most 30 s); `--model` is then a Whisper directory
    /// and the file also gets `mel` and `encoder_out` (see `whisper_cmd`). Default ids: the
    /// transcription prompt.
    #[arg(long)]
    audio: Option<PathBuf>,
}

/// Runs `cargo xtask generate`.
pub fn run_generate(args: GenerateArgs) -> Result<()> {
    let kind = args.model.backend()?;
    backend::run(kind, GenerateJob(args))?
}

/// Runs `cargo xtask logits`.
pub fn run_logits(args: LogitsArgs) -> Result<()> {
    let kind = args.model.backend()?;
    if let Some(audio) = args.audio {
        if args.model.adapter.is_some() || args.model.rank.is_some_and(|r| r > 0) {
            bail!("--adapter / --rank are not supported with --audio (Whisper)");
        }
        return crate::whisper_cmd::run_logits(crate::whisper_cmd::WhisperLogits {
            model: args.model.model,
            backend: kind,
            audio,
            ids: args.ids,
            out: args.out,
        });
    }
    backend::run(kind, LogitsJob(args))?
}

struct GenerateJob(GenerateArgs);

impl BackendJob for GenerateJob {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        generate_on::<B::InnerBackend>(self.0, &device)
    }
}

fn generate_on<B: Backend>(args: GenerateArgs, device: &B::Device) -> Result<()> {
    let (model, rank) = args.model.load::<B>(device)?;
    let tok = models::auto::load_tokenizer_any(&args.model.model)?;
    tok.check_vocab(model.config.vocab_size)?;
    let template = (!args.raw).then(|| tok.chat_template()).flatten();
    let prompts = args
        .prompt
        .iter()
        .map(|p| match &template {
            Some(t) => t
                .apply(&[Message::user(p.as_str())], true)
                .and_then(|text| tok.encode(&text, false)),
            None => tok.encode(p, true),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {i} encodes to no tokens");
    }
    let mut eos = model.config.eos_token_ids.clone();
    if let Some(t) = &template {
        eos.extend(t.stop_tokens().iter().filter_map(|s| tok.token_id(s)));
    }
    let sampling = if args.temperature > 0.0 {
        Sampling::TopP {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        }
    } else {
        Sampling::Greedy
    };
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        eos_token_ids: eos,
        pad_token_id: model.config.bos_token_id.unwrap_or(0),
        use_cache: true,
    };
    let ranks = SampleRanks::uniform(prompts.len(), rank);
    let out = generate(&model, &prompts, &ranks, &config).context("generating")?;
    for (i, tokens) in out.tokens.iter().enumerate() {
        let text = tok.decode(tokens, true)?;
        if args.prompt.len() > 1 {
            println!("--- [{i}] {}", args.prompt[i]);
        }
        println!("{text}");
    }
    Ok(())
}

struct LogitsJob(LogitsArgs);

impl BackendJob for LogitsJob {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        logits_on::<B::InnerBackend>(self.0, &device)
    }
}

fn logits_on<B: Backend>(args: LogitsArgs, device: &B::Device) -> Result<()> {
    let ids = match (&args.ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(prompt)) => {
            models::auto::load_tokenizer_any(&args.model.model)?.encode(prompt, true)?
        }
        (None, None) => bail!("give --prompt or --ids"),
    };
    if ids.is_empty() {
        bail!("no input tokens");
    }
    let (model, rank) = args.model.load::<B>(device)?;
    let batch = PaddedBatch::left_pad(std::slice::from_ref(&ids), 0);
    let logits = model
        .forward(&batch, &SampleRanks::new(vec![rank]))
        .context("forward pass")?;
    let [_, seq, vocab] = logits.dims();
    let values: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading logits back: {e:?}"))?;
    write_logits(&args.out, &values, seq, vocab, &ids)?;
    eprintln!(
        "wrote {} (logits [{seq}, {vocab}], input_ids [{seq}], rank {rank})",
        args.out.display()
    );
    Ok(())
}

fn write_logits(out: &Path, logits: &[f32], seq: usize, vocab: usize, ids: &[u32]) -> Result<()> {
    let logit_bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let id_bytes: Vec<u8> = ids.iter().flat_map(|&t| (t as i64).to_le_bytes()).collect();
    let tensors = [
        (
            "logits",
            TensorView::new(safetensors::Dtype::F32, vec![seq, vocab], &logit_bytes)?,
        ),
        (
            "input_ids",
            TensorView::new(safetensors::Dtype::I64, vec![ids.len()], &id_bytes)?,
        ),
    ];
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    safetensors::serialize_to_file(tensors, None, out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
