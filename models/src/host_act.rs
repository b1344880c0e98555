//! Activations on the host, in place and vectorised, for the CPU backend without autodiff:
//! Whisper's GELU and Llama's SwiGLU product `silu(gate) * up`.
//!
//! burn-flex 0.21 computes `gelu(x) = x / 2 (1 + erf(x / sqrt 2))` as five passes (scale,
//! libm's scalar `erff`, add, two products), each into a fresh buffer; in Whisper's encoder
//! (`[1500, 1536]` per layer, and the two convolutions) `erff` and those passes were 7 % of
//! the encode time. `silu(g) * u` is likewise a sigmoid (libm's scalar `expf`), a product and
//! a second product, each a pass and a buffer (7 % of a 512-token prefill). Here the
//! activation's own buffer (fc1's or gate's output, which nothing else holds, so Burn hands it
//! over without a copy) is overwritten in one pass.
//!
//! `sigmoid(g)` is `1 / (1 + e)` for `g >= 0` and `e / (1 + e)` below, with `e = exp(-|g|)`
//! from [`crate::host_softmax`] (whose `exp` covers arguments `<= 0` only): within a few ulp
//! of libm's. `erf` is Abramowitz and Stegun 7.1.26 (a degree-5 polynomial in `t = 1 / (1 + p |z|)`
//! times `exp(-z^2)`, absolute error below 1.5e-7), the approximation PyTorch's vectorised
//! CPU `erf` uses, so its error is that of the reference implementation the goldens come
//! from. `1 + erf(z)` for `z < 0` is taken as the polynomial term itself rather than `1 - y`,
//! so no cancellation for negative inputs. `exp` is [`crate::host_softmax`]'s. Plain
//! multiplies and adds, no fused multiply-add: the AVX-512, AVX2 and portable builds of the
//! loop (picked at run time) give the same numbers.

use burn::tensor::activation::{gelu, silu};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::host_softmax::exp;

/// `gelu(x)` (the erf form): on burn-flex without autodiff, for an f32 tensor, in place on the
/// host ([`gelu_in_place`]); Burn's `gelu` everywhere else.
pub fn gelu_host<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let device = x.device();
    if !flexi_burn::host::host_kernels::<B>(&device) || x.dtype() != DType::F32 {
        return gelu(x);
    }
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => gelu_in_place(values),
        Err(_) => return gelu(Tensor::from_data(data, &device)),
    }
    Tensor::from_data(data, &device)
}

/// `silu(gate) * up` (SwiGLU's product; equal shapes): on burn-flex without autodiff, for f32
/// tensors, in `gate`'s buffer on the host ([`silu_mul_in_place`]); Burn's ops elsewhere.
pub fn silu_mul_host<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    let device = gate.device();
    // Training on burn-flex: one autodiff operation with its own backward.
    #[cfg(feature = "flex")]
    let (gate, up) = match crate::host_train::silu_mul_autodiff(gate, up) {
        Ok(h) => return h,
        Err(operands) => operands,
    };
    if !flexi_burn::host::host_kernels::<B>(&device)
        || gate.dtype() != DType::F32
        || up.dtype() != DType::F32
        || gate.dims() != up.dims()
    {
        return silu(gate).mul(up);
    }
    let mut data = gate.into_data();
    let up = up.into_data();
    match (data.as_mut_slice::<f32>(), up.as_slice::<f32>()) {
        (Ok(g), Ok(u)) => silu_mul_in_place(g, u),
        _ => {
            let gate = Tensor::from_data(data, &device);
            return silu(gate).mul(Tensor::from_data(up, &device));
        }
    }
    Tensor::from_data(data, &device)
}

/// `pub fn $name(args)`: `$portable(args)` (an `#[inline(always)]` loop) compiled for
/// AVX-512F, for AVX2 or for the baseline, the widest the CPU has picked at run time. The
/// loops use plain multiplies and adds (no fused multiply-add), so every build gives the same
/// numbers.
macro_rules! simd_dispatch {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) => $portable:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $portable($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    $portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}

simd_dispatch! {
    /// Every value `x` of `values` replaced by `gelu(x)`.
    gelu_in_place(values: &mut [f32]) => gelu_portable
}

#[inline(always)]
fn gelu_portable(values: &mut [f32]) {
    for x in values.iter_mut() {
        *x = gelu_one(*x);
    }
}

simd_dispatch! {
    /// `gate[i] = silu(gate[i]) * up[i]` (`up` as long as `gate`; panics otherwise).
    silu_mul_in_place(gate: &mut [f32], up: &[f32]) => silu_mul_portable
}

#[inline(always)]
fn silu_mul_portable(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul_in_place: lengths differ");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_one(*g) * u;
    }
}

simd_dispatch! {
    /// `out[i] = silu(gate[i]) * up[i]` (three slices of one length; panics otherwise).
    silu_mul_to(gate: &[f32], up: &[f32], out: &mut [f32]) => silu_mul_to_portable
}

