//! The LM head (hidden -> vocabulary logits) of a one-row decoding step, on two threads.
//!
//! A decoding step multiplies one row per sequence by the whole `[hidden, vocab]` head: at
//! batch 1 that is a matrix-vector product, which gemm runs as a single-threaded gemv whatever
//! parallelism it is given, and which reads the largest matrix of a small model on every token
//! (80 MB in f32 for Whisper tiny, 113 MB for SmolLM2). It is memory-bound, so on the CPU
//! backend without autodiff ([`crate::sdpa::host_parallel`]) a one-row product is cut into two
//! halves of the vocabulary on two threads. Each half reads its own contiguous half of the
//! embedding (the tied head's rows) or half of every row of an untied head; the logits are the
//! same numbers (each is the same dot product), only concatenated.
//!
//! It pays where the head comes from the CPU's last-level cache, two cores reading it at
//! nearly twice one core's rate: Whisper's decoder (its weights, head and the cross-attention
//! keys and values about 140 MB) on a Xeon with a 260 MB L3, where the decoding step went from
//! 11.1 to 10.0 ms. A model whose weights stream from DRAM every token gains nothing: for
//! SmolLM2 (540 MB) the split measured 2.5 % slower (six alternated pairs), so Llama keeps its
//! one product (`Llama::lm_head_rows`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::sdpa::{host_parallel, map_parts};

/// Vocabularies below this many entries are not split: the second thread's wake-up would
/// cost about what it saves.
const MIN_SPLIT_VOCAB: usize = 8192;

/// `h [rows, hidden] @ w [hidden, vocab] -> [rows, vocab]` through
/// [`flexi_burn::linear_mixed`] (in `w`'s type when it is a half type). `w` may be any view:
/// the tied head's `embed^T` or an untied head's weight. One row on [`host_parallel`]: the
/// two halves of the vocabulary on two threads.
pub fn head_rows<B: Backend>(h: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rows, _] = h.dims();
    let vocab = w.dims()[1];
    if rows != 1 || vocab < MIN_SPLIT_VOCAB || !host_parallel::<B>(&h.device()) {
        return flexi_burn::linear_mixed(h, w, None);
    }
    let half = (vocab / 2).next_multiple_of(16);
    let parts = [0..half, half..vocab];
    let logits = map_parts(&parts, |_, r| {
        flexi_burn::linear_mixed(h.clone(), w.clone().narrow(1, r.start, r.len()), None)
    });
    Tensor::cat(logits, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    /// The split product equals the whole one exactly, for the tied head's transposed view
    /// and for an untied `[hidden, vocab]` weight (rayon's pool has two threads here, so the
    /// split path runs).
    #[test]
    fn split_head_equals_one_product() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("thread pool");
        pool.install(|| {
            let device = Default::default();
            let (hidden, vocab) = (64, 10_003);
            let h = Tensor::<B, 2>::random([1, hidden], Distribution::Default, &device);
            let embed = Tensor::<B, 2>::random([vocab, hidden], Distribution::Default, &device);
            assert!(host_parallel::<B>(&device));
            // The untied head's weight, written out `[hidden, vocab]` row-major.
            let untied = Tensor::<B, 2>::from_data(embed.clone().transpose().into_data(), &device);
            for w in [embed.transpose(), untied] {
                let whole = h.clone().matmul(w.clone()).into_data();
                let split = head_rows(h.clone(), w);
                assert_eq!(split.dims(), [1, vocab]);
                let (whole, split) = (
                    whole.to_vec::<f32>().expect("f32"),
                    split.into_data().to_vec::<f32>().expect("f32"),
                );
                assert_eq!(whole, split, "each logit is the same dot product");
            }
        });
    }
}
