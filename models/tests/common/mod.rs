//! Shared helpers of the fixture tests: paths and reading reference tensors.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

/// `models/tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// A reference tensor: shape and values (floats or ints, as f64 / i64).
#[derive(Clone, Debug)]
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub f: Vec<f32>,
    pub i: Vec<i64>,
}

/// All tensors of a `reference.safetensors`.
pub fn reference(path: PathBuf) -> HashMap<String, RefTensor> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("valid reference file");
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let data = v.data();
            let (f, i) = match v.dtype() {
                Dtype::F32 => (
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    Vec::new(),
                ),
                Dtype::I64 => (
                    Vec::new(),
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                other => panic!("unexpected dtype {other:?} for {name}"),
            };
            (
                name,
                RefTensor {
                    shape: v.shape().to_vec(),
                    f,
                    i,
                },
            )
        })
        .collect()
}

/// Rows of an int `[b, s]` reference tensor.
pub fn rows(t: &RefTensor) -> Vec<Vec<i64>> {
    let s = t.shape[1];
    t.i.chunks(s).map(<[i64]>::to_vec).collect()
}
