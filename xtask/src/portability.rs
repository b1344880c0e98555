//! `cargo xtask portability`: the same code and checkpoints on every backend compiled in.
//!
//! The CPU backend (flex, f32) is the reference. Every other backend and precision runs the
//! same checks and is compared with it:
//! - `flexi_linear`: one FlexiLinear, ranks {0,1,3,8} in one batch: output, dA, dB;
//! - `llama`: the tiny Llama fixture (GQA, llama3 RoPE, tied head), a left-padded batch with
//!   ranks [4,1,0], LoRA on q,k,v,o: logits, loss, and every adapter gradient of the step;
//! - `whisper`: the tiny Whisper fixture, two audio files with ranks [4,1], LoRA on q,k,v,out
//!   in every attention: logits, loss, adapter gradients;
//! - `round_trip` (f32): LoRA trained with `cargo xtask train` on one backend, saved, then
//!   loaded by `cargo xtask eval` on the other: predictions and metrics must be identical, and
//!   the adapters trained on the two backends must agree.
//!
//! Half precision (f16 on wgpu where the adapter has SHADER_F16, f16/bf16 on cuda) runs in a
//! child process per (backend, precision): Burn keeps one float dtype per device for the whole
//! process, so an f16 run after an f32 run on the same device would silently compute in f32.
//! Each half row also checks that the outputs really were computed in that dtype.
//!
//! Tolerances. f32: 1e-4 absolute on values of order 1-10: both sides compute in f32 and differ
//! only in summation order (GPU tiling vs CPU gemm blocking, reductions in softmax/RMSNorm), so
//! they agree to rounding, 1e-6..1e-5 measured. Half: `HALF_K * eps * max(1, max|reference|)`
//! with eps the unit roundoff (f16 2^-11, bf16 2^-8): weights, inputs and every intermediate
//! are rounded to the half type (relative error eps each) through ~20 dependent operations of
//! two layers, whose errors add up; `HALF_K = 64` leaves room for that sum and the
//! accumulation inside matmuls, and still catches a wrong kernel (an O(1) relative error).
//!
//! f32 on cuda is compared as `tf32`: Burn 0.21's cuda matmul (cubek-matmul 0.2,
//! `adjust_dtypes`) runs f32 matmuls on the tensor cores in TF32 wherever the device supports
//! it, with no switch to turn that off: inputs rounded to a 10-bit mantissa (unit roundoff
//! 2^-11, as f16), products accumulated in f32, everything else in f32. Measured on an H200:
//! logits 1.35e-2 apart from flex, gradients 6e-3. Those rows get the half-precision form of
//! the tolerance with the f16 roundoff (they round fewer values than an f16 run, so the bound
//! is conservative), and gradients summed over long sequences are gated (accumulation is f32).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;
use flexi_burn::backend::{BackendKind, DeviceInfo, probe};
use flexi_burn::{FlexiLinearConfig, SampleRanks, ScalePolicy};
use models::llama::{PaddedBatch, causal_lm_loss};
use models::whisper::WhisperTokenizer;
use serde::{Deserialize, Serialize};
use train::asr::{AsrBatch, load_whisper_for_training, transcribe_prompt};
use train::config::AdapterSettings;
use train::lm::load_for_training;
use train::params::{HostTensor, load_tensors, read_safetensors, trainable_tensors};
use train::trainer::mix;
use train::{Method, TrainConfig};

use crate::pipeline::{self, Common, EvalArgs, EvalSummary, TrainArgs};

/// Tolerance of the f32 comparisons, relative to `max(1, max |reference|)` of each output.
pub const F32_TOL: f64 = 1e-4;
/// Multiple of the unit roundoff allowed in half precision (see the module docs).
pub const HALF_K: f64 = 64.0;
/// Adapters trained for the round trip's steps on two backends may drift apart by this much:
/// the f32 rounding differences of every step (1e-6) pass through AdamW, whose update
/// `m / (sqrt(v) + eps)` is scale-free, so a gradient entry near zero can move its weight by
/// up to lr in either direction; with lr 1e-2 over the steps this stays far below 1e-2.
pub const DRIFT_TOL: f64 = 1e-2;
/// The round trip's drift where one side multiplies in TF32 (f32 on cuda): its gradients differ
/// from flex's by ~1e-3 relative (not 1e-6), so many more near-zero gradient entries change
/// sign, each moving its weight by up to lr per step. Measured on an H200: 6.4e-2 after 60
/// steps at lr 1e-2, with predictions identical both ways; the bound is 0.25 (lr x 60 steps
/// = 0.6 is the worst case). The round trip's teeth there are the identical predictions.
pub const DRIFT_TOL_TF32: f64 = 0.25;

/// Gradients that sum over long sequences get this multiple of the f32 tolerance. Whisper's
/// adapter gradients reduce over the 1500 encoder frames of a 30 s window (the Llama check:
/// at most 8 tokens), and rounding differences of a sum grow with its length; measured on
/// lavapipe, the largest differences (2e-4) sit exactly in the projections whose gradients sum
/// over every frame (encoder v/out, cross-attention v/out), while the logits agree to 4e-6.
/// In half precision those gradients are reported but not gated: Burn accumulates them in the
/// half type itself, whose error over 1500 terms is O(n eps) = O(1) relative (mixed-precision
/// training, f32 master weights and accumulation, is not implemented).
pub const LONG_SUM_FACTOR: f64 = 10.0;

