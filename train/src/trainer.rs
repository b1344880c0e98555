//! The training loop, written once for every method and every backend.
//!
//! Why not burn-train's `Learner`: the methods need hooks it does not offer — per-sample ranks
//! drawn per step (DyLoRA, DyLoRA+) or carried by the batch (Flexi-LoRA), AdaLoRA's gradient
//! snapshot before and masking after the optimizer step, a global-norm clip over the trainable
//! parameters, and checkpoints whose resume is bit-identical. Everything random derives from
//! `(seed, step)`: the batch order of an epoch, the rank draws and the backend seed for
//! dropout, so a resumed run needs only the step to continue exactly.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use burn::module::ParamId;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};

use crate::optim::FusedAdamW;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType, Tensor};
use flexi_burn::{LossScale, Phase, RankSampler, SampleRanks};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::adalora::AdaLoraAllocator;
use crate::checkpoint::{CheckpointState, Checkpoints};
use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::lr::LrSchedule;
use crate::parallel::DataParallel;
use crate::params::{
    HostTensor, load_tensors, read_safetensors, to_safetensors, trainable_tensors,
};

/// A model and its loss on a batch: what the loop needs to know about a task.
pub trait Objective<B: AutodiffBackend>: Sync {
    /// The model being trained.
    type Model: AutodiffModule<B> + flexi_burn::Adapters<B> + Clone + Send;
    /// A prepared batch.
    type Batch: Send;

    /// Mean loss of `batch` with per-sample `ranks`.
    fn loss(
        &self,
        model: &Self::Model,
        batch: &Self::Batch,
        ranks: &SampleRanks,
    ) -> Result<Tensor<B, 1>>;

    /// Samples in the batch.
    fn batch_len(&self, batch: &Self::Batch) -> usize;

    /// Tokens in the batch (for tokens/s).
    fn batch_tokens(&self, batch: &Self::Batch) -> usize;

    /// Example ids of the batch (for error messages).
    fn example_ids(&self, batch: &Self::Batch) -> Vec<String>;

