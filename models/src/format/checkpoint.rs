//! The checkpoint layer shared by every model and file format: tensors by name from Hugging
//! Face safetensors (`model.safetensors` or a sharded `model.safetensors.index.json`, f32 /
//! f16 / bf16, memory-mapped) or from memory (GGUF and CTranslate2 readers fill a
//! [`Checkpoint`] with their converted tensors), and the [`Builder`] that turns named tensors
//! into frozen Burn parameters and linears on a device.
//!
//! Every tensor is converted to f32 on the host (exact for f16 and bf16) and handed to the
//! backend, which stores it in its own float type. HF linear weights `[out, in]` are
//! transposed to Burn's `[in, out]` once, on the host.
//!
//! Errors name the file and the tensor: a corrupt or truncated file, a tensor the model needs
//! but the checkpoint lacks, a tensor of the wrong shape, and tensors the model does not use.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::error::{FormatError, Result, io_err};

/// One memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    map: Mmap,
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_err(path))?;
        // SAFETY: the file is opened read-only and only read while mapped; as with every
        // memory-mapped checkpoint loader, modifying the file concurrently is not supported.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        // Validate the header and offsets once (truncated or corrupt files fail here).
        SafeTensors::deserialize(&map).map_err(|e| FormatError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    fn view(&self) -> SafeTensors<'_> {
        // Validated in `open`.
        SafeTensors::deserialize(&self.map).expect("safetensors header validated at open")
    }
}

