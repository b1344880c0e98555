//! Scaled-dot-product attention computed over blocks of query rows, shared by Llama and
//! Whisper.
//!
//! Rows of `softmax(q k^T + bias) v` are independent, so the queries can be taken a block at a
//! time. That buys two things:
//!
//! - **Causal attention skips the hidden keys.** Block `[r0, r1)` of `new` queries after `past`
//!   cached keys can only see keys `[0, past + r1)`, so its scores are `(r1 - r0) x (past + r1)`
//!   instead of `(r1 - r0) x (past + new)`. With [`causal_blocks`]'s four blocks of equal work,
//!   a prompt of 512 tokens computes 64 % of the score matrix (its products, bias add, softmax
//!   and their gradients), not all of it. The keys left out were masked to `exp(min - max) = 0`
//!   anyway, so every output is the same up to f32 summation order.
//! - **Blocks can run side by side.** burn-flex runs every non-matmul kernel (the bias add,
//!   softmax's `exp`, the layout copies) on the thread that calls it; on the CPU backend without
//!   autodiff ([`host_parallel`]), the blocks are split into two groups of equal work run by
//!   `rayon::join`, so prefill and Whisper's encoder (one sequence: nothing else to spread over
//!   the cores) keep both busy. Training does not need it: the trainer already runs one shard
//!   of the batch per core, each with its own autodiff graph.
//!
//! Without autodiff on the CPU the softmax is [`crate::host_softmax::softmax_last`] (in place,
//! vectorised `exp`); elsewhere Burn's.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Tensor};

/// Queries per block below which a causal attention is not split (the per-block operations
/// would cost more than the hidden keys they skip).
const MIN_BLOCK_ROWS: usize = 64;

/// At most this many causal blocks (without a cache, `k` equal blocks compute `(k + 1) / 2k` of
/// the full square: 4 gives 62.5 % (64 % with equal-work cuts), more buys little).
const MAX_BLOCKS: usize = 4;

/// Whether the blocks of one attention may run on two host threads: on burn-flex (whose
/// elementwise kernels run on the calling thread) without autodiff. GPU backends queue their
/// kernels asynchronously and gain nothing from a second submitting thread; an autodiff graph
/// is recorded by one thread.
pub fn host_parallel<B: Backend>(device: &B::Device) -> bool {
    flexi_burn::host::host_kernels::<B>(device) && rayon::current_num_threads() > 1
}