    /// Ranks the router assigned to the batch's samples (Flexi-LoRA).
    fn routed_ranks<'a>(&self, batch: &'a Self::Batch) -> Option<&'a [usize]>;

    /// Samples `range` of `batch` as a batch of their own, for computing one batch on several
    /// threads (see [`Trainer::shards`]). `None` (the default): the batch cannot be split.
    fn shard(&self, _batch: &Self::Batch, _range: std::ops::Range<usize>) -> Option<Self::Batch> {
        None
    }

    /// The number of targets the mean loss of `batch` divides by, so that shard losses can be
    /// weighted into exactly the loss of the whole batch.
    fn loss_targets(&self, _batch: &Self::Batch) -> usize {
        0
    }

    /// The loss value of `batch` and the gradients of `scale(loss)` by **per-layer
    /// recomputation** ([`Trainer::recompute_layers`]; activation checkpointing as transformers'
    /// `gradient_checkpointing` does it): a forward pass without autodiff keeps only each
    /// layer's input, then the backward pass runs layer by layer from the loss down, each
    /// layer's forward recomputed with autodiff just before its backward. Only one layer's
    /// activations are alive at a time. With `reseed` (adapter dropout), the backend is seeded
    /// with `flexi_burn::schedule::mix(reseed, layer)` before a layer runs, so a recomputed
    /// layer draws the dropout masks its first forward drew. The default: this objective cannot.
    fn recompute_layers(
        &self,
        _model: &Self::Model,
        _batch: &Self::Batch,
        _ranks: &SampleRanks,
        _scale: &dyn Fn(Tensor<B, 1>) -> Tensor<B, 1>,
        _reseed: Option<u64>,
    ) -> Result<(f64, GradientsParams)> {
        Err(TrainError::Config {
            key: "checkpoint_activations".into(),
            message: "per-layer recomputation is built for the Llama and Whisper objectives only; \
                      Burn's balanced checkpointing works for every model"
                .into(),
        })
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct StepLog {
    /// Optimizer step (1-based).
    pub step: usize,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping (`null` in the file, NaN here, for a step skipped
    /// because its f16 gradients overflowed).
    #[serde(deserialize_with = "null_as_nan")]
    pub grad_norm: f64,
    /// Mean rank of the step's samples.
    pub mean_rank: f64,
    /// Tokens per second of the step.
    pub tokens_per_s: f64,
    /// The loss scale the step's backward pass used (f16 training only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// The step's gradients overflowed the scaled f16 backward: no update was made (f16
    /// training only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// A number that JSON wrote as `null` (serde_json's non-finite) reads back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainSummary {
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
    /// Step the run started from (0 unless resumed).
    pub start_step: usize,
    /// Loss of each step this process ran.
    pub losses: Vec<f64>,
    /// Wall time of each step this process ran (forward, backward, clipping, optimizer), in
    /// seconds; checkpoint writes are not included.
    pub step_seconds: Vec<f64>,
    /// Ranks used by every training sample this process saw.
    pub ranks: Vec<usize>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Directory of the last checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

/// A training run.
pub struct Trainer<'a, B: AutodiffBackend> {
    /// The configuration.
    pub config: &'a TrainConfig,
    /// Output directory (checkpoints, metrics.jsonl).
    pub out: PathBuf,
    /// Device.
    pub device: B::Device,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop after this many optimizer steps of the whole run (tests of resume); `None` runs to
    /// the end.
    pub stop_at: Option<usize>,
    /// Write checkpoints (periodic and final). Only benchmarks turn this off.
    pub save_checkpoints: bool,
    /// Split every micro-batch into this many shards of samples, each computed (forward and
    /// backward) on its own thread with its own autodiff graph, gradients summed in shard
    /// order. The loss is the same weighted mean as for the whole batch (only f32 summation
    /// order changes) and the run stays deterministic. On the CPU backend it keeps every core
    /// busy: Burn's CPU kernels other than matmul run on the calling thread. `1` (or a batch
    /// with fewer samples, an objective that cannot split, or adapter dropout, whose draws
    /// come from the backend's process-global RNG) computes the batch on one thread.
    pub shards: usize,
    /// Data-parallel training: this process is one peer of several, computes its slice of
    /// every batch and sums the gradients with the others before each optimizer step
    /// ([`crate::parallel`]). `None`: one process trains on the whole batch.
    pub parallel: Option<DataParallel>,
    /// Per-layer recomputation ([`Objective::recompute_layers`]): every micro-batch (or
    /// shard) keeps only its layers' inputs from the forward pass and recomputes each layer
    /// during the backward pass. The same gradients, about one more forward pass of compute,
    /// a fraction of the activation memory.
    pub recompute_layers: bool,
}

/// What every micro-batch of one optimizer step shares.
struct StepShared<'a, B: AutodiffBackend, O: Objective<B>> {
    objective: &'a O,
    model: &'a O::Model,
    adalora: Option<&'a AdaLoraAllocator>,
    micro_batches: usize,
    pool: Option<&'a rayon::ThreadPool>,
    /// Factor on the loss before backward (f16 loss scaling; 1 otherwise).
    loss_scale: f64,
    /// Seed of the micro-batch's recomputed dropout masks ([`Trainer::recompute_layers`]).
    dropout_seed: u64,
}

/// The scalars of [`StepShared`] a piece of a micro-batch needs (on any shard thread).
#[derive(Clone, Copy)]
struct Knobs {
    micro_batches: usize,
    loss_scale: f64,
    dropout_seed: u64,
}

/// `loss / micro_batches`, times the f16 loss scale when there is one (with none, exactly the
/// division it always was).
fn backward_scale<B: AutodiffBackend>(
    loss: Tensor<B, 1>,
    micro_batches: usize,
    scale: f64,
) -> Tensor<B, 1> {
    let loss = loss.div_scalar(micro_batches as f64);
    if scale == 1.0 {
        loss
    } else {
        loss.mul_scalar(scale)
    }
}

/// The shard count [`Trainer::shards`] should use by default: every core on the CPU backend
/// (`on_cpu`), 1 on a GPU (one device; host threads would only contend for it).
pub fn default_shards(on_cpu: bool) -> usize {
    if on_cpu {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

pub use flexi_burn::schedule::mix;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s: f64 =
                burn::tensor::ElementConversion::elem(g.powf_scalar(2.0).sum().into_scalar());
            self.sum += s;
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

struct Widen<'a> {
    grads: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Widen<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let half = |g: &Tensor<B::InnerBackend, D>| g.dtype() != DType::F32;
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let g = if half(&g) { g.cast(FloatDType::F32) } else { g };
            self.grads.register(param.id, g);
        }
    }
}