/// The tensors of a checkpoint, possibly spread over shards, with bookkeeping of which ones
/// were used.
pub struct Checkpoint {
    /// The index file, or the single safetensors file (for messages about the whole set).
    origin: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name -> shard.
    location: HashMap<String, usize>,
    /// Tensors held in memory (e.g. dequantised from GGUF), looked up before the shards.
    memory: HashMap<String, TensorData>,
    /// A random checkpoint ([`Checkpoint::random`]): the seed every tensor is drawn from.
    random: Option<u64>,
    used: BTreeSet<String>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` (and its shards) or `dir/model.safetensors`,
    /// or a single `.safetensors` file given directly.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.is_file() {
            return Self::single(dir);
        }
        if !dir.is_dir() {
            return Err(FormatError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            });
        }
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            return Self::sharded(&index);
        }
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Self::single(&single);
        }
        Err(FormatError::NoWeights {
            dir: dir.to_path_buf(),
        })
    }

    fn single(path: &Path) -> Result<Self> {
        let shard = Shard::open(path)?;
        let location = shard
            .view()
            .names()
            .into_iter()
            .map(|n| (n.to_string(), 0))
            .collect();
        Ok(Self {
            origin: path.to_path_buf(),
            shards: vec![shard],
            location,
            memory: HashMap::new(),
            random: None,
            used: BTreeSet::new(),
        })
    }

    fn sharded(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(io_err(index))?;
        let value: Value = serde_json::from_str(&text).map_err(|source| FormatError::Json {
            path: index.to_path_buf(),
            source,
        })?;
        let Some(map) = value.get("weight_map").and_then(Value::as_object) else {
            return Err(FormatError::ConfigField {
                path: index.to_path_buf(),
                field: "weight_map".into(),
                reason: "missing or not an object".into(),
            });
        };
        let base = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<Shard> = Vec::new();
        let mut by_file: HashMap<String, usize> = HashMap::new();
        let mut location = HashMap::new();
        for (tensor, file) in map {
            let Some(file) = file.as_str() else {
                return Err(FormatError::ConfigField {
                    path: index.to_path_buf(),
                    field: format!("weight_map.{tensor}"),
                    reason: "expected a file name".into(),
                });
            };
            // HF writes shard names as plain file names next to the index; anything else (an
            // absolute path, `..`, a subdirectory) would read files outside the checkpoint.
            let plain = Path::new(file)
                .file_name()
                .is_some_and(|n| n == std::ffi::OsStr::new(file))
                && !file.contains(['/', '\\']);
            if !plain {
                return Err(FormatError::ConfigField {
                    path: index.to_path_buf(),
                    field: format!("weight_map.{tensor}"),
                    reason: format!(
                        "shard {file:?} is not a plain file name in the index's directory"
                    ),
                });
            }
            let idx = match by_file.get(file) {
                Some(&i) => i,
                None => {
                    shards.push(Shard::open(&base.join(file))?);
                    by_file.insert(file.to_string(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            location.insert(tensor.clone(), idx);
        }
        Ok(Self {
            origin: index.to_path_buf(),
            shards,
            location,
            memory: HashMap::new(),
            random: None,
            used: BTreeSet::new(),
        })
    }

    /// An in-memory checkpoint (HF tensor names, any float dtype; e.g. tensors dequantised
    /// from a GGUF file); `origin` names its source in error messages.
    pub fn from_tensors(
        origin: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, TensorData)>,
    ) -> Self {
        Self {
            origin: origin.into(),
            shards: Vec::new(),
            location: HashMap::new(),
            memory: tensors.into_iter().collect(),
            random: None,
            used: BTreeSet::new(),
        }
    }

    /// A checkpoint of random weights for benchmarks and shape experiments: every tensor the
    /// builder asks for exists with the asked shape, drawn from `seed` and the tensor's name
    /// (so a tensor is the same whatever order it is read in). Norm weights (`*norm.weight`)
    /// are 1, biases 0, everything else `N(0, 0.02)` (transformers' `initializer_range`).
    pub fn random(seed: u64) -> Self {
        Self {
            origin: PathBuf::from(format!("<random weights, seed {seed}>")),
            shards: Vec::new(),
            location: HashMap::new(),
            memory: HashMap::new(),
            random: Some(seed),
            used: BTreeSet::new(),
        }
    }

    fn random_tensor(seed: u64, name: &str, shape: &[usize]) -> TensorData {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let n: usize = shape.iter().product();
        let values = if name.ends_with("norm.weight") {
            vec![1.0f32; n]
        } else if name.ends_with(".bias") {
            vec![0.0f32; n]
        } else {
            // FNV-1a of the name, mixed with the seed.
            let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            let mut rng = rand::rngs::StdRng::seed_from_u64(h ^ seed);
            let normal = rand_distr::Normal::new(0.0f32, 0.02).expect("finite std");
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        TensorData::new(values, shape.to_vec())
    }

    /// The names of the tensors not yet read (sorted); empty for a random checkpoint, whose
    /// tensors exist only when asked for.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .location
            .keys()
            .chain(self.memory.keys())
            .filter(|n| !self.used.contains(*n))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The shape of tensor `name` as stored, if the checkpoint holds it and it was not read yet.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(data) = self.memory.get(name) {
            return Some(data.shape.to_vec());
        }
        let shard = &self.shards[*self.location.get(name)?];
        Some(shard.view().tensor(name).ok()?.shape().to_vec())
    }

    /// Whether the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.random.is_some()
            || self.location.contains_key(name)
            || self.memory.contains_key(name)
            || self.used.contains(name)
    }

    /// Reads tensor `name`, checks it has shape `expected`, and converts it to f32. Each tensor
    /// is read once (an in-memory tensor is handed over, not copied).
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<TensorData> {
        if let Some(seed) = self.random {
            self.used.insert(name.to_string());
            return Ok(Self::random_tensor(seed, name, expected));
        }
        if let Some(data) = self.memory.get(name) {
            if data.shape.as_slice() != expected {
                return Err(FormatError::ShapeMismatch {
                    path: self.origin.clone(),
                    tensor: name.to_string(),
                    expected: expected.to_vec(),
                    got: data.shape.to_vec(),
                });
            }
            // Moved out, not cloned: an in-memory checkpoint (a dequantised GGUF file) shrinks
            // as the model is built, so loading peaks near one copy of the weights, not two.
            let data = self.memory.remove(name).expect("present: checked above");
            self.used.insert(name.to_string());
            return Ok(data.convert::<f32>());
        }
        let Some(&idx) = self.location.get(name) else {
            return Err(FormatError::MissingTensor {
                path: self.origin.clone(),
                tensor: name.to_string(),
            });
        };
        let shard = &self.shards[idx];
        let st = shard.view();
        let view = st.tensor(name).map_err(|_| FormatError::MissingTensor {
            path: shard.path.clone(),
            tensor: name.to_string(),
        })?;
        if view.shape() != expected {
            return Err(FormatError::ShapeMismatch {
                path: shard.path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let Some(values) = decode_f32(view.dtype(), view.data()) else {
            return Err(FormatError::UnsupportedDtype {
                path: shard.path.clone(),
                tensor: name.to_string(),
                dtype: format!("{:?}", view.dtype()),
            });
        };
        self.used.insert(name.to_string());
        Ok(TensorData::new(values, expected.to_vec()))
    }

    /// Errors with the names of the tensors that were never taken, except those `ignore`
    /// accepts.
    pub fn finish(&self, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let mut unused: Vec<String> = self
            .location
            .keys()
            .chain(self.memory.keys())
            .filter(|k| !self.used.contains(*k) && !ignore(k))
            .cloned()
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        unused.sort();
        Err(FormatError::UnexpectedTensors {
            path: self.origin.clone(),
            tensors: unused,
        })
    }
}

/// Builds modules from checkpoint tensors on one device (Llama's loader, and the base of
/// Whisper's).
pub(crate) struct Builder<'a, B: Backend> {
    pub(crate) ckpt: &'a mut Checkpoint,
    pub(crate) device: &'a B::Device,
    /// Storage type of frozen matrices (linear weights, embeddings): each is converted from
    /// the checkpoint on the host, one tensor at a time, so a half-precision model never
    /// exists as a whole in f32 (mixed precision, `flexi_burn::precision`). Norms and biases
    /// keep f32.
    pub(crate) matrices: flexi_burn::Precision,
}

impl<B: Backend> Builder<'_, B> {
    pub(crate) fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<B, D>> {
        let data = self.ckpt.take(name, &shape)?;
        Ok(Tensor::from_data(data, self.device))
    }

    pub(crate) fn frozen<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Param<Tensor<B, D>>> {
        Ok(Param::from_tensor(self.tensor(name, shape)?).set_require_grad(false))
    }

    /// A frozen matrix (an embedding table) in the builder's storage type for matrices.
    pub(crate) fn frozen_matrix(
        &mut self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Param<Tensor<B, 2>>> {
        let data = self.ckpt.take(name, &shape)?;
        Ok(Param::from_tensor(self.matrix(data)).set_require_grad(false))
    }

    /// Host data as a device tensor in the storage type for matrices.
    fn matrix(&self, data: TensorData) -> Tensor<B, 2> {
        match self.matrices.half() {
            Some(half) => Tensor::from_data(data, (self.device, DType::from(half))),
            None => Tensor::from_data(data, self.device),
        }
    }

    /// A frozen Linear from HF `{prefix}.weight [d_out, d_in]` (+ `{prefix}.bias [d_out]`).
    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Linear<B>> {
        // Transposed on the host, once: a strided [in, out] view would be made contiguous
        // again by every matmul.
        let hf = self
            .ckpt
            .take(&format!("{prefix}.weight"), &[d_out, d_in])?; // [out, in]
        let w = self.matrix(transpose_host(hf, d_out, d_in)); // [in, out]
        let bias = match bias {
            true => Some(self.frozen(&format!("{prefix}.bias"), [d_out])?),
            false => None,
        };
        Ok(Linear {
            weight: Param::from_tensor(w),
            bias,
        }
        .no_grad())
    }
}

/// `[rows, cols]` f32 data -> `[cols, rows]`.
pub(crate) fn transpose_host(data: TensorData, rows: usize, cols: usize) -> TensorData {
    let src = data
        .as_slice::<f32>()
        .expect("checkpoint tensors are converted to f32");
    let mut out = vec![0f32; rows * cols];
    for (r, row) in src.chunks_exact(cols).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            out[c * rows + r] = x;
        }
    }
    TensorData::new(out, [cols, rows])
}

/// A safetensors tensor's little-endian bytes as f32 values (F32, F16 or BF16; `None` for
/// other dtypes).
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// f32 values as a safetensors tensor's little-endian bytes in `dtype` (F32, F16 or BF16;
/// `None` for other dtypes): the inverse of [`decode_f32`] up to `dtype`'s rounding.
pub fn encode_f32(values: &[f32], dtype: Dtype) -> Option<Vec<u8>> {
    Some(match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => return None,
    })
}
