//! CTranslate2's `model.bin`.
//!
//! Layout (binary version 6, the one `ctranslate2` 3.x/4.x writes; little-endian; a string is
//! a u16 byte length counting a trailing NUL, the bytes, and the NUL):
//!
//! ```text
//! u32 binary_version  string spec_name  u32 spec_revision
//! u32 n_variables
//!   n_variables x { string name, u8 rank, rank x u32 dims, u8 dtype, u32 n_bytes, data }
//! u32 n_aliases
//!   n_aliases x { string alias, string variable }
//! ```
//!
//! dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Quantised weights
//! carry a sibling `{name}_scale` (`weight` -> `weight_scale`): int8 has one f32 scale per
//! row, int16 one for the whole tensor, and the float value is `q / scale`. Scalars (rank 0)
//! hold settings such as `num_heads` or `activation`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::error::{Ct2Error, Result};

/// The binary versions this reader parses.
pub const SUPPORTED_VERSIONS: &[u32] = &[6];

/// A variable's storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ct2Dtype {
    /// float32 (id 0).
    F32,
    /// int8 (id 1).
    I8,
    /// int16 (id 2).
    I16,
    /// int32 (id 3).
    I32,
    /// float16 (id 4).
    F16,
    /// bfloat16 (id 5).
    BF16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Ct2Dtype::F32,
            1 => Ct2Dtype::I8,
            2 => Ct2Dtype::I16,
            3 => Ct2Dtype::I32,
            4 => Ct2Dtype::F16,
            5 => Ct2Dtype::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Ct2Dtype::I8 => 1,
            Ct2Dtype::I16 | Ct2Dtype::F16 | Ct2Dtype::BF16 => 2,
            Ct2Dtype::F32 | Ct2Dtype::I32 => 4,
        }
    }

    /// CTranslate2's name (`float16`, `int8`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Ct2Dtype::F32 => "float32",
            Ct2Dtype::I8 => "int8",
            Ct2Dtype::I16 => "int16",
            Ct2Dtype::I32 => "int32",
            Ct2Dtype::F16 => "float16",
            Ct2Dtype::BF16 => "bfloat16",
        }
    }
}

/// One variable of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    /// Scoped name, e.g. `encoder/layer_0/self_attention/linear_0/weight`.
    pub name: String,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// Storage type.
    pub dtype: Ct2Dtype,
    offset: usize,
    len: usize,
}

/// A parsed `model.bin`.
pub struct Ct2Model {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Binary format version.
    pub version: u32,
    /// Specification name, e.g. `WhisperSpec`.
    pub spec: String,
    /// Specification revision (incremented by CTranslate2 when the weight layout changes).
    pub revision: u32,
    variables: Vec<Variable>,
    index: HashMap<String, usize>,
    /// `(alias, variable)` pairs: `alias` names the same data as `variable`.
    pub aliases: Vec<(String, String)>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Ct2Error::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                start: self.pos as u64,
                end: self.pos as u64 + n as u64,
                len: self.buf.len() as u64,
            }),
        }
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let n = self.u16(what)? as usize;
        let bytes = self.take(n, what)?;
        let malformed = |reason: String| Ct2Error::Malformed {
            path: self.path.to_path_buf(),
            what: what(),
            reason,
        };
        let Some((&0, text)) = bytes.split_last() else {
            return Err(malformed("string is not NUL-terminated".into()));
        };
        String::from_utf8(text.to_vec()).map_err(|e| malformed(format!("not UTF-8 ({e})")))
    }
}