#[inline(always)]
fn silu_mul_to_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len();
    assert!(
        gate.len() == n && up.len() == n,
        "silu_mul_to: lengths differ"
    );
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu_one(g) * u;
    }
}

simd_dispatch! {
    /// The gradients of `h = silu(g) u` from `dh` (four slices of one length; panics
    /// otherwise): `dg = dh u s (1 + g (1 - s))` with `s = sigmoid(g)` written over `dh`, and
    /// `du = dh g s` into `du`.
    silu_mul_backward(gate: &[f32], up: &[f32], dh: &mut [f32], du: &mut [f32]) => silu_mul_backward_portable
}

#[inline(always)]
fn silu_mul_backward_portable(gate: &[f32], up: &[f32], dh: &mut [f32], du: &mut [f32]) {
    let n = dh.len();
    assert!(
        gate.len() == n && up.len() == n && du.len() == n,
        "silu_mul_backward: lengths differ"
    );
    for (((d, o), &g), &u) in dh.iter_mut().zip(du.iter_mut()).zip(gate).zip(up) {
        let s = sigmoid_one(g);
        let grad = *d;
        *o = grad * (g * s);
        *d = grad * u * (s * (1.0 + g * (1.0 - s)));
    }
}

/// `1 / (1 + e^-g)`, from `e = exp(-|g|)` (no overflow for either sign).
#[inline(always)]
fn sigmoid_one(g: f32) -> f32 {
    let a = f32::from_bits(g.to_bits() & 0x7fff_ffff);
    let e = exp(-a);
    let num = if g >= 0.0 { 1.0 } else { e };
    num / (1.0 + e)
}

/// `g sigmoid(g)`.
#[inline(always)]
fn silu_one(g: f32) -> f32 {
    g * sigmoid_one(g)
}

/// `x / 2 (1 + erf(x / sqrt 2))`.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = f32::from_bits(z.to_bits() & 0x7fff_ffff);
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    // erfc(|z|) = poly exp(-z^2); 1 + erf(z) is 2 - erfc(|z|) for z >= 0, erfc(|z|) below.
    let q = poly * exp(-(a * a));
    let one_plus_erf = if z >= 0.0 { 2.0 - q } else { q };
    0.5 * x * one_plus_erf
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Against Burn's `gelu` on flex (libm's `erff`), over [-10, 10] and random activations:
    /// within the approximation's 1.5e-7 absolute error of `erf` (times `|x| / 2`) plus a few
    /// f32 roundings of the result.
    #[test]
    fn host_gelu_equals_burns() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-4).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 100.0, -100.0]);
        let grid = Tensor::<B, 1>::from_floats(xs.as_slice(), &device);
        let random = Tensor::<B, 1>::random([4099], Distribution::Normal(0.0, 3.0), &device);
        for x in [grid, random] {
            let input = x.to_data().to_vec::<f32>().expect("f32");
            let want = gelu(x.clone()).into_data().to_vec::<f32>().expect("f32");
            let got = gelu_host(x).into_data().to_vec::<f32>().expect("f32");
            for ((&v, &g), &w) in input.iter().zip(&got).zip(&want) {
                // The error of `1 + erf` (A&S's 1.5e-7 and f32 roundings of `t`, the
                // polynomial and `exp`) times `|x| / 2`, and a few roundings of the result.
                let bound = 0.5 * v.abs() * 2e-7 + 4.0 * f32::EPSILON * w.abs() + 1e-30;
                assert!((g - w).abs() <= bound, "gelu({v}) = {g}, Burn {w}");
            }
        }
        // Exact where the function is: gelu(0) = 0, gelu(large) = x, gelu(very negative) = 0.
        let mut v = [0.0f32, 40.0, -40.0];
        gelu_in_place(&mut v);
        assert_eq!(v, [0.0, 40.0, 0.0]);
    }

    /// Against Burn's `silu(gate) * up` on flex (libm's `expf`), relative 1e-6 (a few ulp:
    /// `exp` within 2 ulp, a division and two products), over [-100, 100] and random values;
    /// below -87, where `exp` is 0, the product is 0 instead of under `87 e^-87 |up|` (1e-36).
    #[test]
    fn host_silu_mul_equals_burns() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-3).collect();
        let n = xs.len();
        let grid = Tensor::<B, 1>::from_floats(xs.as_slice(), &device).reshape([1, n]);
        let random = Tensor::<B, 2>::random([3, 1031], Distribution::Normal(0.0, 4.0), &device);
        for gate in [grid, random] {
            let up = Tensor::<B, 2>::random(gate.dims(), Distribution::Normal(0.0, 1.0), &device);
            let input = gate.to_data().to_vec::<f32>().expect("f32");
            let want = silu(gate.clone())
                .mul(up.clone())
                .into_data()
                .to_vec::<f32>()
                .expect("f32");
            let got = silu_mul_host(gate, up)
                .into_data()
                .to_vec::<f32>()
                .expect("f32");
            for ((&v, &g), &w) in input.iter().zip(&got).zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs() + 1e-30,
                    "silu({v}) * up = {g}, Burn {w}"
                );
            }
        }
    }
}