/// `cargo xtask portability`.
#[derive(Args, Clone, Debug)]
pub struct PortabilityArgs {
    /// Backends to compare with the CPU reference, comma-separated (default: every backend
    /// compiled in). A backend named here that finds no device is an error; one picked by
    /// default is reported as skipped.
    #[arg(long, value_delimiter = ',')]
    pub backend: Vec<String>,
    /// Skip the half-precision runs.
    #[arg(long)]
    pub no_half: bool,
    /// Skip the train -> save -> load -> evaluate round trip.
    #[arg(long)]
    pub no_round_trip: bool,
    /// Training steps of the round trip.
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// The tiny fixtures (default: `models/tests/fixtures` of this checkout).
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Scratch directory for the round trip's runs (default: a fresh temporary directory,
    /// removed afterwards).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Also write the table as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print every compared output's difference, not only the worst.
    #[arg(long)]
    pub verbose: bool,
    /// Internal: run the tensor checks for one `backend:precision` and write their outputs
    /// to `--child-out` (half precision runs in its own process).
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// Internal: where the child writes its outputs.
    #[arg(long, hide = true)]
    pub child_out: Option<PathBuf>,
}

/// Float type of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// f32 storage and arithmetic, matmuls on TF32 tensor cores (f32 on cuda; module docs).
    Tf32,
    /// Mixed precision on an f32 device: frozen weights stored in f16 and multiplied in f16,
    /// everything else f32 (`train --precision f16`).
    MixedF16,
    /// Mixed precision with frozen weights in bf16 (`train --precision bf16`).
    MixedBf16,
}

impl Precision {
    /// Unit roundoff.
    pub fn eps(self) -> f64 {
        match self {
            Precision::F32 => f64::from(f32::EPSILON) / 2.0,
            Precision::F16 => 2f64.powi(-11),
            Precision::Bf16 => 2f64.powi(-8),
            Precision::Tf32 => 2f64.powi(-11),
            Precision::MixedF16 => 2f64.powi(-11),
            Precision::MixedBf16 => 2f64.powi(-8),
        }
    }

    /// The storage type of frozen weights this row runs with (mixed precision), or f32.
    pub fn frozen(self) -> flexi_burn::Precision {
        match self {
            Precision::MixedF16 => flexi_burn::Precision::F16,
            Precision::MixedBf16 => flexi_burn::Precision::Bf16,
            _ => flexi_burn::Precision::F32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
            Precision::Tf32 => "f32 (tf32 matmul)",
            Precision::MixedF16 => "f16 mixed",
            Precision::MixedBf16 => "bf16 mixed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "f32" => Precision::F32,
            "f16" => Precision::F16,
            "bf16" => Precision::Bf16,
            "f16-mixed" => Precision::MixedF16,
            "bf16-mixed" => Precision::MixedBf16,
            other => bail!(
                "unknown precision {other:?}: expected f32, f16, bf16, f16-mixed or bf16-mixed"
            ),
        })
    }

    /// Whether values are stored (and gradients accumulated) in a half type.
    pub fn half_storage(self) -> bool {
        matches!(self, Precision::F16 | Precision::Bf16)
    }

    /// The precision an f32 run on `kind` computes in: TF32 matmuls on cuda.
    pub fn f32_on(kind: BackendKind) -> Self {
        match kind {
            BackendKind::Cuda => Precision::Tf32,
            _ => Precision::F32,
        }
    }

    /// Tolerance for an output whose reference values reach `scale` in magnitude.
    pub fn tolerance(self, scale: f64) -> f64 {
        match self {
            Precision::F32 => F32_TOL * scale.max(1.0),
            _ => HALF_K * self.eps() * scale.max(1.0),
        }
    }
}

/// One check's outputs on one backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckOutput {
    /// `flexi_linear`, `llama` or `whisper`.
    pub check: String,
    /// Named outputs (values as f32; stored as bit patterns so NaN and infinity survive JSON).
    #[serde(with = "f32_bits")]
    pub outputs: Vec<(String, Vec<f32>)>,
    /// The gradients sum over long sequences (Whisper: 1500 encoder frames); see
    /// [`LONG_SUM_FACTOR`].
    #[serde(default)]
    pub long_sums: bool,
    /// The dtype the backend computed the outputs in.
    pub dtype: String,
    /// Wall time of the check (first calls include kernel compilation).
    pub seconds: f64,
}

/// f64 with NaN written as JSON `null` (JSON has no NaN).
mod nan_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    fn wrap(v: f64) -> Option<f64> {
        (!v.is_nan()).then_some(v)
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        wrap(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub mod triples {
        use super::*;

        type T = Vec<(String, f64, f64)>;

        pub fn serialize<S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
            v.iter()
                .map(|(n, a, b)| (n, wrap(*a), wrap(*b)))
                .collect::<Vec<_>>()
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
            let raw: Vec<(String, Option<f64>, Option<f64>)> = Deserialize::deserialize(d)?;
            Ok(raw
                .into_iter()
                .map(|(n, a, b)| (n, a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN)))
                .collect())
        }
    }
}

mod f32_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Named = Vec<(String, Vec<f32>)>;

    pub fn serialize<S: Serializer>(v: &Named, s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|(n, x)| (n, x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>()))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Named, D::Error> {
        let raw: Vec<(String, Vec<u32>)> = Deserialize::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(n, x)| (n, x.into_iter().map(f32::from_bits).collect()))
            .collect())
    }
}

/// One line of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Backend.
    pub backend: String,
    /// Precision.
    pub precision: String,
    /// Check.
    pub check: String,
    /// The output with the largest difference (or what was compared).
    pub worst: String,
    /// Largest absolute difference from the reference (NaN when not run).
    #[serde(with = "nan_null")]
    pub max_abs_diff: f64,
    /// Allowed difference.
    #[serde(with = "nan_null")]
    pub tolerance: f64,
    /// Wall time on this backend.
    pub seconds: f64,
    /// `pass`, `FAIL`, `reference` or `skipped`.
    pub status: String,
    /// Details (skip reasons, metrics).
    pub note: String,
    /// Every output compared: name, max abs diff, tolerance (NaN: not gated).
    #[serde(default, with = "nan_null::triples")]
    pub outputs: Vec<(String, f64, f64)>,
}

