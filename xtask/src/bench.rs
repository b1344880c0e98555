//! `cargo xtask bench ...`: speed measurements (never in timed tests).
//!
//! `bench train|decode|prefill|whisper` time whole models, one case per process, with the
//! same semantics as `tools/bench_torch.py` (see [`crate::bench_models`] and BENCHMARKS.md).
//!
//! `bench layer` (alias `flexi`) times one adapted layer (default: Llama-3.2-1B q_proj, 2048x2048, a batch of
//! 8 x 256 tokens) for the base linear alone, LoRA at a fixed rank, and a mixed batch of ranks,
//! forward only and forward + backward, and prints medians and ratios.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use clap::{Args, Subcommand};
use flexi_burn::backend::{self, BackendJob, BackendKind};
use flexi_burn::{FlexiLinear, FlexiLinearConfig, SampleRanks};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Subcommand)]
enum BenchTarget {
    /// One adapted layer: base vs LoRA-r vs a mixed-rank batch, forward and forward+backward.
    #[command(alias = "flexi")]
    Layer(FlexiArgs),
    /// Optimizer steps of the real trainer on a Llama shape (LoRA, Flexi, DyLoRA, full, ...).
    Train(crate::bench_models::TrainBench),
    /// Greedy decoding with the KV cache (LoRA-8 unmerged).
    Decode(crate::bench_models::DecodeBench),
    /// One cached forward of a long prompt, last position's logits.
    Prefill(crate::bench_models::PrefillBench),
    /// Whisper tiny.en: encode 30 s and decode greedily.
    Whisper(crate::bench_models::WhisperBench),
}

#[derive(Args, Clone, Debug, Serialize)]
struct FlexiArgs {
    /// Backend: flex (CPU), wgpu or cuda, or ndarray (Burn's other CPU backend, for comparison);
    /// all but flex need their cargo feature.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Input features of the layer.
    #[arg(long, default_value_t = 2048)]
    d_in: usize,
    /// Output features of the layer.
    #[arg(long, default_value_t = 2048)]
    d_out: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Rank of the fixed-rank LoRA case (and r_max of the adapter).
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Ranks of the mixed batch, assigned to the samples in turn.
    #[arg(long, default_value = "2,8", value_delimiter = ',')]
    mixed: Vec<usize>,
    /// Timed iterations per case.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed warm-up iterations per case.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seed of the backend's random number generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.target {
        BenchTarget::Layer(a) => bench_flexi(a),
        BenchTarget::Train(a) => crate::bench_models::run_train(a),
        BenchTarget::Decode(a) => crate::bench_models::run_decode(a),
        BenchTarget::Prefill(a) => crate::bench_models::run_prefill(a),
        BenchTarget::Whisper(a) => crate::bench_models::run_whisper(a),
    }
}

/// Timing of one case, in milliseconds.
#[derive(Serialize, Debug, Clone)]
struct CaseResult {
    case: String,
    forward_ms: Vec<f64>,
    forward_backward_ms: Vec<f64>,
    forward_median_ms: f64,
    forward_backward_median_ms: f64,
}

