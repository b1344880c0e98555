//! The GGUF container: header, metadata key/values, tensor index and tensor data.
//!
//! Layout (GGUF v2 and v3, little-endian):
//!
//! ```text
//! "GGUF" u32 version  u64 tensor_count  u64 kv_count
//! kv_count x  { string key, u32 value_type, value }
//! tensor_count x { string name, u32 n_dims, n_dims x u64 ne, u32 ggml_type, u64 offset }
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor at data_start + offset
//! ```
//!
//! A string is a u64 byte length and UTF-8 bytes; an array is a u32 item type, a u64 length
//! and the items. `ne[0]` is the fastest-varying dimension, so the row-major shape is `ne`
//! reversed: a HF `[out, in]` matrix is stored with `ne = [in, out]`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{GgufError, Result};
use super::quant::{GgmlType, SUPPORTED_TYPES, dequantize};

/// The default alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (one byte, 0 or 1).
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: items of one type.
    Array(Vec<MetaValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl MetaValue {
    /// The GGUF name of the value's type (`u32`, `string`, `array`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }

    /// A non-negative integer of any integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// An integer of any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float, or an integer converted to one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array's items.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One entry of the tensor index.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's GGUF name.
    pub name: String,
    /// ggml's dimensions, fastest-varying first (`ne`).
    pub ne: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The row-major shape (`ne` reversed), as HF and Burn write shapes.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of elements.
    pub fn n_elements(&self) -> usize {
        self.ne.iter().product::<u64>() as usize
    }

    /// The number of bytes of the tensor's data, or `None` when the element count or the
    /// byte count overflows `u64` or is not whole blocks (an untrusted header can claim
    /// anything; [`GgufFile`] refuses such a tensor when the file is opened).
    fn checked_n_bytes(&self) -> Option<u64> {
        checked_bytes(&self.ne, self.ggml_type)
    }

    /// The number of bytes of the tensor's data (validated when the file is opened).
    pub fn n_bytes(&self) -> usize {
        self.ggml_type.bytes_for(self.n_elements()).unwrap_or(0)
    }
}

/// Bytes of a tensor of `ne` elements of `ty`, or `None` on overflow or partial blocks.
fn checked_bytes(ne: &[u64], ty: GgmlType) -> Option<u64> {
    let n = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
    let (bs, ts) = ty.block();
    if !n.is_multiple_of(bs as u64) {
        return None;
    }
    (n / bs as u64).checked_mul(ts as u64)
}

enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened GGUF file: metadata and tensor index parsed and validated, data mapped.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    /// The GGUF version (2 or 3).
    pub version: u32,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Absolute offset of the data section.
    pub data_start: u64,
    /// The data alignment (`general.alignment` or 32).
    pub alignment: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                start: self.pos as u64,
                end: self.pos as u64 + n as u64,
                len: self.buf.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that take at least `min_item_bytes` each, checked against the rest
    /// of the file so a corrupt count fails cleanly instead of allocating.
    fn count(&mut self, min_item_bytes: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let n = self.u64(what)?;
        let rest = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes as u64) > rest {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{} ({n} items)", what()),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(n.saturating_mul(min_item_bytes as u64)),
                len: self.buf.len() as u64,
            });
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| GgufError::Malformed {
            path: self.path.to_path_buf(),
            what: what(),
            reason: format!("string is not UTF-8 ({e})"),
        })
    }

    fn value(&mut self, ty: u32, what: &dyn Fn() -> String) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(what)?[0]),
            1 => MetaValue::I8(self.array::<1>(what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(GgufError::Malformed {
                        path: self.path.to_path_buf(),
                        what: what(),
                        reason: format!("bool byte {b} is neither 0 nor 1"),
                    });
                }
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                let item = self.u32(what)?;
                if item == 9 {
                    // Nested arrays are legal GGUF; their items have no fixed size.
                    let n = self.count(12, what)?;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.value(9, what)?);
                    }
                    return Ok(MetaValue::Array(items));
                }
                let min = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => 1,
                };
                let n = self.count(min, what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item, what)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(GgufError::Malformed {
                    path: self.path.to_path_buf(),
                    what: what(),
                    reason: format!("unknown metadata value type {other}"),
                });
            }
        })
    }
}