impl Ct2Model {
    /// Reads and parses `model.bin` (or `dir/model.bin`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let path = if path.is_dir() {
            path.join("model.bin")
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&path).map_err(|source| Ct2Error::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_bytes(path, bytes)
    }

    /// Parses a `model.bin` image; `path` names it in messages.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        let path = path.into();
        let mut c = Cursor {
            buf: &bytes,
            pos: 0,
            path: &path,
        };
        let version = c.u32(&|| "binary version".into())?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Ct2Error::UnsupportedVersion {
                path: path.clone(),
                version,
                supported: format!("{SUPPORTED_VERSIONS:?}"),
            });
        }
        let spec = c.string(&|| "spec name".into())?;
        let revision = c.u32(&|| "spec revision".into())?;
        let n = c.u32(&|| "variable count".into())? as usize;
        let mut variables = Vec::with_capacity(n.min(1 << 16));
        let mut index = HashMap::new();
        for i in 0..n {
            let name = c.string(&|| format!("variable #{i} name"))?;
            let what = || format!("variable {name}");
            let rank = c.u8(&what)?;
            let mut shape = Vec::with_capacity(rank as usize);
            for _ in 0..rank {
                shape.push(c.u32(&what)? as usize);
            }
            let id = c.u8(&what)?;
            let malformed = |reason: String| Ct2Error::Malformed {
                path: path.clone(),
                what: what(),
                reason,
            };
            let dtype =
                Ct2Dtype::from_id(id).ok_or_else(|| malformed(format!("unknown dtype id {id}")))?;
            let n_bytes = c.u32(&what)? as usize;
            let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if count.and_then(|n| n.checked_mul(dtype.size())) != Some(n_bytes) {
                return Err(malformed(format!(
                    "{n_bytes} bytes do not hold shape {shape:?} of {}",
                    dtype.name()
                )));
            }
            let offset = c.pos;
            c.take(n_bytes, &what)?;
            if index.insert(name.clone(), variables.len()).is_some() {
                return Err(malformed("duplicate variable".into()));
            }
            variables.push(Variable {
                name,
                shape,
                dtype,
                offset,
                len: n_bytes,
            });
        }
        let n_aliases = c.u32(&|| "alias count".into())? as usize;
        let mut aliases = Vec::with_capacity(n_aliases.min(1 << 16));
        for i in 0..n_aliases {
            let alias = c.string(&|| format!("alias #{i}"))?;
            let target = c.string(&|| format!("alias {alias} target"))?;
            if !index.contains_key(&target) {
                return Err(Ct2Error::Malformed {
                    path: path.clone(),
                    what: format!("alias {alias}"),
                    reason: format!("names {target}, which is not a variable"),
                });
            }
            aliases.push((alias, target));
        }
        if c.pos != bytes.len() {
            return Err(Ct2Error::Malformed {
                path: path.clone(),
                what: "end of file".into(),
                reason: format!("{} bytes after the aliases", bytes.len() - c.pos),
            });
        }
        Ok(Self {
            path,
            bytes,
            version,
            spec,
            revision,
            variables,
            index,
            aliases,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All variables, in file order (CTranslate2 writes them sorted by name).
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// A variable by name, following aliases.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        let name = self
            .aliases
            .iter()
            .find(|(a, _)| a == name)
            .map_or(name, |(_, t)| t.as_str());
        self.index.get(name).map(|&i| &self.variables[i])
    }

    fn require(&self, name: &str) -> Result<&Variable> {
        self.variable(name)
            .ok_or_else(|| Ct2Error::MissingVariable {
                path: self.path.clone(),
                name: name.into(),
            })
    }

    /// A variable's raw bytes.
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let v = self.require(name)?;
        Ok(&self.bytes[v.offset..v.offset + v.len])
    }

    fn plain_f32(&self, v: &Variable) -> Vec<f32> {
        let b = &self.bytes[v.offset..v.offset + v.len];
        match v.dtype {
            Ct2Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Ct2Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Ct2Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Ct2Dtype::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
            Ct2Dtype::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            Ct2Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
        }
    }

    /// A variable as f32 values with its shape. Quantised integer weights with a
    /// `{name}_scale` sibling are dequantised (`q / scale`, per row for int8, one scale for
    /// int16); other integers (scalar settings) are converted as they are.
    pub fn to_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let v = self.require(name)?;
        let mut values = self.plain_f32(v);
        let is_int = matches!(v.dtype, Ct2Dtype::I8 | Ct2Dtype::I16);
        if is_int && let Some(scale) = self.variable(&format!("{}_scale", v.name)) {
            let scale_values = self.plain_f32(scale);
            let rows = v.shape.first().copied().unwrap_or(1);
            let per_row = values.len() / rows.max(1);
            match scale_values.len() {
                1 => values.iter_mut().for_each(|x| *x /= scale_values[0]),
                n if n == rows => values
                    .chunks_mut(per_row.max(1))
                    .zip(&scale_values)
                    .for_each(|(row, s)| row.iter_mut().for_each(|x| *x /= s)),
                n => {
                    return Err(Ct2Error::Malformed {
                        path: self.path.clone(),
                        what: format!("variable {}_scale", v.name),
                        reason: format!("{n} scales for {rows} rows"),
                    });
                }
            }
        }
        Ok((values, v.shape.clone()))
    }

    /// A scalar setting as an integer (any integer dtype).
    pub fn scalar_i64(&self, name: &str) -> Result<i64> {
        let v = self.require(name)?;
        let b = self.raw(name)?;
        let x = match (v.dtype, v.shape.iter().product::<usize>()) {
            (Ct2Dtype::I8, 1) => b[0] as i8 as i64,
            (Ct2Dtype::I16, 1) => i16::from_le_bytes([b[0], b[1]]) as i64,
            (Ct2Dtype::I32, 1) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => {
                return Err(Ct2Error::Malformed {
                    path: self.path.clone(),
                    what: format!("variable {name}"),
                    reason: format!(
                        "expected an integer scalar, found {} {:?}",
                        v.dtype.name(),
                        v.shape
                    ),
                });
            }
        };
        Ok(x)
    }
}

impl std::fmt::Debug for Ct2Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ct2Model")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .field("revision", &self.revision)
            .field("variables", &self.variables.len())
            .field("aliases", &self.aliases)
            .finish()
    }
}
