//! The attention's softmax on the host, in one pass per row with a vectorised `exp`, for the
//! CPU backend without autodiff.
//!
//! burn-flex 0.21's softmax takes the row maximum, subtracts it, calls libm's scalar `expf`
//! per entry, sums and divides, each step a pass over a freshly allocated (and zeroed)
//! buffer. In Whisper's encoder (6 x 1500 x 1500 scores per layer) `expf` alone was 14.5 % of
//! the encode time and the zeroing and page faults of the new buffers another 14 %. Here the
//! scores' own buffer (the product `q k^T` plus the mask, a fresh tensor that nothing else
//! holds, so Burn hands it over without a copy) is overwritten in place: a pass for the
//! maximum, a pass that writes `exp(x - max)` and sums it, a pass that scales by the
//! reciprocal of the sum.
//!
//! `exp` is Cephes' `expf` (range reduction by `ln 2` in two parts, a degree-6 polynomial,
//! the exponent written into the bits): within 2 ulp of the exact value over the range a
//! softmax uses (`x - max <= 0`), and exactly 0 below -87 (where `expf` itself is below
//! `2^-125`, far under any probability that matters; masked entries are `f32::MIN`). It is
//! written with plain multiplies and adds, no fused multiply-add, so the AVX-512 and AVX2
//! builds of the loop (picked at run time) give the same numbers as the portable one. The
//! probabilities differ from burn-flex's by a few ulp (libm's `expf` is correctly rounded in
//! most cases, division against multiplication by the reciprocal, the order of the row sum).

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// Lanes of the accumulators (one AVX-512 register of f32).
const LANES: usize = 16;

/// `softmax(x, last axis)`: on burn-flex without autodiff, for a contiguous f32 tensor, in
/// place on the host ([`softmax_rows`]); Burn's `softmax` everywhere else.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let device = x.device();
    if !flexi_burn::host::host_kernels::<B>(&device) || x.dtype() != DType::F32 {
        return softmax(x, D - 1);
    }
    let n = x.dims()[D - 1];
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) if n > 0 => softmax_rows(values, n),
        _ => return softmax(Tensor::from_data(data, &device), D - 1),
    }
    Tensor::from_data(data, &device)
}

/// Every row of `n` values of `values` replaced by its softmax.
pub fn softmax_rows(values: &mut [f32], n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { rows_avx512(values, n) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { rows_avx2(values, n) };
        }
    }
    rows_portable(values, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(values: &mut [f32], n: usize) {
    rows_portable(values, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(values: &mut [f32], n: usize) {
    rows_portable(values, n)
}

#[inline(always)]
fn rows_portable(values: &mut [f32], n: usize) {
    for row in values.chunks_exact_mut(n) {
        softmax_row(row);
    }
}

/// The row's maximum, in LANES independent lanes (a compare-and-select the compiler
/// vectorises).
#[inline(always)]
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(chunks.remainder()) {
        max = if x > max { x } else { max };
    }
    max
}

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let max = row_max(row);
    // exp(x - max), summed per lane.
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp(c[i] - max);
            c[i] = e;
            sums[i] += e;
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        let e = exp(*x - max);
        *x = e;
        sum += e;
    }
    for s in sums {
        sum += s;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Cephes `expf` for `x <= 0` (softmax's range; larger `x` are not reduced correctly), 0 below
/// -87.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with few significant bits so `n * LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 x 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LOW: f32 = -87.0;
    let xc = if x < LOW { LOW } else { x };
    // `t`'s bits are ROUND's plus `n`: t is in [2^23, 2^24), where one ulp is 1.
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes 5.0000001201e-1, which rounds to 0.5 in f32
    let e = p * (r * r) + r + 1.0;
    // 2^n: n is in [-126, 0], a normal exponent, read from `t`'s bits with integer
    // arithmetic (`n as i32` is a saturating conversion the compiler leaves scalar).
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(biased << 23);
    if x < LOW { 0.0 } else { e * scale }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// `exp` against the standard library's over softmax's range, to 2 ulp, and 0 below -87.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), (x as f64).exp() as f32);
            worst = worst.max(ulps(got, want));
            x += 0.000_731;
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    /// Rows of odd lengths (lane remainders), masked entries (`f32::MIN`) and large values
    /// against Burn's softmax on flex, probability by probability.
    #[test]
    fn host_softmax_equals_burns() {
        type B = burn::backend::Flex;
        let device = Default::default();
        for n in [1usize, 7, 16, 33, 1500] {
            let x = Tensor::<B, 3>::random([2, 5, n], Distribution::Normal(0.0, 8.0), &device);
            // Hide the last third of every row, as a causal mask does.
            let keep = n - n / 3;
            let mask = Tensor::cat(
                vec![
                    Tensor::<B, 3>::zeros([1, 1, keep], &device),
                    Tensor::full([1, 1, n - keep], f32::MIN, &device),
                ],
                2,
            );
            let x = x.add(mask);
            let want = softmax(x.clone(), 2)
                .into_data()
                .to_vec::<f32>()
                .expect("f32");
            let got = softmax_last(x).into_data().to_vec::<f32>().expect("f32");
            // Relative 2e-6 (17 ulp): `exp` within 2 ulp on each side, and the row sums of up
            // to 1500 terms taken in a different order (measured worst: 5 ulp at n = 1500).
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 2e-6 * w.abs() + 1e-30,
                    "n {n}: {g} against {w}"
                );
            }
            // Every row sums to 1.
            for row in got.chunks(n) {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "n {n}: row sums to {s}");
            }
        }
    }
}
