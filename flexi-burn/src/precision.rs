//! Mixed precision: frozen base weights stored in a half type, everything that trains in f32.
//!
//! A [`Precision`] other than f32 keeps the frozen weights of a model (its base linears, token
//! embedding and LM head) in bf16 or f16. Each matmul against such a weight runs in the
//! weight's type ([`linear_mixed`]: the activation is cast down, the product cast back), while
//! the residual stream, norms, softmax, the loss, the LoRA factors, their gradients and the
//! optimizer state stay f32. The type of a computation is read from the tensors themselves
//! (`Tensor::dtype`), not from a global setting, so a model in f32 runs exactly as before.
//!
//! f16 has 5 exponent bits: a gradient below 2^-24 flushes to zero in the half-precision
//! backward of a matmul, one above 65504 overflows. Training in f16 therefore scales the loss
//! ([`LossScale`], PyTorch's `GradScaler` rule): gradients are unscaled in f32 before the
//! optimizer, and a step whose gradients are not finite is skipped and halves the scale.

use std::fmt;
use std::str::FromStr;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::error::FlexiError;

/// The storage type of a model's frozen weights. Written `f32`, `bf16` or `f16`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// Frozen weights and their matmuls in bfloat16 (8 exponent bits, 8 significand bits).
    Bf16,
    /// Frozen weights and their matmuls in IEEE half (5 exponent bits, 11 significand bits),
    /// with loss scaling in training.
    F16,
}

impl Precision {
    /// Every precision, in the order `f32`, `bf16`, `f16`.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    /// The storage type of frozen weights, `None` for f32 (nothing to cast).
    pub fn half(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    /// The unit roundoff of the type matmuls run in: `2^-24` (f32), `2^-8` (bf16), `2^-11` (f16).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Precision::F32 => 2f64.powi(-24),
            Precision::Bf16 => 2f64.powi(-8),
            Precision::F16 => 2f64.powi(-11),
        }
    }

    /// Whether training needs loss scaling (f16's narrow exponent range).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = FlexiError;

    fn from_str(s: &str) -> Result<Self, FlexiError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "fp16" | "float16" => Ok(Precision::F16),
            _ => Err(FlexiError::InvalidConfig {
                field: "precision",
                value: format!("{s:?}"),
                expected: "f32, bf16 or f16",
            }),
        }
    }
}

/// `x [rows, d_in] @ w [d_in, d_out] (+ bias)`, run in `w`'s type when it differs from `x`'s:
/// `x` is cast to it, the product cast back to `x`'s type, and the bias added in `x`'s type.
/// With equal types this is Burn's `linear`, unchanged.
pub fn linear_mixed<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let (x_type, w_type) = (x.dtype(), w.dtype());
    if x_type == w_type {
        // A decoding step's few rows on the CPU: the host path ([`crate::host`]).
        #[cfg(feature = "flex")]
        if let Some(y) = crate::host::linear_few_rows(&x, &w, bias.as_ref()) {
            return y;
        }
        return burn::tensor::module::linear(x, w, bias);
    }
    let y = x.cast(w_type).matmul(w).cast(x_type);
    match bias {
        Some(b) => y.add(b.cast(x_type).unsqueeze::<2>()),
        None => y,
    }
}

/// A frozen parameter cast to `dtype` (its id kept). A parameter that trains (full
/// fine-tuning) or already has that type is returned unchanged: trained weights keep f32.
pub fn store_frozen<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    dtype: FloatDType,
) -> Param<Tensor<B, D>> {
    if param.is_require_grad() || param.val().dtype() == DType::from(dtype) {
        return param;
    }
    param.map(|t| t.cast(dtype)).set_require_grad(false)
}

/// A frozen [`Linear`]'s weight stored in `dtype` ([`store_frozen`]); its bias stays in its
/// type (it is added after the product is cast back, see [`linear_mixed`]).
pub fn store_frozen_linear<B: Backend>(mut layer: Linear<B>, dtype: FloatDType) -> Linear<B> {
    layer.weight = store_frozen(layer.weight, dtype);
    layer
}

/// Dynamic loss scaling for f16 training (PyTorch's `torch.amp.GradScaler` rule): the loss is
/// multiplied by [`LossScale::scale`] before the backward pass; a step whose gradients are all
/// finite is taken with the gradients divided by it, and after `growth_interval` such steps in
/// a row the scale doubles; a step with an infinite or NaN gradient is skipped and halves it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScale {
    /// Current scale.
    pub scale: f64,
    /// Finite steps since the last change.
    pub good_steps: usize,
    /// Steps between growths (PyTorch: 2000).
    pub growth_interval: usize,
    /// Steps skipped so far.
    pub skipped: usize,
}

impl LossScale {
    /// PyTorch's defaults: initial scale 2^16, growth every 2000 finite steps.
    pub fn new(initial: f64, growth_interval: usize) -> Self {
        Self {
            scale: initial,
            good_steps: 0,
            growth_interval: growth_interval.max(1),
            skipped: 0,
        }
    }

    /// Records a step's outcome: `finite` gradients keep the step (and may grow the scale);
    /// otherwise the step is skipped and the scale halves (never below 1). Returns whether to
    /// take the step.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
            true
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            self.skipped += 1;
            false
        }
    }
}

impl Default for LossScale {
    fn default() -> Self {
        Self::new(65536.0, 2000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        let e = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("precision = \"f8\": f32, bf16 or f16"), "{e}");
    }

    #[test]
    fn loss_scale_halves_on_overflow_and_doubles_after_the_interval() {
        let mut s = LossScale::new(1024.0, 3);
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped), (512.0, 1));
        assert!(s.update(true) && s.update(true));
        assert_eq!(s.scale, 512.0);
        assert!(s.update(true));
        assert_eq!((s.scale, s.good_steps), (1024.0, 0));
        let mut low = LossScale::new(1.0, 10);
        low.update(false);
        assert_eq!(low.scale, 1.0);
    }
}