fn bench_flexi(args: FlexiArgs) -> Result<()> {
    if args.iters == 0 || args.batch == 0 || args.seq == 0 {
        bail!("--iters, --batch and --seq must be at least 1");
    }
    if args.rank == 0 {
        bail!("--rank must be at least 1");
    }
    if let Some(r) = args.mixed.iter().find(|r| **r > args.rank) {
        bail!(
            "--mixed rank {r} exceeds --rank {} (the adapter's r_max)",
            args.rank
        );
    }
    let kind: BackendKind = args.backend.parse()?;
    println!(
        "bench flexi: layer {}x{}, batch {} x {} tokens, backend {kind}, {} iterations (+{} warm-up)",
        args.d_in, args.d_out, args.batch, args.seq, args.iters, args.warmup
    );
    let results = backend::run(kind, FlexiBench(args.clone()))??;

    let by = |name: &str| results.iter().find(|r| r.case == name);
    println!();
    println!("{:<28} {:>14} {:>18}", "case", "forward ms", "fwd+bwd ms");
    for r in &results {
        println!(
            "{:<28} {:>14.2} {:>18.2}",
            r.case, r.forward_median_ms, r.forward_backward_median_ms
        );
    }
    let lora = format!("lora-{}", args.rank);
    let mixed = mixed_name(&args.mixed);
    if let (Some(base), Some(lora), Some(mixed)) = (by("base"), by(&lora), by(&mixed)) {
        println!();
        println!(
            "ratio {} / {}: forward {:.3}, fwd+bwd {:.3}",
            mixed.case,
            lora.case,
            mixed.forward_median_ms / lora.forward_median_ms,
            mixed.forward_backward_median_ms / lora.forward_backward_median_ms
        );
        println!(
            "ratio {} / base: forward {:.3}, fwd+bwd {:.3}",
            lora.case,
            lora.forward_median_ms / base.forward_median_ms,
            lora.forward_backward_median_ms / base.forward_backward_median_ms
        );
    }
    if let Some(path) = &args.out {
        let json = serde_json::json!({ "args": args, "results": results });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn mixed_name(ranks: &[usize]) -> String {
    let parts: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    format!("mixed {{{}}}", parts.join(","))
}

struct FlexiBench(FlexiArgs);

impl BackendJob for FlexiBench {
    type Output = Result<Vec<CaseResult>>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        B::seed(&device, a.seed);
        let mut layer: FlexiLinear<B> = FlexiLinearConfig::new(a.d_in, a.d_out, a.rank)
            .try_init(&device)
            .context("building the layer")?;
        // A trained adapter has B != 0; the timing does not depend on it, but keep it honest.
        layer.lora_b = Param::from_tensor(Tensor::random(
            [a.d_out, a.rank],
            Distribution::Normal(0.0, 0.02),
            &device,
        ));
        let x = Tensor::<B, 3>::random([a.batch, a.seq, a.d_in], Distribution::Default, &device);

        let mixed: Vec<usize> = (0..a.batch).map(|i| a.mixed[i % a.mixed.len()]).collect();
        let cases: Vec<(String, Option<SampleRanks>)> = vec![
            ("base".into(), None),
            (
                format!("lora-{}", a.rank),
                Some(SampleRanks::uniform(a.batch, a.rank)),
            ),
            (mixed_name(&a.mixed), Some(SampleRanks::new(mixed))),
        ];

        let inner = layer.valid();
        let x_inner = x.clone().inner();
        let mut out = Vec::new();
        for (name, ranks) in cases {
            let forward_ms = time(&name, "forward", a.warmup, a.iters, || {
                let y = match &ranks {
                    None => inner.forward_base(x_inner.clone()),
                    Some(r) => inner.forward(x_inner.clone(), r),
                };
                sync::<B::InnerBackend>(y)
            })?;
            let forward_backward_ms = time(&name, "fwd+bwd", a.warmup, a.iters, || {
                // The input needs a gradient too, as inside a network: the base-only case
                // then still does its backward matmul.
                let xg = x.clone().require_grad();
                let y = match &ranks {
                    None => layer.forward_base(xg.clone()),
                    Some(r) => layer.forward(xg.clone(), r),
                };
                let grads = y.mean().backward();
                let gx = xg.grad(&grads).context("input gradient missing")?;
                sync::<B::InnerBackend>(gx)
            })?;
            out.push(CaseResult {
                case: name,
                forward_median_ms: median(&forward_ms),
                forward_backward_median_ms: median(&forward_backward_ms),
                forward_ms,
                forward_backward_ms,
            });
        }
        Ok(out)
    }
}

/// Waits for the device and reads one value back, so the work is really done.
fn sync<B: Backend>(t: Tensor<B, 3>) -> Result<()> {
    let device = t.device();
    let _ = t.slice([0..1, 0..1, 0..1]).into_data();
    B::sync(&device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
    Ok(())
}

pub(crate) fn time(
    case: &str,
    what: &str,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    let pb = ProgressBar::new((warmup + iters) as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:<32} [{bar:30}] {pos}/{len} {elapsed}/{eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(format!("{case} {what}"));
    for _ in 0..warmup {
        f()?;
        pb.inc(1);
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(times)
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
