//! Linear layers of a few rows on the host: the products of a decoding step on the CPU.
//!
//! A decoding step of 2 to 8 sequences multiplies that many rows by every weight matrix of
//! the model. burn-flex hands such a product to gemm, which packs the weight into its panel
//! layout on every call, and with only a few rows sharing each packed value the packing costs
//! as much as the product (SmolLM2, 2 sequences: 51 ms per step against 20 ms for one, whose
//! gemv packs nothing). Burn's `Linear` stores its weight as `[d_in, d_out]`, rows contiguous,
//! which is already what a few-row product wants: here, for each block of 48 output columns,
//! every row's accumulators stay in registers (8 rows x 3 AVX-512 registers) while panels of
//! 16 weight rows stream past, the bias as the accumulators' start, and the column blocks are
//! split over two threads. One row keeps gemm's gemv, which streams the weight in one
//! sequence and measured faster than this loop (20 against 26-29 ms per step).
//!
//! Taken only on burn-flex without autodiff, for f32 operands, [`MIN_ROWS`] to [`MAX_ROWS`]
//! rows, a weight whose rows are contiguous (`Linear`'s own layout; a transposed view such as
//! a tied LM head keeps gemm), and a CPU with AVX-512F and FMA (the accumulators need its 32
//! vector registers); everything else returns `None` and takes Burn's `linear`. The sum over
//! `k` runs in order with fused multiply-adds, so outputs agree with Burn's to f32 summation
//! order (tests).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;

use super::to_flex;

/// The fewest rows this path takes (one row is gemm's gemv).
pub const MIN_ROWS: usize = 2;

/// The most rows this path takes (a decoding batch of 8).
pub const MAX_ROWS: usize = 8;

/// Output columns per block: three AVX-512 registers per row (8 rows: 24 accumulators).
const BLOCK: usize = 48;

/// Multiply-adds below which one thread does the whole product (handing half to the second
/// thread costs more than it saves).
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// `x [rows, d_in] @ w [d_in, d_out] (+ bias)` on the host when the conditions in the module
/// doc hold; `None` otherwise (the caller runs Burn's `linear`).
pub fn linear_few_rows<B: Backend>(
    x: &Tensor<B, 2>,
    w: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    let device = x.device();
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = w.dims();
    if !(MIN_ROWS..=MAX_ROWS).contains(&rows)
        || w_in != d_in
        || d_out == 0
        || !super::host_kernels::<B>(&device)
        || x.dtype() != DType::F32
        || w.dtype() != DType::F32
        || bias.is_some_and(|b| b.dtype() != DType::F32 || b.dims() != [d_out])
        || !avx512()
    {
        return None;
    }
    let w = to_flex(w.clone())?;
    let (w_values, w_row_stride) = rows_view(&w, d_in, d_out)?;
    let x = to_flex(x.clone())?;
    let (x_values, x_row_stride) = rows_view(&x, rows, d_in)?;
    let bias = match bias {
        Some(b) => Some(to_flex(b.clone())?),
        None => None,
    };
    let bias_values = match &bias {
        Some(b) => Some(rows_view(b, 1, d_out)?.0),
        None => None,
    };
    let operands = Operands {
        x: x_values,
        x_row_stride,
        w: w_values,
        w_row_stride,
        bias: bias_values,
        rows,
        d_in,
    };
    let mut out = vec![0f32; rows * d_out];
    product(&operands, &mut out, d_out);
    Some(Tensor::from_data(
        TensorData::new(out, [rows, d_out]),
        &device,
    ))
}

/// `t`'s values from its first element and its row stride, when it is `[rows, cols]` (or 1-D
/// of `cols` for `rows == 1`) with contiguous rows.
fn rows_view(t: &FlexTensor, rows: usize, cols: usize) -> Option<(&[f32], usize)> {
    let layout = t.layout();
    let strides = layout.strides();
    let row_stride = match strides {
        [inner] if rows == 1 && (*inner == 1 || cols == 1) => cols,
        [outer, inner] if (*inner == 1 || cols == 1) && (*outer >= cols as isize || rows == 1) => {
            (*outer).max(cols as isize) as usize
        }
        _ => return None,
    };
    let values = t.storage::<f32>();
    let start = layout.start_offset();
    let end = start + (rows - 1) * row_stride + cols;
    (end <= values.len()).then(|| (&values[start..], row_stride))
}

struct Operands<'a> {
    x: &'a [f32],
    x_row_stride: usize,
    w: &'a [f32],
    w_row_stride: usize,
    bias: Option<&'a [f32]>,
    rows: usize,
    d_in: usize,
}