// ------------------------------------------------------------------ the checks

/// Deterministic values in [-1, 1) from a seed (the same on every platform).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| ((mix(seed, i as u64) >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32)
        .collect()
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    HostTensor::of(t).values
}

/// Every trainable adapter factor set to deterministic values of scale `s` (B is zero after
/// PEFT's init, which would leave dA zero and the adapters inert).
fn deterministic_adapters<B: AutodiffBackend, M: Module<B>>(model: M, s: f32) -> Result<M> {
    let mut tensors = trainable_tensors(&model);
    for (i, t) in tensors.values_mut().enumerate() {
        t.values = values(t.values.len(), 100 + i as u64)
            .into_iter()
            .map(|v| v * s)
            .collect();
    }
    Ok(load_tensors(model, &tensors, Path::new("portability"))?)
}

struct Grads<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let g = param.grad(self.grads).map(host).unwrap_or_default();
        let factor = match self.path.last().map(String::as_str) {
            Some("lora_b") => "B",
            _ => "A",
        };
        let name = match self.path.first().map(String::as_str) {
            Some(stack @ ("encoder" | "decoder")) => format!("grad {factor} {stack}"),
            _ => format!("grad {factor}"),
        };
        match self.out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.extend(g),
            None => self.out.push((name, g)),
        }
    }
}

