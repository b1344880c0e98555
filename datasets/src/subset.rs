//! Fixed random subsets of data sets, written in the lossless `examples` format
//! ([`crate::Format::Examples`]): a study samples each file once (its own seed, independent of
//! the training seeds) and every later step reads the same examples by their ids.

use std::io::Write;
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::{DataError, Example, Result};

/// `n` examples drawn without replacement with `seed`, kept in their file order (all of them
/// when `n` is at least their number). The same `(examples, n, seed)` always gives the same
/// subset, and a larger `n` with the same seed keeps every example of a smaller one.
pub fn sample(examples: &[Example], n: usize, seed: u64) -> Vec<Example> {
    if n >= examples.len() {
        return examples.to_vec();
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut keep: Vec<usize> = order[..n].to_vec();
    keep.sort_unstable();
    keep.into_iter().map(|i| examples[i].clone()).collect()
}

/// Writes `examples` as an `examples` file (one JSON object per line), through a `.tmp` file
/// renamed into place: a reader never sees half a file.
pub fn write_examples(path: &Path, examples: &[Example]) -> Result<()> {
    let io = |e: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    for ex in examples {
        let line =
            serde_json::to_string(ex).map_err(|e| DataError::InvalidArgument(e.to_string()))?;
        writeln!(f, "{line}").map_err(io)?;
    }
    f.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