/// The parameters' gradients of a backward pass, widened to f32 where a parameter is stored
/// in a half type (full fine-tuning under mixed precision): the sums over shards and
/// micro-batches, the loss-scale check, the clipping norm and AdamW all run in f32.
fn grads_f32<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: B::Gradients,
    model: &M,
) -> GradientsParams {
    let mut grads = GradientsParams::from_grads(grads, model);
    model.visit(&mut Widen { grads: &mut grads });
    grads
}

/// Global L2 norm of the gradients; scales them to `max_norm` when above it (`0` = no clip).
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut n = SquaredNorm { grads, sum: 0.0 };
    model.visit(&mut n);
    let norm = n.sum.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let mut s = Scale {
            grads,
            factor: max_norm / (norm + 1e-6),
        };
        model.visit(&mut s);
    }
    norm
}

impl<B: AutodiffBackend> Trainer<'_, B> {
    /// Trains `model` on `batches` (built once; their order is shuffled per epoch). With
    /// `resume`, continues from the newest checkpoint in `out` if there is one.
    pub fn fit<O: Objective<B>>(
        &self,
        objective: &O,
        model: O::Model,
        batches: &[O::Batch],
        resume: bool,
    ) -> Result<(O::Model, TrainSummary)> {
        let c = self.config;
        if batches.is_empty() {
            return Err(TrainError::EmptyData("no training batch".into()));
        }
        let steps_per_epoch = batches.len().div_ceil(c.grad_accum);
        let total_steps = if c.max_steps > 0 {
            c.max_steps
        } else {
            c.epochs * steps_per_epoch
        };
        let schedule = c.method.schedule();
        let lr = LrSchedule {
            peak: c.lr,
            warmup_steps: c.warmup_steps.min(total_steps),
            total_steps,
            decay: c.decay,
            min_lr: c.min_lr,
        };
        let mut optim = FusedAdamW::init::<B, O::Model>(0.9, 0.999, 1e-8, c.weight_decay as f32);
        let mut adalora = match &c.method {
            Method::Adalora(a) => Some(AdaLoraAllocator::new(a.clone(), total_steps)),
            _ => None,
        };
        let mut scaler = c
            .precision
            .needs_loss_scaling()
            .then(|| LossScale::new(c.loss_scale, c.loss_scale_growth));
        let checkpoints = Checkpoints::new(&self.out, 2);
        // Peer 0 of a data-parallel run writes; the others only read checkpoints (resume).
        let leader = self.parallel.as_ref().is_none_or(DataParallel::is_leader);
        if leader {
            std::fs::create_dir_all(&self.out).map_err(|e| TrainError::Io {
                path: self.out.clone(),
                source: e,
            })?;
        }
        // Resume (files only: every peer reads peer 0's checkpoint).
        let mut model = model;
        let mut start = 0;
        if resume && let Some(dir) = checkpoints.latest()? {
            let state = Checkpoints::read_state(&dir)?;
            if state.method != c.method.label() || state.seed != c.seed {
                return Err(TrainError::Checkpoint {
                    path: dir,
                    message: format!(
                        "made by method {} seed {}, this run is {} seed {}",
                        state.method,
                        state.seed,
                        c.method.label(),
                        c.seed
                    ),
                });
            }
            let weights = dir.join("weights.safetensors");
            model = load_tensors(model, &read_safetensors(&weights)?, &weights)?;
            let opt_path = dir.join("optimizer.mpk");
            let bytes = std::fs::read(&opt_path).map_err(|e| TrainError::Io {
                path: opt_path.clone(),
                source: e,
            })?;
            let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
                .load(bytes, &self.device)
                .map_err(|e| TrainError::Checkpoint {
                    path: opt_path.clone(),
                    message: format!("optimizer state: {e}"),
                })?;
            optim = optim.load_record(record);
            if let (Some(a), Some(v)) = (&mut adalora, state.adalora) {
                *a = serde_json::from_value(v).map_err(|e| TrainError::Checkpoint {
                    path: dir.clone(),
                    message: format!("adalora state: {e}"),
                })?;
            }
            if let (Some(s), Some(saved)) = (&mut scaler, state.loss_scale) {
                *s = saved;
            }
            start = state.step;
        }

        let end = self.stop_at.map_or(total_steps, |s| s.min(total_steps));
        if let Some(limit) = self
            .parallel
            .as_ref()
            .and_then(DataParallel::max_steps_per_launch)
            && end.saturating_sub(start) > limit
        {
            return Err(TrainError::Config {
                key: "nodes".into(),
                message: format!(
                    "this launch would take {} optimizer steps across machines, but \
                     burn-collective 0.21's global all-reduce completes only {limit} time(s) per \
                     run (a bug in its node sync, docs/upstream/collective-sync-bug.md): train on \
                     one machine with --devices N",
                    end.saturating_sub(start)
                ),
            });
        }
        if let Some(p) = &self.parallel {
            p.register::<B>(&self.device)?;
        }
        let pb = if self.progress && leader {
            let pb = infer::progress::bar(
                total_steps as u64,
                "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed}<{eta}]",
                c.method.label(),
            );
            pb.set_position(start as u64);
            pb
        } else {
            ProgressBar::hidden()
        };
        let metrics_path = self.out.join("metrics.jsonl");
        let mut metrics = if leader {
            // Steps after the checkpoint are done again: their old lines go.
            crate::checkpoint::trim_metrics(&metrics_path, start)?;
            Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&metrics_path)
                    .map_err(|e| TrainError::Io {
                        path: metrics_path.clone(),
                        source: e,
                    })?,
            )
        } else {
            None
        };

        let pool = match self.shards {
            0 | 1 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| TrainError::Model(format!("building the shard pool: {e}")))?,
            ),
        };
        let began = Instant::now();
        let mut summary = TrainSummary {
            total_steps,
            start_step: start,
            ..Default::default()
        };
        let mut order: Vec<usize> = Vec::new();
        let mut order_epoch = usize::MAX;
        for step in start..end {
            let t0 = Instant::now();
            let epoch = step / steps_per_epoch;
            if epoch != order_epoch {
                order = (0..batches.len()).collect();
                order.shuffle(&mut StdRng::seed_from_u64(mix(c.seed, epoch as u64)));
                order_epoch = epoch;
            }
            B::seed(&self.device, mix(c.seed ^ 0xd0, step as u64));
            // One draw per optimizer step: every micro-batch of the step starts from the
            // step's generator, so DyLoRA's rank b is the step's, whatever grad_accum is.
            let step_sampler = schedule
                .clone()
                .map(|s| RankSampler::new(s, mix(c.seed ^ 0x7a, step as u64)));
            let first = (step % steps_per_epoch) * c.grad_accum;
            let micro: Vec<usize> = order[first..(first + c.grad_accum).min(order.len())].to_vec();

            let mut accumulator = GradientsAccumulator::<O::Model>::new();
            let mut step_loss = 0.0;
            let mut tokens = 0;
            let mut step_ranks = Vec::new();
            let mut global_ranks = None;
            for (mi, &bi) in micro.iter().enumerate() {
                let batch = &batches[bi];
                let n = objective.batch_len(batch);
                let ranks = match step_sampler.clone() {
                    Some(mut s) => s.ranks(n, Phase::Train, objective.routed_ranks(batch))?,
                    None => SampleRanks::uniform(n, 0),
                };
                let shared = StepShared {
                    objective,
                    model: &model,
                    adalora: adalora.as_ref(),
                    micro_batches: micro.len(),
                    pool: pool.as_ref(),
                    loss_scale: scaler.as_ref().map_or(1.0, |s| s.scale),
                    dropout_seed: mix(mix(c.seed ^ 0x2e, step as u64), mi as u64),
                };
                let (value, grads) = self.micro_batch(&shared, batch, &ranks)?;
                // A data-parallel peer holds part of the loss: the sum is checked below.
                if self.parallel.is_none() && !value.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        step,
                        micro_batch: mi,
                        loss: value,
                        examples: objective.example_ids(batch),
                    });
                }
                accumulator.accumulate(&model, grads);
                step_loss += value / micro.len() as f64;
                tokens += objective.batch_tokens(batch);
                step_ranks.extend_from_slice(ranks.as_slice());
            }
            let mut grads = accumulator.grads();
            if let Some(p) = &self.parallel {
                // Every peer's gradients summed: the whole batch's, identical on every peer.
                let rank_sum = step_ranks.iter().sum::<usize>() as f64;
                let (summed, stats) = p.all_reduce_step(
                    &model,
                    grads,
                    &[step_loss, tokens as f64, rank_sum, step_ranks.len() as f64],
                    &self.device,
                    step,
                )?;
                grads = summed;
                step_loss = stats[0];
                tokens = stats[1].round() as usize;
                global_ranks = Some((stats[2], stats[3]));
                if !step_loss.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        step,
                        micro_batch: 0,
                        loss: step_loss,
                        examples: micro
                            .iter()
                            .flat_map(|&bi| objective.example_ids(&batches[bi]))
                            .collect(),
                    });
                }
            }
            // f16: gradients back to their true size in f32, or the step skipped when the
            // scaled backward overflowed (the scale halves; the adapter is left as it was).
            let used_scale = scaler.as_ref().map(|s| s.scale);
            let mut skipped = false;
            if let Some(s) = &mut scaler {
                let mut n = SquaredNorm {
                    grads: &grads,
                    sum: 0.0,
                };
                model.visit(&mut n);
                let finite = n.sum.is_finite();
                let factor = 1.0 / s.scale;
                skipped = !s.update(finite);
                if !skipped {
                    model.visit(&mut Scale {
                        grads: &mut grads,
                        factor,
                    });
                }
            }
            let rate = lr.at(step);
            let grad_norm = if skipped {
                f64::NAN
            } else {
                let grad_norm = clip_global_norm(&model, &mut grads, c.grad_clip);
                let snapshot = adalora.as_ref().map(|a| a.snapshot(&model, &grads));
                model = optim.step(rate, model, grads);
                if let (Some(a), Some(s)) = (&mut adalora, &snapshot) {
                    model = a.update_and_allocate(model, s, step + 1);
                }
                grad_norm
            };

            let secs = t0.elapsed().as_secs_f64();
            let log = StepLog {
                step: step + 1,
                epoch,
                loss: step_loss,
                lr: rate,
                grad_norm,
                mean_rank: match global_ranks {
                    Some((sum, count)) => sum / count.max(1.0),
                    None => {
                        step_ranks.iter().sum::<usize>() as f64 / step_ranks.len().max(1) as f64
                    }
                },
                tokens_per_s: tokens as f64 / secs.max(1e-9),
                loss_scale: used_scale,
                skipped,
            };
            if let Some(metrics) = &mut metrics {
                let line = serde_json::to_string(&log).unwrap_or_default();
                writeln!(metrics, "{line}").map_err(|e| TrainError::Io {
                    path: metrics_path.clone(),
                    source: e,
                })?;
            }
            pb.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} tok/s",
                step_loss, rate, log.tokens_per_s
            ));
            pb.inc(1);
            summary.losses.push(step_loss);
            summary.step_seconds.push(secs);
            summary.ranks.extend(step_ranks);

            let done = step + 1;
            let periodic = c.save_every > 0 && done % c.save_every == 0;
            if leader && self.save_checkpoints && (periodic || done == end) {
                let state = CheckpointState {
                    step: done,
                    seed: c.seed,
                    method: c.method.label(),
                    config: serde_json::to_value(c).unwrap_or_default(),
                    adalora: adalora.as_ref().and_then(|a| serde_json::to_value(a).ok()),
                    last_loss: step_loss,
                    loss_scale: scaler.clone(),
                };
                summary.checkpoint = Some(self.save(&checkpoints, &model, &optim, &state)?);
            }
        }
        pb.finish_and_clear();
        if let Some(p) = &self.parallel {
            p.finish::<B>()?;
        }
        summary.seconds = began.elapsed().as_secs_f64();
        Ok((model, summary))
    }

    /// Loss value (before the AdaLoRA penalty) and gradients of one micro-batch, scaled by
    /// `1 / micro_batches`; on [`Trainer::shards`] threads when the batch can be split.
    fn micro_batch<O: Objective<B>>(
        &self,
        step: &StepShared<'_, B, O>,
        batch: &O::Batch,
        ranks: &SampleRanks,
    ) -> Result<(f64, GradientsParams)> {
        let StepShared {
            objective,
            model,
            adalora,
            pool,
            micro_batches,
            loss_scale,
            dropout_seed,
        } = *step;
        let knobs = Knobs {
            micro_batches,
            loss_scale,
            dropout_seed,
        };
        let n = objective.batch_len(batch);
        let threads = if self.config.adapter.dropout > 0.0 {
            1
        } else {
            self.shards.max(1)
        };
        // Sharding needs the loss's target count (an objective that does not give it, 0, is
        // never split); a batch without any target takes the one-thread path and its error.
        let total = objective.loss_targets(batch);
        // A data-parallel peer computes its slice of the batch, weighted by the slice's share
        // of the whole batch's targets; the AdaLoRA penalty is added once, by peer 0.
        let (mine, penalty) = match &self.parallel {
            None => (None, true),
            Some(p) => {
                let range = p.slice(n);
                if range.is_empty() {
                    return Ok((0.0, GradientsParams::new()));
                }
                let no_split = || TrainError::Config {
                    key: "devices".into(),
                    message: "data-parallel training needs batches that split by sample, with \
                              a loss target count (this objective or batch has none)"
                        .into(),
                };
                if total == 0 {
                    return Err(no_split());
                }
                let slice = objective.shard(batch, range.clone()).ok_or_else(no_split)?;
                let slice_ranks = SampleRanks::new(ranks.as_slice()[range].to_vec())
                    .with_frozen_prefix(ranks.frozen_prefix());
                (Some((slice, slice_ranks)), p.is_leader())
            }
        };
        let pieces: Option<Vec<(O::Batch, SampleRanks)>> = match mine {
            Some((slice, slice_ranks)) => {
                let m = objective.batch_len(&slice);
                let k = threads.clamp(1, m.max(1));
                if k == 1 {
                    Some(if objective.loss_targets(&slice) > 0 {
                        vec![(slice, slice_ranks)]
                    } else {
                        Vec::new()
                    })
                } else {
                    split_batch(objective, &slice, &slice_ranks, k)
                }
            }
            None => {
                let k = threads.clamp(1, n.max(1));
                (k > 1 && total > 0)
                    .then(|| split_batch(objective, batch, ranks, k))
                    .flatten()
            }
        };
        let Some(pieces) = pieces else {
            // One thread: the whole batch.
            return self.piece_grads(
                objective,
                knobs,
                model,
                batch,
                ranks,
                None,
                adalora,
                &self.device,
            );
        };
        let total = total as f64;
        let piece_grads = |i: usize,
                           piece: &O::Batch,
                           piece_ranks: &SampleRanks,
                           model: &O::Model,
                           device: &B::Device|
         -> Result<(f64, GradientsParams)> {
            let weight = objective.loss_targets(piece) as f64 / total;
            let adalora = if i == 0 && penalty { adalora } else { None };
            self.piece_grads(
                objective,
                knobs,
                model,
                piece,
                piece_ranks,
                Some(weight),
                adalora,
                device,
            )
        };
        if pieces.len() <= 1 {
            // Nothing to spread over threads (a peer's slice on one thread, or nothing).
            return match pieces.first() {
                Some((piece, piece_ranks)) => {
                    piece_grads(0, piece, piece_ranks, model, &self.device)
                }
                None => Ok((0.0, GradientsParams::new())),
            };
        }
        let Some(pool) = pool else {
            unreachable!("fit builds the shard pool whenever shards > 1")
        };
        // Each shard is one task of the shard pool (as many workers as shards, built once per
        // run: no threads are created per step, and the backend's parallel kernels (matmul)
        // called inside a shard share the same workers instead of oversubscribing the cores).
        let mut slots: Vec<Option<Result<(f64, GradientsParams)>>> =
            (0..pieces.len()).map(|_| None).collect();
        let tasks: Vec<_> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, (shard, shard_ranks))| {
                let model = crate::params::fresh_leaves(model.clone());
                (i, shard, shard_ranks, model, self.device.clone())
            })
            .collect();
        let piece_grads = &piece_grads;
        pool.scope(|scope| {
            for ((i, shard, shard_ranks, model, device), slot) in tasks.into_iter().zip(&mut slots)
            {
                scope.spawn(move |_| {
                    *slot = Some(piece_grads(i, &shard, &shard_ranks, &model, &device));
                });
            }
        });
        let results = slots.into_iter().map(|r| r.expect("every shard task ran"));
        // Sum in shard order: the result does not depend on thread timing.
        let mut accumulator = GradientsAccumulator::<O::Model>::new();
        let mut value = 0.0;
        for r in results {
            let (v, grads) = r?;
            value += v;
            accumulator.accumulate(model, grads);
        }
        Ok((value, accumulator.grads()))
    }

    /// The loss value (times `weight`) and the f32 gradients of one piece of a micro-batch
    /// (the whole of it, a shard, a data-parallel peer's slice): the loss times `weight` (the
    /// piece's share of the batch's targets; `None` = the whole batch) plus, with `adalora`,
    /// its orthogonality penalty, scaled by [`backward_scale`], through one backward pass or
    /// by per-layer recomputation ([`Trainer::recompute_layers`]).
    #[allow(clippy::too_many_arguments)]
    fn piece_grads<O: Objective<B>>(
        &self,
        objective: &O,
        knobs: Knobs,
        model: &O::Model,
        piece: &O::Batch,
        ranks: &SampleRanks,
        weight: Option<f64>,
        adalora: Option<&AdaLoraAllocator>,
        device: &B::Device,
    ) -> Result<(f64, GradientsParams)> {
        let Knobs {
            micro_batches,
            loss_scale,
            dropout_seed,
        } = knobs;
        let weighted = |loss: Tensor<B, 1>| match weight {
            Some(w) => loss.mul_scalar(w),
            None => loss,
        };
        let w = weight.unwrap_or(1.0);
        if self.recompute_layers {
            let scale =
                |loss: Tensor<B, 1>| backward_scale(weighted(loss), micro_batches, loss_scale);
            // Adapter dropout draws from the backend's RNG, seeded per step by `fit`: one more
            // seed from the step's for the layers' recomputed masks.
            let reseed = (self.config.adapter.dropout > 0.0).then_some(dropout_seed);
            let (value, mut grads) =
                objective.recompute_layers(model, piece, ranks, &scale, reseed)?;
            if let Some(a) = adalora {
                let penalty =
                    backward_scale(a.orth_penalty(model, device), micro_batches, loss_scale);
                let mut sum = GradientsAccumulator::<O::Model>::new();
                sum.accumulate(model, grads);
                sum.accumulate(
                    model,
                    GradientsParams::from_grads(penalty.backward(), model),
                );
                grads = sum.grads();
            }
            model.visit(&mut Widen { grads: &mut grads });
            return Ok((value * w, grads));
        }
        let mut loss = objective.loss(model, piece, ranks)?;
        let value: f64 = burn::tensor::ElementConversion::elem(loss.clone().into_scalar());
        loss = weighted(loss);
        if let Some(a) = adalora {
            loss = loss.add(a.orth_penalty(model, device));
        }
        let grads = backward_scale(loss, micro_batches, loss_scale).backward();
        Ok((value * w, grads_f32(grads, model)))
    }

    fn save<M: AutodiffModule<B>>(
        &self,
        checkpoints: &Checkpoints,
        model: &M,
        optim: &OptimizerAdaptor<FusedAdamW, M, B>,
        state: &CheckpointState,
    ) -> Result<PathBuf> {
        // The trained weights; a weight stored in a half type is written as its f32 master.
        let mut tensors = trainable_tensors(model);
        let records: HashMap<_, _> = optim.to_record().into_iter().collect();
        model.visit(&mut Masters {
            path: Vec::new(),
            records: &records,
            out: &mut tensors,
        });
        let weights = to_safetensors(&tensors)?;
        let optimizer = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .record(optim.to_record(), ())
            .map_err(|e| TrainError::Checkpoint {
                path: checkpoints.root().to_path_buf(),
                message: format!("serialising optimizer state: {e}"),
            })?;
        checkpoints.save(
            state,
            &[
                ("weights.safetensors", weights),
                ("optimizer.mpk", optimizer),
            ],
        )
    }
}

