//! Batching: padding (left or right), attention masks, seeded shuffling.
//!
//! A [`Batch`] holds row-major `[batch, seq]` vectors ready to become tensors.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::tokenize::{Encoded, IGNORE_INDEX};

/// Where padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadSide {
    /// Pad after the tokens (training).
    #[default]
    Right,
    /// Pad before the tokens (batched generation).
    Left,
}

/// A padded batch, row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Example ids, one per row.
    pub ids: Vec<String>,
    /// Rows.
    pub batch_size: usize,
    /// Columns (longest row).
    pub seq_len: usize,
    /// Token ids, padding filled with the pad id.
    pub input_ids: Vec<u32>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
    /// Labels, [`IGNORE_INDEX`] on padding.
    pub labels: Vec<i64>,
    /// BOS + prompt length of each row (before padding).
    pub prompt_lens: Vec<usize>,
}

impl Batch {
    /// Row `i`: `(ids, mask, labels)`.
    pub fn row(&self, i: usize) -> Option<(&[u32], &[u32], &[i64])> {
        if i >= self.batch_size {
            return None;
        }
        let r = i * self.seq_len..(i + 1) * self.seq_len;
        Some((
            &self.input_ids[r.clone()],
            &self.attention_mask[r.clone()],
            &self.labels[r],
        ))
    }

    /// Number of label positions that count in the loss.
    pub fn label_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// Pads encoded examples into one batch.
pub fn collate(items: &[&Encoded], pad_id: u32, side: PadSide) -> Batch {
    let seq_len = items.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
    let n = items.len();
    let mut b = Batch {
        ids: Vec::with_capacity(n),
        batch_size: n,
        seq_len,
        input_ids: Vec::with_capacity(n * seq_len),
        attention_mask: Vec::with_capacity(n * seq_len),
        labels: Vec::with_capacity(n * seq_len),
        prompt_lens: Vec::with_capacity(n),
    };
    for e in items {
        let pad = seq_len - e.input_ids.len();
        let pad_row = |b: &mut Batch| {
            b.input_ids.extend(std::iter::repeat_n(pad_id, pad));
            b.attention_mask.extend(std::iter::repeat_n(0, pad));
            b.labels.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
        };
        if side == PadSide::Left {
            pad_row(&mut b);
        }
        b.input_ids.extend_from_slice(&e.input_ids);
        b.attention_mask
            .extend(std::iter::repeat_n(1, e.input_ids.len()));
        b.labels.extend_from_slice(&e.labels);
        if side == PadSide::Right {
            pad_row(&mut b);
        }
        b.ids.push(e.id.clone());
        b.prompt_lens.push(e.prompt_len);
    }
    b
}

/// `0..n` shuffled with a seeded `StdRng` (same seed, same order).
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    idx
}

/// Shuffles a slice in place with a seeded `StdRng`.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    items.shuffle(&mut StdRng::seed_from_u64(seed));
}

/// Groups of indices of size `batch_size` (the last may be smaller unless `drop_last`),
/// shuffled when `seed` is given.
pub fn batch_indices(
    n: usize,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
) -> Vec<Vec<usize>> {
    let bs = batch_size.max(1);
    let order = match seed {
        Some(s) => shuffled_indices(n, s),
        None => (0..n).collect(),
    };
    order
        .chunks(bs)
        .filter(|c| !drop_last || c.len() == bs)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Padded batches over `items` (shuffled with `seed` when given; one epoch).
pub fn batches<'a>(
    items: &'a [Encoded],
    batch_size: usize,
    pad_id: u32,
    side: PadSide,
    seed: Option<u64>,
) -> impl Iterator<Item = Batch> + 'a {
    batch_indices(items.len(), batch_size, seed, false)
        .into_iter()
        .map(move |idx| {
            let rows: Vec<&Encoded> = idx.iter().map(|&i| &items[i]).collect();
            collate(&rows, pad_id, side)
        })
}