impl GgufFile {
    /// Opens and memory-maps a GGUF file, parsing and validating its header, metadata and
    /// tensor index (every tensor's data must lie inside the file).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the file is opened read-only and only read while mapped; as with every
        // memory-mapped checkpoint loader, modifying the file concurrently is not supported.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), Bytes::Map(map))
    }

    /// Parses a GGUF image held in memory; `name` stands for the file in messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(name.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let mut c = Cursor {
            buf: &bytes,
            pos: 0,
            path: &path,
        };
        let magic = c
            .take(4, &|| "magic".into())
            .map_err(|_| GgufError::BadMagic {
                path: path.clone(),
                found: bytes[..bytes.len().min(4)].to_vec(),
            })?;
        if magic != b"GGUF" {
            return Err(GgufError::BadMagic {
                path: path.clone(),
                found: magic.to_vec(),
            });
        }
        let version = c.u32(&|| "version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion {
                path: path.clone(),
                version,
            });
        }
        // Each tensor-info entry takes at least 8 + 4 + 4 + 8 bytes, each kv 8 + 4 + 1.
        let n_tensors = c.count(24, &|| "tensor_count".into())?;
        let n_kv = c.count(13, &|| "kv_count".into())?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut meta_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key #{i}"))?;
            let what = || format!("metadata {key}");
            let ty = c.u32(&what)?;
            let value = c.value(ty, &what)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Malformed {
                    path: path.clone(),
                    what: what(),
                    reason: "duplicate key".into(),
                });
            }
            metadata.push((key, value));
        }
        let alignment = match meta_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => match metadata[i].1.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::Malformed {
                        path: path.clone(),
                        what: "metadata general.alignment".into(),
                        reason: format!("{:?} is not a power of two", metadata[i].1),
                    });
                }
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor #{i} name"))?;
            let what = || format!("tensor {name}");
            let malformed = |reason: String| GgufError::Malformed {
                path: path.clone(),
                what: what(),
                reason,
            };
            let n_dims = c.u32(&what)?;
            if n_dims > 4 {
                return Err(malformed(format!(
                    "{n_dims} dimensions (ggml allows at most 4)"
                )));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(c.u64(&what)?);
            }
            let type_id = c.u32(&what)?;
            let ggml_type = GgmlType::from_id(type_id)
                .ok_or_else(|| malformed(format!("unknown ggml type id {type_id}")))?;
            let offset = c.u64(&what)?;
            let n = ne
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= usize::MAX as u64 / 8)
                .ok_or_else(|| malformed(format!("dimensions {ne:?} overflow")))?;
            if ggml_type.bytes_for(n as usize).is_none()
                || ne
                    .first()
                    .is_some_and(|d0| d0 % ggml_type.block().0 as u64 != 0)
            {
                return Err(malformed(format!(
                    "dimensions {ne:?} are not whole {} blocks of {}",
                    ggml_type.name(),
                    ggml_type.block().0
                )));
            }
            if !offset.is_multiple_of(alignment) {
                return Err(malformed(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(malformed("duplicate tensor name".into()));
            }
            if checked_bytes(&ne, ggml_type).is_none_or(|b| b > usize::MAX as u64) {
                return Err(malformed(format!(
                    "dimensions {ne:?} of {} give a size that overflows",
                    ggml_type.name()
                )));
            }
            tensors.push(TensorInfo {
                name,
                ne,
                ggml_type,
                offset,
            });
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let len = bytes.len() as u64;
        for t in &tensors {
            // Checked: an offset near u64::MAX must not wrap around to a small position.
            let size = t.checked_n_bytes().unwrap_or(u64::MAX);
            let (Some(start), Some(end)) = (
                data_start.checked_add(t.offset),
                data_start
                    .checked_add(t.offset)
                    .and_then(|s| s.checked_add(size)),
            ) else {
                return Err(GgufError::Malformed {
                    path: path.clone(),
                    what: format!("tensor {}", t.name),
                    reason: format!(
                        "data offset {} + {size} bytes overflows the file position",
                        t.offset
                    ),
                });
            };
            if end > len {
                return Err(GgufError::Truncated {
                    path: path.clone(),
                    what: format!("tensor {} ({}, shape {:?})", t.name, t.ggml_type, t.shape()),
                    start,
                    end,
                    len,
                });
            }
        }
        Ok(Self {
            path,
            bytes,
            version,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            data_start,
            alignment,
        })
    }

    /// The file's path (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.into(),
        })
    }

    fn key_type(&self, key: &str, expected: &str, found: &MetaValue) -> GgufError {
        GgufError::KeyType {
            path: self.path.clone(),
            key: key.into(),
            expected: expected.into(),
            found: found.type_name().into(),
        }
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.key_type(key, "string", v))
    }

    /// A required non-negative integer value (any integer type).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.key_type(key, "non-negative integer", v))
    }

    /// A required number (float or integer).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.key_type(key, "number", v))
    }

    /// A required array.
    pub fn get_array(&self, key: &str) -> Result<&[MetaValue]> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.key_type(key, "array", v))
    }

    /// An optional value that must have the right type when present.
    pub fn opt<T>(
        &self,
        key: &str,
        expected: &str,
        f: impl Fn(&MetaValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v)
                .map(Some)
                .ok_or_else(|| self.key_type(key, expected, v)),
        }
    }

    /// The tensor index, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor's index entry.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                tensor: name.into(),
            })?;
        let start = (self.data_start + t.offset) as usize;
        // In bounds: checked when the file was opened.
        Ok(&self.bytes[start..start + t.n_bytes()])
    }

    /// A tensor dequantised to f32, row-major, with its row-major shape.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let bytes = self.tensor_bytes(name)?;
        // `tensor_bytes` found it.
        let t = &self.tensors[self.tensor_index[name]];
        let values = dequantize(t.ggml_type, bytes).ok_or_else(|| GgufError::UnsupportedType {
            path: self.path.clone(),
            tensor: name.into(),
            ggml_type: t.ggml_type.to_string(),
            supported: SUPPORTED_TYPES.into(),
        })?;
        Ok((values, t.shape()))
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}