/// The `d_out` columns of the product into `out` (`rows x d_out`), halved over two threads
/// when the work is large enough.
fn product(op: &Operands<'_>, out: &mut [f32], d_out: usize) {
    if d_out < 2 * BLOCK || d_out * op.d_in * op.rows < MIN_PARALLEL_WORK {
        return columns(op, out, 0, d_out);
    }
    // Two halves on a block boundary, each into its own buffer, then interleaved by row.
    let mid = (d_out / 2).div_ceil(BLOCK) * BLOCK;
    let (mut left, mut right) = (
        vec![0f32; op.rows * mid],
        vec![0f32; op.rows * (d_out - mid)],
    );
    rayon::join(
        || columns(op, &mut left, 0, mid),
        || columns(op, &mut right, mid, d_out),
    );
    for (r, row) in out.chunks_exact_mut(d_out).enumerate() {
        row[..mid].copy_from_slice(&left[r * mid..(r + 1) * mid]);
        row[mid..].copy_from_slice(&right[r * (d_out - mid)..(r + 1) * (d_out - mid)]);
    }
}

/// Columns `[c0, c1)` into `out` (`rows x (c1 - c0)`, rows contiguous).
fn columns(op: &Operands<'_>, out: &mut [f32], c0: usize, c1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `linear_few_rows` only gets here on a CPU with AVX-512F and FMA, with `x`,
        // `w` and the bias checked to hold every index the blocks read (`rows_view`).
        unsafe {
            match op.rows {
                1 => avx512::blocks::<1>(op, out, c0, c1),
                2 => avx512::blocks::<2>(op, out, c0, c1),
                3 => avx512::blocks::<3>(op, out, c0, c1),
                4 => avx512::blocks::<4>(op, out, c0, c1),
                5 => avx512::blocks::<5>(op, out, c0, c1),
                6 => avx512::blocks::<6>(op, out, c0, c1),
                7 => avx512::blocks::<7>(op, out, c0, c1),
                _ => avx512::blocks::<8>(op, out, c0, c1),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (op, out, c0, c1);
        unreachable!("linear_few_rows takes the host path on x86-64 only");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    use super::{BLOCK, Operands};

    /// Lanes of a register.
    const L: usize = 16;

    /// Weight rows per panel.
    const KC: usize = 16;

    /// Every block of [`BLOCK`] columns, then of 16, then one at a time, for `R` rows.
    ///
    /// # Safety
    /// AVX-512F and FMA present; `op.x` holds `R` rows of `op.d_in` at `op.x_row_stride`,
    /// `op.w` holds `op.d_in` rows reaching column `c1` at `op.w_row_stride`, the bias (if
    /// any) reaches `c1`, and `out` holds `R x (c1 - c0)`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn blocks<const R: usize>(
        op: &Operands<'_>,
        out: &mut [f32],
        c0: usize,
        c1: usize,
    ) {
        let width = c1 - c0;
        // Panels of KC weight rows, each swept left to right: KC rows of the weight stream in
        // order at once (a few rows of weights at a time walk memory in sequence, which the
        // prefetchers follow; a block's whole height at once would be d_in strided streams).
        let full = c0 + (width / L) * L;
        let mut k0 = 0;
        while k0 < op.d_in {
            let k1 = (k0 + KC).min(op.d_in);
            let mut j = c0;
            // SAFETY (both loops): columns `[j, j + C)` lie below `c1`, as required.
            while j + BLOCK <= full {
                unsafe { block::<R, 3>(op, out, width, c0, j, k0, k1) };
                j += BLOCK;
            }
            while j + L <= full {
                unsafe { block::<R, 1>(op, out, width, c0, j, k0, k1) };
                j += L;
            }
            k0 = k1;
        }
        let j = full;
        for col in j..c1 {
            for r in 0..R {
                let mut acc = op.bias.map_or(0.0, |b| b[col]);
                for k in 0..op.d_in {
                    acc =
                        op.x[r * op.x_row_stride + k].mul_add(op.w[k * op.w_row_stride + col], acc);
                }
                out[r * width + col - c0] = acc;
            }
        }
    }

    /// Weight rows `[k0, k1)` of columns `[j, j + 16 V)` for `R` rows: `R x V` accumulators in
    /// registers, started from the bias (or zero) at `k0 == 0` and from `out` after; one fused
    /// multiply-add per row, register of weights and `k`, in order of `k`.
    ///
    /// # Safety
    /// As [`blocks`], with `j + 16 V <= c1` and `k1 <= op.d_in`.
    #[inline(always)]
    unsafe fn block<const R: usize, const V: usize>(
        op: &Operands<'_>,
        out: &mut [f32],
        width: usize,
        c0: usize,
        j: usize,
        k0: usize,
        k1: usize,
    ) {
        // SAFETY: every pointer below stays inside the slices, by the caller's contract.
        unsafe {
            let mut acc: [[__m512; V]; R] = [[_mm512_setzero_ps(); V]; R];
            if k0 > 0 {
                for (r, row) in acc.iter_mut().enumerate() {
                    let at = out.as_ptr().add(r * width + (j - c0));
                    for (v, a) in row.iter_mut().enumerate() {
                        *a = _mm512_loadu_ps(at.add(v * L));
                    }
                }
            } else if let Some(b) = op.bias {
                for row in acc.iter_mut() {
                    for (v, a) in row.iter_mut().enumerate() {
                        *a = _mm512_loadu_ps(b.as_ptr().add(j + v * L));
                    }
                }
            }
            let x = op.x.as_ptr();
            let mut w = op.w.as_ptr().add(k0 * op.w_row_stride + j);
            for k in k0..k1 {
                let mut wv = [_mm512_setzero_ps(); V];
                for (v, reg) in wv.iter_mut().enumerate() {
                    *reg = _mm512_loadu_ps(w.add(v * L));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x.add(r * op.x_row_stride + k));
                    for (a, wr) in row.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(xv, *wr, *a);
                    }
                }
                w = w.add(op.w_row_stride);
            }
            for (r, row) in acc.iter().enumerate() {
                let at = out.as_mut_ptr().add(r * width + (j - c0));
                for (v, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(at.add(v * L), *a);
                }
            }
        }
    }
}