/// Gradients of every trainable parameter, grouped as A / B factors (per Whisper stack) and
/// concatenated in module order.
fn adapter_grads<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &B::Gradients,
) -> Vec<(String, Vec<f32>)> {
    let mut v = Grads::<B> {
        grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

fn timed(
    check: &str,
    f: impl FnOnce() -> Result<(Vec<(String, Vec<f32>)>, String)>,
) -> Result<CheckOutput> {
    let t = Instant::now();
    let (outputs, dtype) = f().with_context(|| format!("check {check}"))?;
    Ok(CheckOutput {
        check: check.into(),
        outputs,
        long_sums: check == "whisper",
        dtype,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// One FlexiLinear (64 -> 48, r_max 8, bias), ranks {0,1,3,8}: output, dA, dB.
pub fn flexi_linear<B: AutodiffBackend>(
    device: &B::Device,
    frozen: flexi_burn::Precision,
) -> Result<CheckOutput> {
    timed("flexi_linear", || {
        let (d_in, d_out, r) = (64, 48, 8);
        let mut l = FlexiLinearConfig::new(d_in, d_out, r)
            .with_scale(ScalePolicy::AlphaOverRank)
            .with_bias(true)
            .init::<B>(device);
        let t = |shape: Vec<usize>, seed| {
            let n = shape.iter().product();
            TensorData::new(values(n, seed), shape)
        };
        l.lora_a = Param::from_tensor(Tensor::from_data(t(vec![r, d_in], 1), device));
        l.lora_b = Param::from_tensor(Tensor::from_data(t(vec![d_out, r], 2), device));
        l.base.weight = Param::from_tensor(Tensor::from_data(t(vec![d_in, d_out], 3), device))
            .set_require_grad(false);
        l.base.bias = Some(
            Param::from_tensor(Tensor::from_data(t(vec![d_out], 4), device))
                .set_require_grad(false),
        );
        let x = Tensor::<B, 3>::from_data(t(vec![4, 5, d_in], 9), device);
        if let Some(half) = frozen.half() {
            l.base = flexi_burn::store_frozen_linear(l.base, half);
        }
        let y = l.try_forward(x, &SampleRanks::new(vec![0, 1, 3, 8]))?;
        let dtype = with_frozen(format!("{:?}", y.dtype()), l.base.weight.val().dtype());
        let grads = y.clone().powf_scalar(2.0).mean().backward();
        let mut outputs = vec![("output".to_string(), host(y))];
        outputs.extend(adapter_grads(&l, &grads));
        Ok((outputs, dtype))
    })
}

fn lora_config(rank: usize, targets: &[&str]) -> TrainConfig {
    TrainConfig {
        method: Method::Lora { rank },
        adapter: AdapterSettings {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        seed: 11,
        ..Default::default()
    }
}

/// The tiny Llama, a left-padded batch with ranks [4,1,0]: logits, loss, adapter gradients.
pub fn tiny_llama<B: AutodiffBackend>(
    fixtures: &Path,
    device: &B::Device,
    frozen: flexi_burn::Precision,
) -> Result<CheckOutput> {
    timed("llama", || {
        let cfg = TrainConfig {
            precision: frozen,
            ..lora_config(4, &["q_proj", "k_proj", "v_proj", "o_proj"])
        };
        let model = load_for_training::<B>(&fixtures.join("tiny_tied"), &cfg, device)?;
        let model = deterministic_adapters(model, 0.05)?;
        let batch = PaddedBatch::left_pad(
            &[
                vec![0, 17, 42, 99, 5, 63, 211, 8],
                vec![0, 8, 250, 31],
                vec![0, 300, 7, 7, 19, 120],
            ],
            0,
        );
        let logits = model.forward(&batch, &SampleRanks::new(vec![4, 1, 0]))?;
        let labels = batch.labels::<B>(-100, device);
        let (outputs, dtype) = training_step(&model, logits, labels, -100);
        let frozen = model.embed_tokens.weight.val().dtype();
        Ok((outputs, with_frozen(dtype, frozen)))
    })
}

/// Logits, the cross-entropy loss and every adapter gradient of one training step, and the
/// dtype the logits were computed in.
fn training_step<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    ignore_index: i64,
) -> (Vec<(String, Vec<f32>)>, String) {
    let dtype = format!("{:?}", logits.dtype());
    let loss = causal_lm_loss(logits.clone(), labels, ignore_index);
    let grads = loss.backward();
    let mut outputs = vec![
        ("logits".to_string(), host(logits)),
        ("loss".to_string(), host(loss)),
    ];
    outputs.extend(adapter_grads(model, &grads));
    (outputs, dtype)
}

/// `dtype` (the output's type, as [`training_step`] names it) with the type of a frozen
/// weight added where it differs: under mixed precision, the proof that the weights really
/// were stored in the half type.
fn with_frozen(dtype: String, frozen: burn::tensor::DType) -> String {
    if format!("{frozen:?}") == dtype {
        dtype
    } else {
        format!("{dtype} (frozen {frozen:?})")
    }
}

/// The tiny Whisper, two audio files with ranks [4,1]: logits, loss, adapter gradients.
pub fn tiny_whisper<B: AutodiffBackend>(
    fixtures: &Path,
    device: &B::Device,
    frozen: flexi_burn::Precision,
) -> Result<CheckOutput> {
    timed("whisper", || {
        let dir = fixtures.join("whisper_tiny");
        let cfg = TrainConfig {
            precision: frozen,
            ..lora_config(4, &["q_proj", "k_proj", "v_proj", "out_proj"])
        };
        let model = load_whisper_for_training::<B>(&dir, &cfg, device)?;
        let model = deterministic_adapters(model, 0.05)?;
        let tok = WhisperTokenizer::from_dir(&dir)?;
        let prompt = transcribe_prompt(&model.config, &tok)?;
        let (wav, flac) = (dir.join("audio_1s.wav"), dir.join("audio_1s.flac"));
        let items = vec![
            ("a".to_string(), wav.as_path(), "hello there".to_string()),
            (
                "b".to_string(),
                flac.as_path(),
                "good morning to you".to_string(),
            ),
        ];
        let batch = AsrBatch::from_files(&items, &tok, &prompt, model.config.num_mel_bins)?;
        let mel = model.mel_batch(&batch.mels, device)?;
        let ids = model.ids_tensor(&batch.ids, device)?;
        let logits = model.forward(mel, ids, &SampleRanks::new(vec![4, 1]))?;
        let [b, n, _] = logits.dims();
        let labels = Tensor::from_data(TensorData::new(batch.labels.clone(), [b, n]), device);
        let (outputs, dtype) = training_step(&model, logits, labels, train::lm::IGNORE_INDEX);
        let frozen = model.decoder.embed_tokens.weight.val().dtype();
        Ok((outputs, with_frozen(dtype, frozen)))
    })
}

/// The three tensor checks on backend `B`.
/// `frozen` is the storage type of the frozen weights (mixed precision; f32 for the plain
/// rows).
pub fn tensor_checks<B: AutodiffBackend>(
    fixtures: &Path,
    device: &B::Device,
    frozen: flexi_burn::Precision,
) -> Result<Vec<CheckOutput>> {
    Ok(vec![
        flexi_linear::<B>(device, frozen)?,
        tiny_llama::<B>(fixtures, device, frozen)?,
        tiny_whisper::<B>(fixtures, device, frozen)?,
    ])
}

/// Runs the tensor checks on `kind` in `precision`, if this binary has that combination.
pub fn run_tensor_checks(
    kind: BackendKind,
    precision: Precision,
    fixtures: &Path,
) -> Result<Vec<CheckOutput>> {
    #[allow(unused_imports)]
    use burn::{
        backend::Autodiff,
        tensor::{bf16, f16},
    };
    // Mixed precision runs on the f32 device type, with the frozen weights cast.
    let frozen = precision.frozen();
    let device_type = match precision {
        Precision::MixedF16 | Precision::MixedBf16 => Precision::F32,
        p => p,
    };
    match (kind, device_type) {
        #[cfg(feature = "flex")]
        (BackendKind::Flex, Precision::F32) => tensor_checks::<flexi_burn::backend::FlexAutodiff>(
            fixtures,
            &Default::default(),
            frozen,
        ),
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, Precision::F32) => tensor_checks::<flexi_burn::backend::WgpuAutodiff>(
            fixtures,
            &Default::default(),
            frozen,
        ),
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, Precision::F16) => tensor_checks::<
            Autodiff<burn::backend::Wgpu<f16, i32>>,
        >(fixtures, &Default::default(), frozen),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::F32) => tensor_checks::<flexi_burn::backend::CudaAutodiff>(
            fixtures,
            &Default::default(),
            frozen,
        ),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::F16) => tensor_checks::<
            Autodiff<burn::backend::Cuda<f16, i32>>,
        >(fixtures, &Default::default(), frozen),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::Bf16) => tensor_checks::<
            Autodiff<burn::backend::Cuda<bf16, i32>>,
        >(fixtures, &Default::default(), frozen),
        #[allow(unreachable_patterns)]
        (kind, precision) => bail!(
            "{kind} in {} is not available in this build (backend features: {:?})",
            precision.name(),
            BackendKind::compiled()
        ),
    }
}

// ------------------------------------------------------------------ comparison

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, |m, d| if d.is_nan() { f64::NAN } else { m.max(d) })
}

fn expected_dtype(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "F32",
        Precision::F16 => "F16",
        Precision::Bf16 => "BF16",
        Precision::Tf32 => "F32",
        Precision::MixedF16 => "F32 (frozen F16)",
        Precision::MixedBf16 => "F32 (frozen BF16)",
    }
}