/// Query-row blocks of a causal attention over `new` queries after `past` cached keys, of about
/// equal work: block `[r0, r1)` costs `(r1 - r0) x (past + r1)` score entries. One block when
/// `new` is below `2 x 64`, two below `4 x 64`, else four. Block `i` sees keys
/// `[0, past + blocks[i].end)`.
pub fn causal_blocks(past: usize, new: usize) -> Vec<Range<usize>> {
    let k = (new / MIN_BLOCK_ROWS).clamp(1, MAX_BLOCKS);
    let k = if k == 3 { 2 } else { k };
    if k == 1 {
        return std::iter::once(0..new).collect();
    }
    // Cuts for blocks of work `w` each: from `r0`, the end `r1` solves
    // `(r1 - r0) (past + r1) = w`. Bisect `w` until the k-th block ends at `new`.
    let p = past as f64;
    let cuts = |w: f64| {
        let mut r = vec![0.0f64];
        for _ in 0..k {
            let r0 = *r.last().unwrap_or(&0.0);
            let b = p - r0;
            r.push((-b + (b * b + 4.0 * (p * r0 + w)).sqrt()) / 2.0);
        }
        r
    };
    let (mut lo, mut hi) = (0.0, (p + new as f64) * new as f64);
    for _ in 0..64 {
        let mid = (lo + hi) / 2.0;
        if cuts(mid)[k] < new as f64 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // Inner cuts on multiples of 8 rows (whole gemm panels), strictly increasing.
    let mut bounds = vec![0];
    for (i, &r) in cuts(hi).iter().enumerate().take(k).skip(1) {
        let r = ((r / 8.0).round() as usize * 8).clamp(bounds[i - 1] + 1, new - (k - i));
        bounds.push(r);
    }
    bounds.push(new);
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Work of `blocks` (score entries), as [`causal_blocks`] counts it: the sum of
/// `(r1 - r0) x (past + r1)`.
pub fn blocks_work(past: usize, blocks: &[Range<usize>]) -> usize {
    blocks.iter().map(|r| r.len() * (past + r.end)).sum()
}

/// One block of query rows and what it sees.
#[derive(Clone, Debug)]
pub struct QueryBlock<B: Backend, const D: usize> {
    /// The query rows.
    pub rows: Range<usize>,
    /// It sees keys `[0, keys)`.
    pub keys: usize,
    /// Its additive mask, broadcastable to the scores `[..., rows.len(), keys]`, or none.
    pub bias: Option<Tensor<B, D>>,
}

impl<B: Backend, const D: usize> QueryBlock<B, D> {
    /// `softmax(q k^T + bias) v` of this block: `q [..., new, d]`, `kt [..., d, t]`,
    /// `v [..., t, d]` (leading axes broadcast as in `matmul`) -> `[..., rows.len(), d]`.
    fn attend(&self, q: &Tensor<B, D>, kt: &Tensor<B, D>, v: &Tensor<B, D>) -> Tensor<B, D> {
        let (new, t) = (q.dims()[D - 2], kt.dims()[D - 1]);
        let q = if self.rows.len() == new {
            q.clone()
        } else {
            q.clone().narrow(D - 2, self.rows.start, self.rows.len())
        };
        let (kt, v) = if self.keys == t {
            (kt.clone(), v.clone())
        } else {
            (
                kt.clone().narrow(D - 1, 0, self.keys),
                v.clone().narrow(D - 2, 0, self.keys),
            )
        };
        let mut scores = q.matmul(kt);
        if let Some(bias) = &self.bias {
            scores = scores.add(bias.clone());
        }
        crate::host_softmax::softmax_last(scores).matmul(v)
    }
}

/// `softmax(q k^T + bias_i) v` over the query blocks `blocks`, outputs concatenated back in
/// row order: `q [..., new, d]`, `kt [..., d, t]`, `v [..., t, d]` -> `[..., new, d]`. The
/// blocks run on two threads when [`host_parallel`] says so and their number is even (they
/// are cut to equal work: even ones on this thread, odd ones on another), in order otherwise.
pub fn attention<B: Backend, const D: usize>(
    q: Tensor<B, D>,
    kt: Tensor<B, D>,
    v: Tensor<B, D>,
    blocks: &[QueryBlock<B, D>],
) -> Tensor<B, D> {
    let one = |b: &QueryBlock<B, D>| b.attend(&q, &kt, &v);
    if blocks.len() == 1 {
        return one(&blocks[0]);
    }
    let outs: Vec<Tensor<B, D>> =
        if blocks.len().is_multiple_of(2) && host_parallel::<B>(&q.device()) {
            let (even, odd) = rayon::join(
                || blocks.iter().step_by(2).map(one).collect::<Vec<_>>(),
                || {
                    blocks
                        .iter()
                        .skip(1)
                        .step_by(2)
                        .map(one)
                        .collect::<Vec<_>>()
                },
            );
            let mut outs = Vec::with_capacity(blocks.len());
            for (e, o) in even.into_iter().zip(odd) {
                outs.push(e);
                outs.push(o);
            }
            outs
        } else {
            blocks.iter().map(one).collect()
        };
    Tensor::cat(outs, D - 2)
}

/// Two halves of `rows` (query rows, or the positions of a sequence) when [`host_parallel`]
/// and there are enough of them to be worth a second thread; the whole range otherwise.
pub fn parallel_halves<B: Backend>(rows: usize, device: &B::Device) -> Vec<Range<usize>> {
    if rows >= 2 * MIN_BLOCK_ROWS && host_parallel::<B>(device) {
        let half = (rows / 2).next_multiple_of(8);
        vec![0..half, half..rows]
    } else {
        std::iter::once(0..rows).collect()
    }
}

/// `f(i, parts[i])` for every part of `parts` ([`parallel_halves`]), in order; two parts run
/// on two threads.
pub fn map_parts<T: Send>(
    parts: &[Range<usize>],
    f: impl Fn(usize, Range<usize>) -> T + Sync,
) -> Vec<T> {
    match parts {
        [a, b] => {
            let (a, b) = rayon::join(|| f(0, a.clone()), || f(1, b.clone()));
            vec![a, b]
        }
        _ => parts
            .iter()
            .enumerate()
            .map(|(i, r)| f(i, r.clone()))
            .collect(),
    }
}

/// Rows `rows` of `x` along `dim` (`x` itself when they are all of them).
pub fn narrow_rows<B: Backend, const D: usize, K: BasicOps<B>>(
    x: &Tensor<B, D, K>,
    dim: usize,
    rows: &Range<usize>,
) -> Tensor<B, D, K> {
    if rows.start == 0 && rows.end == x.dims()[dim] {
        x.clone()
    } else {
        x.clone().narrow(dim, rows.start, rows.len())
    }
}

/// The parts of [`map_parts`] concatenated along `dim` (a single part as it is).
pub fn cat_parts<B: Backend, const D: usize>(
    mut parts: Vec<Tensor<B, D>>,
    dim: usize,
) -> Tensor<B, D> {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    Tensor::cat(parts, dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_blocks_cover_the_rows_with_equal_work() {
        assert_eq!(causal_blocks(0, 1), vec![0..1]);
        assert_eq!(causal_blocks(5, 100), vec![0..100]);
        // 512 prompt tokens: (208 - 0) x 208 = 43264, 120 x 328 = 39360, 104 x 432 = 44928,
        // 80 x 512 = 40960 score entries.
        let b = causal_blocks(0, 512);
        assert_eq!(b, vec![0..208, 208..328, 328..432, 432..512]);
        // Work per block within 15 % of a quarter of the total; total 64 % of the square.
        let total = blocks_work(0, &b);
        for r in &b {
            let w = blocks_work(0, std::slice::from_ref(r)) as f64;
            assert!((w / (total as f64 / 4.0) - 1.0).abs() < 0.15, "{r:?}: {w}");
        }
        assert_eq!(total, 168_512);
        // Two blocks at 128 rows (80 x 80 and 48 x 128); with a long cache the cut moves
        // towards the middle.
        assert_eq!(causal_blocks(0, 128), vec![0..80, 80..128]);
        let c = causal_blocks(1000, 128);
        assert_eq!(c.len(), 2);
        assert!(c[0].end >= 56 && c[0].end <= 72, "{c:?}");
    }

    /// Causal blocks over a cache of 40 positions and 200 new queries against one block with
    /// the full causal mask: the same outputs and the same gradients of q, k and v (f32
    /// summation order apart), with autodiff (blocks in order) and without (on two threads
    /// where the machine has two).
    #[test]
    fn causal_blocks_equal_full_attention_and_its_gradients() {
        use burn::backend::{Autodiff, Flex};
        use burn::tensor::{Distribution, TensorData};
        type Ad = Autodiff<Flex>;

        let (past, new, d) = (40usize, 200usize, 16usize);
        let t = past + new;
        let blocks = causal_blocks(past, new);
        assert_eq!(blocks.len(), 2);
        let device = Default::default();
        let rand = |shape: [usize; 4]| {
            Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device).into_data()
        };
        let (q, kt, v) = (rand([1, 3, new, d]), rand([1, 3, d, t]), rand([1, 3, t, d]));
        let w = rand([1, 3, new, d]);
        // Causal mask of rows [r0, r1) over keys [0, keys): hidden where key > past + row.
        let mask = |rows: &Range<usize>, keys: usize| -> TensorData {
            let mut m = Vec::with_capacity(rows.len() * keys);
            for i in rows.clone() {
                m.extend((0..keys).map(|j| if j <= past + i { 0.0f32 } else { f32::MIN }));
            }
            TensorData::new(m, [1, 1, rows.len(), keys])
        };

        fn run<Bk: Backend>(
            q: &TensorData,
            kt: &TensorData,
            v: &TensorData,
            blocks: Vec<(Range<usize>, usize, TensorData)>,
        ) -> Vec<f32> {
            let device = Default::default();
            let t = |x: &TensorData| Tensor::<Bk, 4>::from_data(x.clone(), &device);
            let blocks: Vec<QueryBlock<Bk, 4>> = blocks
                .into_iter()
                .map(|(rows, keys, m)| QueryBlock {
                    rows,
                    keys,
                    bias: Some(t(&m)),
                })
                .collect();
            let out = attention(t(q), t(kt), t(v), &blocks);
            out.into_data().into_vec::<f32>().unwrap()
        }

        let full = vec![(0..new, t, mask(&(0..new), t))];
        let cut: Vec<_> = blocks
            .iter()
            .map(|r| (r.clone(), past + r.end, mask(r, past + r.end)))
            .collect();
        let close = |a: &[f32], b: &[f32], what: &str| {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{what}: max abs diff {worst}");
        };

        // Forward on the plain backend (threaded blocks where there are two cores).
        let want = run::<Flex>(&q, &kt, &v, full.clone());
        let got = run::<Flex>(&q, &kt, &v, cut.clone());
        close(&got, &want, "flex output");

        // Gradients through autodiff.
        let grads = |blocks: Vec<(Range<usize>, usize, TensorData)>| {
            let device = Default::default();
            let leaf =
                |x: &TensorData| Tensor::<Ad, 4>::from_data(x.clone(), &device).require_grad();
            let (q1, kt1, v1) = (leaf(&q), leaf(&kt), leaf(&v));
            let blocks: Vec<QueryBlock<Ad, 4>> = blocks
                .into_iter()
                .map(|(rows, keys, m)| QueryBlock {
                    rows,
                    keys,
                    bias: Some(Tensor::from_data(m, &device)),
                })
                .collect();
            let out = attention(q1.clone(), kt1.clone(), v1.clone(), &blocks);
            let values = out.clone().into_data().into_vec::<f32>().unwrap();
            let g = out
                .mul(Tensor::from_data(w.clone(), &device))
                .sum()
                .backward();
            let get =
                |x: &Tensor<Ad, 4>| x.grad(&g).unwrap().into_data().into_vec::<f32>().unwrap();
            (values, get(&q1), get(&kt1), get(&v1))
        };
        let (o_full, gq_full, gk_full, gv_full) = grads(full);
        let (o_cut, gq_cut, gk_cut, gv_cut) = grads(cut);
        close(&o_cut, &o_full, "autodiff output");
        close(&gq_cut, &gq_full, "grad q");
        close(&gk_cut, &gk_full, "grad k^T");
        close(&gv_cut, &gv_full, "grad v");
        close(&o_full, &want, "autodiff vs flex");
    }
}