/// Whether this CPU has AVX-512F and FMA (the block loop's registers and instructions).
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    /// Every row count 2..=8, widths with and without a remainder (a multiple of 48, of 16,
    /// and neither), with and without bias, a weight view with a row stride (a column slice),
    /// against Burn's `linear` on flex: f32 summation order (relative 1e-5 of the magnitudes
    /// summed).
    #[test]
    fn few_rows_equal_burns_linear() {
        if !avx512() {
            eprintln!("no AVX-512F here: the host path is not taken");
            return;
        }
        let device = Default::default();
        for (d_in, d_out) in [(576, 1536), (384, 48), (64, 200), (37, 7), (1536, 576)] {
            let w =
                Tensor::<Flex, 2>::random([d_in, d_out], Distribution::Normal(0.0, 1.0), &device);
            let b = Tensor::<Flex, 1>::random([d_out], Distribution::Normal(0.0, 1.0), &device);
            for rows in MIN_ROWS..=MAX_ROWS {
                let x = Tensor::<Flex, 2>::random(
                    [rows, d_in],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                for bias in [None, Some(&b)] {
                    let got = linear_few_rows(&x, &w, bias).expect("host path taken");
                    let want = burn::tensor::module::linear(x.clone(), w.clone(), bias.cloned());
                    let scale = x
                        .clone()
                        .abs()
                        .matmul(w.clone().abs())
                        .add_scalar(1.0)
                        .into_data()
                        .to_vec::<f32>()
                        .unwrap();
                    let (got, want) = (
                        got.into_data().to_vec::<f32>().unwrap(),
                        want.into_data().to_vec::<f32>().unwrap(),
                    );
                    for ((g, w), s) in got.iter().zip(&want).zip(&scale) {
                        assert!(
                            (g - w).abs() <= 1e-5 * s,
                            "{rows}x{d_in}x{d_out}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        // A column slice of a wider weight: rows of stride 300, 200 columns from column 50.
        let wide = Tensor::<Flex, 2>::random([64, 300], Distribution::Normal(0.0, 1.0), &device);
        let w = wide.narrow(1, 50, 200);
        let x = Tensor::<Flex, 2>::random([3, 64], Distribution::Normal(0.0, 1.0), &device);
        let got = linear_few_rows(&x, &w, None).expect("host path taken");
        let want = x.matmul(w);
        let diff = got.sub(want).abs().max().into_scalar();
        assert!(diff < 1e-4, "{diff}");
    }

    /// Not taken: one row, more than 8 rows, a transposed weight (columns not contiguous), f16.
    #[test]
    fn other_shapes_and_layouts_take_burns_linear() {
        let device = Default::default();
        let w = Tensor::<Flex, 2>::random([32, 64], Distribution::Normal(0.0, 1.0), &device);
        let x9 = Tensor::<Flex, 2>::random([9, 32], Distribution::Normal(0.0, 1.0), &device);
        assert!(linear_few_rows(&x9, &w, None).is_none());
        let x1 = Tensor::<Flex, 2>::random([1, 32], Distribution::Normal(0.0, 1.0), &device);
        assert!(linear_few_rows(&x1, &w, None).is_none());
        let x = Tensor::<Flex, 2>::random([2, 64], Distribution::Normal(0.0, 1.0), &device);
        assert!(linear_few_rows(&x, &w.clone().transpose(), None).is_none());
        let x = Tensor::<Flex, 2>::random([2, 32], Distribution::Normal(0.0, 1.0), &device);
        let half = w.cast(burn::tensor::FloatDType::F16);
        assert!(
            linear_few_rows(&x.clone().cast(burn::tensor::FloatDType::F16), &half, None).is_none()
        );
    }
}