/// Rows comparing `got` with the reference outputs.
pub fn compare(
    backend: &str,
    precision: Precision,
    reference: &[CheckOutput],
    got: &[CheckOutput],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in reference {
        let Some(g) = got.iter().find(|g| g.check == r.check) else {
            rows.push(Row {
                backend: backend.into(),
                precision: precision.name().into(),
                check: r.check.clone(),
                worst: String::new(),
                max_abs_diff: f64::NAN,
                tolerance: f64::NAN,
                seconds: 0.0,
                status: "FAIL".into(),
                note: "check did not run".into(),
                outputs: Vec::new(),
            });
            continue;
        };
        // The output whose difference is the largest fraction of its tolerance.
        let mut worst = (String::new(), 0.0f64, precision.tolerance(1.0), f64::MIN);
        let mut missing = Vec::new();
        let mut per_output = Vec::new();
        for (name, want) in &r.outputs {
            let Some((_, have)) = g.outputs.iter().find(|(n, _)| n == name) else {
                missing.push(name.clone());
                continue;
            };
            let scale = want.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
            let long = r.long_sums && name.starts_with("grad");
            let d = max_abs_diff(want, have);
            if long && precision.half_storage() {
                // Reported, not gated (see LONG_SUM_FACTOR).
                per_output.push((format!("{name} (not gated)"), d, f64::NAN));
                continue;
            }
            let tol = precision.tolerance(scale) * if long { LONG_SUM_FACTOR } else { 1.0 };
            per_output.push((name.clone(), d, tol));
            let ratio = if d.is_nan() { f64::INFINITY } else { d / tol };
            if ratio > worst.3 {
                worst = (name.clone(), d, tol, ratio);
            }
        }
        let dtype_ok = g.dtype == expected_dtype(precision);
        let nan: Vec<&str> = g
            .outputs
            .iter()
            .filter(|(n, _)| !(r.long_sums && n.starts_with("grad") && precision.half_storage()))
            .filter(|(_, v)| v.iter().any(|x| !x.is_finite()))
            .map(|(n, _)| n.as_str())
            .collect();
        let pass = missing.is_empty() && dtype_ok && nan.is_empty() && worst.3 <= 1.0;
        let mut note = format!("computed in {}", g.dtype);
        if !dtype_ok {
            note.push_str(&format!(" (expected {})", expected_dtype(precision)));
        }
        if !missing.is_empty() {
            note.push_str(&format!("; missing outputs {missing:?}"));
        }
        if !nan.is_empty() {
            note.push_str(&format!("; NaN/inf in {nan:?}"));
        }
        rows.push(Row {
            backend: backend.into(),
            precision: precision.name().into(),
            check: r.check.clone(),
            worst: worst.0,
            max_abs_diff: worst.1,
            tolerance: worst.2,
            seconds: g.seconds,
            status: if pass { "pass" } else { "FAIL" }.into(),
            note,
            outputs: per_output,
        });
    }
    rows
}

fn reference_rows(reference: &[CheckOutput]) -> Vec<Row> {
    reference
        .iter()
        .map(|r| Row {
            backend: "flex".into(),
            precision: "f32".into(),
            check: r.check.clone(),
            worst: String::new(),
            max_abs_diff: 0.0,
            tolerance: 0.0,
            seconds: r.seconds,
            status: "reference".into(),
            note: format!("computed in {}", r.dtype),
            outputs: Vec::new(),
        })
        .collect()
}

fn skipped(backend: &str, precision: &str, check: &str, why: &str) -> Row {
    Row {
        backend: backend.into(),
        precision: precision.into(),
        check: check.into(),
        worst: String::new(),
        max_abs_diff: f64::NAN,
        tolerance: f64::NAN,
        seconds: 0.0,
        status: "skipped".into(),
        note: why.into(),
        outputs: Vec::new(),
    }
}

// ------------------------------------------------------------------ half precision child