/// Replaces, in a checkpoint's tensors, each half-stored trainable weight by its f32 master
/// copy from the optimizer's state ([`crate::optim::FusedAdamWState::master`]).
struct Masters<'a, B: AutodiffBackend> {
    path: Vec<String>,
    records: &'a HashMap<ParamId, AdaptorRecord<FusedAdamW, B>>,
    out: &'a mut BTreeMap<String, HostTensor>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Masters<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() || param.val().dtype() == DType::F32 {
            return;
        }
        let master = self
            .records
            .get(&param.id)
            .and_then(|r| r.clone().into_state::<D>().master);
        if let Some(m) = master {
            self.out.insert(self.path.join("."), HostTensor::of(m));
        }
    }
}

/// `batch` (with its `ranks`) cut into `k` contiguous pieces of samples, leaving out pieces
/// without loss targets (they add nothing to the weighted loss, and their own mean would be
/// 0/0); `None` when the objective cannot split the batch.
fn split_batch<B: AutodiffBackend, O: Objective<B>>(
    objective: &O,
    batch: &O::Batch,
    ranks: &SampleRanks,
    k: usize,
) -> Option<Vec<(O::Batch, SampleRanks)>> {
    let n = objective.batch_len(batch);
    let mut kept = Vec::with_capacity(k);
    for i in 0..k {
        let range = i * n / k..(i + 1) * n / k;
        let shard = objective.shard(batch, range.clone())?;
        if objective.loss_targets(&shard) == 0 {
            continue;
        }
        let shard_ranks = SampleRanks::new(ranks.as_slice()[range].to_vec())
            .with_frozen_prefix(ranks.frozen_prefix());
        kept.push((shard, shard_ranks));
    }
    Some(kept)
}

pub use flexi_burn::schedule::inference_ranks;