fn run_child(args: &PortabilityArgs, spec: &str) -> Result<()> {
    let (kind, precision) = spec
        .split_once(':')
        .with_context(|| format!("--child {spec:?}: expected BACKEND:PRECISION"))?;
    let kind: BackendKind = kind.parse()?;
    let precision = Precision::parse(precision)?;
    let out = args
        .child_out
        .clone()
        .context("--child needs --child-out")?;
    probe(kind)?;
    let outputs = run_tensor_checks(kind, precision, &fixtures(args)?)?;
    std::fs::write(&out, serde_json::to_vec(&outputs)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Runs the tensor checks for `kind`/`precision` in a child process of this binary.
fn half_in_child(
    fixtures: &Path,
    kind: BackendKind,
    precision: Precision,
    work: &Path,
) -> std::result::Result<Vec<CheckOutput>, String> {
    let out = work.join(format!("{kind}-{}.json", precision.name()));
    let exe = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["portability", "--child"])
        .arg(format!("{kind}:{}", precision.name()))
        .arg("--child-out")
        .arg(&out)
        .arg("--fixtures")
        .arg(fixtures);
    let o = cmd
        .output()
        .map_err(|e| format!("starting the child: {e}"))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        return Err(format!(
            "child process failed ({}): {}",
            o.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let bytes = std::fs::read(&out).map_err(|e| format!("reading {}: {e}", out.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", out.display()))
}

// ------------------------------------------------------------------ round trip

/// A small GSM8K-format file the tiny model can learn in a few dozen steps.
fn write_round_trip_data(path: &Path) -> Result<()> {
    let mut lines = String::new();
    for i in 0..8u32 {
        let (a, b) = (i % 4 + 1, (i * 3) % 5 + 2);
        let line = serde_json::json!({
            "question": format!("what is {a} plus {b}?"),
            "answer": format!("#### {}", a + b),
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))
}

fn train_run(
    kind: BackendKind,
    fixtures: &Path,
    data: &Path,
    out: &Path,
    steps: usize,
) -> Result<f64> {
    let common = Common {
        model: fixtures.join("tiny_tied"),
        backend: kind.to_string(),
        no_chat: true,
        limit: None,
        max_len: 48,
        max_new_tokens: Some(10),
        eval_batch: 8,
    };
    let cfg = TrainConfig {
        lr: 1e-2,
        warmup_steps: 2,
        max_steps: steps,
        epochs: steps,
        batch_size: 4,
        save_every: 0,
        max_len: 48,
        seed: 5,
        ..lora_config(4, &["q_proj", "k_proj", "v_proj", "o_proj"])
    };
    let t = Instant::now();
    let args = TrainArgs::new(common, data.to_path_buf(), None, out.to_path_buf()).quiet();
    pipeline::train_with(args, cfg)?;
    Ok(t.elapsed().as_secs_f64())
}

fn eval_run(run: &Path, data: &Path, kind: BackendKind, out: &Path) -> Result<(EvalSummary, f64)> {
    let t = Instant::now();
    let args = EvalArgs::run(run, data, &kind.to_string())
        .with_out(out)
        .with_max_new_tokens(10)
        .quiet();
    let s = pipeline::eval(args)?;
    Ok((s, t.elapsed().as_secs_f64()))
}

fn adapter_weights(run: &Path) -> Result<Vec<f32>> {
    let ckpt = train::checkpoint::Checkpoints::new(run, 2)
        .latest()?
        .with_context(|| format!("{}: no checkpoint", run.display()))?;
    let t = read_safetensors(&ckpt.join("weights.safetensors"))?;
    Ok(t.into_values().flat_map(|t| t.values).collect())
}

/// Identical predictions and metrics of two evaluations of the same adapter.
fn same_eval(a: &EvalSummary, b: &EvalSummary) -> (bool, String) {
    let pa: Vec<_> = a.reports.iter().flat_map(|r| &r.predictions).collect();
    let pb: Vec<_> = b.reports.iter().flat_map(|r| &r.predictions).collect();
    let same = pa
        .iter()
        .zip(&pb)
        .filter(|(x, y)| x.prediction == y.prediction && x.score == y.score)
        .count();
    let ok = pa.len() == pb.len() && same == pa.len() && a.average == b.average;
    (
        ok,
        format!(
            "accuracy {:.2} vs {:.2}; {same}/{} predictions identical",
            a.average,
            b.average,
            pa.len()
        ),
    )
}

fn round_trip(
    args: &PortabilityArgs,
    fixtures: &Path,
    others: &[BackendKind],
    work: &Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let data = work.join("sums.jsonl");
    write_round_trip_data(&data)?;
    let flex_run = work.join("run-flex");
    let secs = train_run(BackendKind::Flex, fixtures, &data, &flex_run, args.steps)?;
    let (flex_eval, eval_secs) = eval_run(
        &flex_run,
        &data,
        BackendKind::Flex,
        &work.join("eval-flex-flex"),
    )?;
    rows.push(Row {
        backend: "flex".into(),
        precision: "f32".into(),
        check: "round_trip".into(),
        worst: String::new(),
        max_abs_diff: 0.0,
        tolerance: 0.0,
        seconds: secs + eval_secs,
        status: "reference".into(),
        note: format!(
            "trained {} steps, accuracy {:.2} on {} problems",
            args.steps,
            flex_eval.average,
            flex_eval
                .reports
                .iter()
                .map(|r| r.predictions.len())
                .sum::<usize>()
        ),
        outputs: Vec::new(),
    });
    let flex_weights = adapter_weights(&flex_run)?;
    for &kind in others {
        let run = work.join(format!("run-{kind}"));
        let t = Instant::now();
        let train_secs = train_run(kind, fixtures, &data, &run, args.steps)?;
        // The run trained on `kind`, evaluated on flex and on `kind`.
        let (on_flex, _) = eval_run(
            &run,
            &data,
            BackendKind::Flex,
            &work.join(format!("eval-{kind}-flex")),
        )?;
        let (on_kind, _) = eval_run(&run, &data, kind, &work.join(format!("eval-{kind}-{kind}")))?;
        // The run trained on flex, evaluated on `kind`.
        let (flex_on_kind, _) = eval_run(
            &flex_run,
            &data,
            kind,
            &work.join(format!("eval-flex-{kind}")),
        )?;
        let (ok1, n1) = same_eval(&on_flex, &on_kind);
        let (ok2, n2) = same_eval(&flex_eval, &flex_on_kind);
        let drift = max_abs_diff(&flex_weights, &adapter_weights(&run)?);
        let drift_tol = match Precision::f32_on(kind) {
            Precision::Tf32 => DRIFT_TOL_TF32,
            _ => DRIFT_TOL,
        };
        let pass = ok1 && ok2 && drift <= drift_tol;
        rows.push(Row {
            backend: kind.to_string(),
            precision: Precision::f32_on(kind).name().into(),
            check: "round_trip".into(),
            worst: "adapter weights".into(),
            max_abs_diff: drift,
            tolerance: drift_tol,
            seconds: t.elapsed().as_secs_f64(),
            status: if pass { "pass" } else { "FAIL" }.into(),
            note: format!(
                "trained on {kind} ({train_secs:.0} s), eval flex vs {kind}: {n1}; \
                 trained on flex, eval flex vs {kind}: {n2}"
            ),
            outputs: Vec::new(),
        });
    }
    Ok(())
}

// ------------------------------------------------------------------ the command

fn fixtures(args: &PortabilityArgs) -> Result<PathBuf> {
    let dir = args.fixtures.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures")
    });
    for sub in ["tiny_tied", "whisper_tiny"] {
        if !dir.join(sub).join("config.json").is_file() {
            bail!(
                "{}: the tiny fixtures are missing ({sub}/config.json); run from a checkout of \
                 flexi-burn or pass --fixtures DIR",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Prints the table (and with `verbose`, every output's difference).
pub fn print_table(rows: &[Row], verbose: bool) {
    println!(
        "\n| backend | precision | check | worst output | max abs diff | tolerance | time s | result |"
    );
    println!("| --- | --- | --- | --- | ---: | ---: | ---: | --- |");
    for r in rows {
        let num = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.2e}")
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            r.backend,
            r.precision,
            r.check,
            r.worst,
            num(r.max_abs_diff),
            num(r.tolerance),
            r.seconds,
            r.status
        );
    }
    let notes: Vec<&Row> = rows.iter().filter(|r| !r.note.is_empty()).collect();
    if !notes.is_empty() {
        println!();
        for r in notes {
            println!("{} {} {}: {}", r.backend, r.precision, r.check, r.note);
            if verbose {
                for (name, d, tol) in &r.outputs {
                    println!("    {name}: max abs diff {d:.3e} (tolerance {tol:.3e})");
                }
            }
        }
    }
}

/// Runs `portability`.
pub fn run(args: PortabilityArgs) -> Result<()> {
    if let Some(spec) = &args.child {
        return run_child(&args, spec);
    }
    let fixtures = fixtures(&args)?;
    if !BackendKind::Flex.is_compiled() {
        bail!("the portability checks compare with the CPU backend: build with `--features flex`");
    }
    let explicit = !args.backend.is_empty();
    let kinds: Vec<BackendKind> = if explicit {
        args.backend
            .iter()
            .map(|b| b.parse())
            .collect::<std::result::Result<_, _>>()?
    } else {
        BackendKind::compiled()
    };
    let mut rows = Vec::new();
    // Which backends can run here.
    let mut ready: Vec<(BackendKind, DeviceInfo)> = Vec::new();
    for &kind in kinds.iter().filter(|k| **k != BackendKind::Flex) {
        match probe(kind) {
            Ok(info) => {
                println!("{kind}: {}", info.name);
                ready.push((kind, info));
            }
            Err(e) if explicit => return Err(e.into()),
            Err(e) => {
                println!("{kind}: skipped: {e}");
                rows.push(skipped(&kind.to_string(), "f32", "all", &e.to_string()));
            }
        }
    }
    for kind in BackendKind::ALL.into_iter().filter(|k| !k.is_compiled()) {
        if !explicit {
            rows.push(skipped(
                &kind.to_string(),
                "-",
                "all",
                &format!("not compiled in (build with --features {})", kind.feature()),
            ));
        }
    }

    let scratch = match &args.work {
        Some(w) => {
            std::fs::create_dir_all(w).with_context(|| format!("creating {}", w.display()))?;
            Scratch(w.clone(), false)
        }
        None => {
            let d = std::env::temp_dir().join(format!("flexi-portability-{}", std::process::id()));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            Scratch(d, true)
        }
    };

    println!("flex (reference): tensor checks");
    let reference = run_tensor_checks(BackendKind::Flex, Precision::F32, &fixtures)?;
    rows.extend(reference_rows(&reference));
    // Mixed precision (frozen weights in a half type, the rest f32) on every backend that runs
    // here, flex included: in this process, the device type stays f32.
    let mut mixed = Vec::new();
    if !args.no_half {
        mixed.push((BackendKind::Flex, Precision::MixedF16, true));
        mixed.push((BackendKind::Flex, Precision::MixedBf16, true));
        for (kind, info) in &ready {
            mixed.push((*kind, Precision::MixedF16, info.f16));
            mixed.push((*kind, Precision::MixedBf16, info.bf16));
        }
    }
    for (kind, precision, supported) in mixed {
        if !supported {
            rows.push(skipped(
                &kind.to_string(),
                precision.name(),
                "all",
                &format!("{kind} has no {} arithmetic here", precision.frozen()),
            ));
            continue;
        }
        println!("{kind}: tensor checks in {}", precision.name());
        let got = run_tensor_checks(kind, precision, &fixtures)?;
        rows.extend(compare(&kind.to_string(), precision, &reference, &got));
    }
    for (kind, info) in &ready {
        println!("{kind}: tensor checks in f32");
        let got = run_tensor_checks(*kind, Precision::F32, &fixtures)?;
        rows.extend(compare(
            &kind.to_string(),
            Precision::f32_on(*kind),
            &reference,
            &got,
        ));
        if args.no_half {
            continue;
        }
        for (precision, supported) in [(Precision::F16, info.f16), (Precision::Bf16, info.bf16)] {
            if !supported {
                rows.push(skipped(
                    &kind.to_string(),
                    precision.name(),
                    "all",
                    &format!("{} does not support {} here", info.name, precision.name()),
                ));
                continue;
            }
            println!(
                "{kind}: tensor checks in {} (child process)",
                precision.name()
            );
            match half_in_child(&fixtures, *kind, precision, &scratch.0) {
                Ok(got) => rows.extend(compare(&kind.to_string(), precision, &reference, &got)),
                Err(e) => rows.push(Row {
                    status: "FAIL".into(),
                    ..skipped(&kind.to_string(), precision.name(), "all", &e)
                }),
            }
        }
    }
    if !args.no_round_trip {
        println!("round trip: train, save, load and evaluate across backends");
        let others: Vec<BackendKind> = ready.iter().map(|(k, _)| *k).collect();
        round_trip(&args, &fixtures, &others, &scratch.0, &mut rows)?;
    }

    print_table(&rows, args.verbose);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.status == "FAIL")
        .map(|r| format!("{} {} {}", r.backend, r.precision, r.check))
        .collect();
    if !failed.is_empty() {
        bail!("portability checks failed: {}", failed.join(", "));
    }
    Ok(())
}

/// A scratch directory, removed on drop when we made it.
struct Scratch(PathBuf, bool);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(check: &str, dtype: &str, outputs: Vec<(&str, Vec<f32>)>) -> CheckOutput {
        CheckOutput {
            check: check.into(),
            outputs: outputs
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            long_sums: check == "whisper",
            dtype: dtype.into(),
            seconds: 0.0,
        }
    }

    #[test]
    fn cuda_f32_is_compared_as_tf32_and_gates_long_gradient_sums() {
        assert_eq!(Precision::f32_on(BackendKind::Cuda), Precision::Tf32);
        assert_eq!(Precision::f32_on(BackendKind::Wgpu), Precision::F32);
        let reference = [out(
            "whisper",
            "F32",
            vec![("logits", vec![6.0, -1.0]), ("grad enc", vec![1.0, 0.5])],
        )];
        // Logits: 64 x 2^-11 x 6 = 0.1875; the H200's 1.35e-2 passes.
        let ok = compare(
            "cuda",
            Precision::Tf32,
            &reference,
            &[out(
                "whisper",
                "F32",
                vec![
                    ("logits", vec![6.0135, -1.0]),
                    ("grad enc", vec![1.006, 0.5]),
                ],
            )],
        );
        assert_eq!(ok[0].status, "pass", "{:?}", ok[0]);
        assert_eq!(ok[0].precision, "f32 (tf32 matmul)");
        // A wrong kernel (O(1) relative) fails, and a long gradient sum is gated (f32
        // accumulation): 10 x 64 x 2^-11 = 0.3125 < 0.5.
        let bad = compare(
            "cuda",
            Precision::Tf32,
            &reference,
            &[out(
                "whisper",
                "F32",
                vec![("logits", vec![6.0, -1.0]), ("grad enc", vec![1.5, 0.5])],
            )],
        );
        assert_eq!(bad[0].status, "FAIL", "{:?}", bad[0]);
    }

    #[test]
    fn f32_tolerance_scales_with_the_reference() {
        let reference = [out("llama", "F32", vec![("logits", vec![10.0, -2.0])])];
        // 1e-4 x max(1, 10) = 1e-3.
        let ok = compare(
            "wgpu",
            Precision::F32,
            &reference,
            &[out("llama", "F32", vec![("logits", vec![10.0005, -2.0])])],
        );
        assert_eq!(ok[0].status, "pass");
        assert!((ok[0].tolerance - 1e-3).abs() < 1e-12);
        assert!((ok[0].max_abs_diff - 5e-4).abs() < 1e-6);
        let bad = compare(
            "wgpu",
            Precision::F32,
            &reference,
            &[out("llama", "F32", vec![("logits", vec![10.002, -2.0])])],
        );
        assert_eq!(bad[0].status, "FAIL");
    }

    #[test]
    fn wrong_dtype_nan_or_missing_outputs_fail() {
        let reference = [out(
            "llama",
            "F32",
            vec![("logits", vec![1.0]), ("loss", vec![2.0])],
        )];
        // Asked for f16 but computed in f32: the half run did not happen.
        let r = compare(
            "wgpu",
            Precision::F16,
            &reference,
            &[out(
                "llama",
                "F32",
                vec![("logits", vec![1.0]), ("loss", vec![2.0])],
            )],
        );
        assert_eq!(r[0].status, "FAIL");
        assert!(r[0].note.contains("expected F16"), "{}", r[0].note);
        let r = compare(
            "wgpu",
            Precision::F32,
            &reference,
            &[out(
                "llama",
                "F32",
                vec![("logits", vec![f32::NAN]), ("loss", vec![2.0])],
            )],
        );
        assert_eq!(r[0].status, "FAIL");
        assert!(r[0].note.contains("NaN"), "{}", r[0].note);
        let r = compare(
            "wgpu",
            Precision::F32,
            &reference,
            &[out("llama", "F32", vec![("logits", vec![1.0])])],
        );
        assert_eq!(r[0].status, "FAIL");
        assert!(r[0].note.contains("missing outputs"), "{}", r[0].note);
        let r = compare("wgpu", Precision::F32, &reference, &[]);
        assert_eq!(r[0].status, "FAIL");
    }

    #[test]
    fn long_sum_gradients_get_the_wider_f32_bound_and_are_not_gated_in_half() {
        let reference = [out(
            "whisper",
            "F32",
            vec![("logits", vec![1.0]), ("grad A encoder", vec![0.5])],
        )];
        // f32: 10 x 1e-4.
        let r = compare(
            "wgpu",
            Precision::F32,
            &reference,
            &[out(
                "whisper",
                "F32",
                vec![("logits", vec![1.0]), ("grad A encoder", vec![0.5005])],
            )],
        );
        assert_eq!(r[0].status, "pass");
        assert!((r[0].outputs[1].2 - 1e-3).abs() < 1e-12);
        // f16: the gradient is reported (even NaN) but does not fail the row.
        let r = compare(
            "wgpu",
            Precision::F16,
            &reference,
            &[out(
                "whisper",
                "F16",
                vec![("logits", vec![1.001]), ("grad A encoder", vec![f32::NAN])],
            )],
        );
        assert_eq!(r[0].status, "pass", "{:?}", r[0]);
        assert_eq!(r[0].outputs[1].0, "grad A encoder (not gated)");
        // f16 tolerance: 64 x 2^-11 x max(1, 1) = 0.03125.
        assert_eq!(r[0].outputs[0].2, 0.03125);
    }

    #[test]
    fn outputs_and_rows_survive_json_with_nan() {
        let o = out(
            "llama",
            "F16",
            vec![("logits", vec![f32::NAN, f32::INFINITY, 1.5])],
        );
        let back: CheckOutput = serde_json::from_slice(&serde_json::to_vec(&o).unwrap()).unwrap();
        let v = &back.outputs[0].1;
        assert!(v[0].is_nan() && v[1] == f32::INFINITY && v[2] == 1.5);
        let row = skipped("cuda", "f32", "all", "no driver");
        let back: Row = serde_json::from_slice(&serde_json::to_vec(&row).unwrap()).unwrap();
        assert!(back.max_abs_diff.is_nan() && back.tolerance.is_nan());
        assert_eq!(back.status, "skipped");
    }

    #[test]
    fn deterministic_values_are_in_range_and_seeded() {
        let a = values(1000, 3);
        assert_eq!(a, values(1000, 3));
        assert_ne!(a, values(1000, 4));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.1, "{mean}");
    }
}
