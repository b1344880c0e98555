//! Module tensors by path, to and from safetensors: the format of every adapter checkpoint
//! (`weights.safetensors`: the trainable tensors of a run, f32, keyed by module path such as
//! `layers.0.self_attn.q_proj.lora_a`) and of routers. Generic over any [`Backend`], so a run
//! trained on `Autodiff<B>` loads on a plain `B` for inference.
//!
//! Why not `burn-store`'s `SafetensorsStore`: the keys are the same module paths Burn's store
//! uses, but a checkpoint holds only the *trainable* subset (selected by `require_grad`, which a
//! path filter cannot see) and loading must be strict both ways: every tensor in the file must
//! find a parameter of its shape and the error must name each mismatch. These few functions do
//! exactly that; the files stay readable by `SafetensorsStore` with `allow_partial`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{InferError, Result};

/// A tensor on the host: shape and f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// Copies a tensor of any backend and float type to the host as f32.
    pub fn of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        Self { shape, values }
    }
}

#[derive(Default)]
struct ModulePath(Vec<String>);

impl ModulePath {
    fn join(&self) -> String {
        self.0.join(".")
    }
}

struct Collect {
    path: ModulePath,
    trainable_only: bool,
    out: BTreeMap<String, HostTensor>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.0.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.0.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.trainable_only && !param.is_require_grad() {
            return;
        }
        self.out
            .insert(self.path.join(), HostTensor::of(param.val()));
    }
}

/// Every float parameter of `model` by module path.
pub fn module_tensors<B: Backend, M: Module<B>>(model: &M) -> BTreeMap<String, HostTensor> {
    let mut v = Collect {
        path: ModulePath::default(),
        trainable_only: false,
        out: BTreeMap::new(),
    };
    model.visit(&mut v);
    v.out
}

/// The parameters of `model` that require a gradient (on an autodiff backend: the adapter, or
/// every weight for full fine-tuning), by module path.
pub fn trainable_tensors<B: Backend, M: Module<B>>(model: &M) -> BTreeMap<String, HostTensor> {
    let mut v = Collect {
        path: ModulePath::default(),
        trainable_only: true,
        out: BTreeMap::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Serialises tensors (f32) as safetensors bytes.
pub fn to_safetensors(tensors: &BTreeMap<String, HostTensor>) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            let raw: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), t.shape.clone(), raw)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, shape, raw)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                .map(|v| (k.clone(), v))
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| InferError::Invalid(format!("building safetensors: {e}")))?;
    safetensors::serialize(views, None)
        .map_err(|e| InferError::Invalid(format!("serialising safetensors: {e}")))
}

/// Reads f32 tensors from a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = std::fs::read(path).map_err(|e| InferError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let bad = |message: String| InferError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

struct Load<'a> {
    path: ModulePath,
    tensors: &'a BTreeMap<String, HostTensor>,
    loaded: Vec<String>,
    errors: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Load<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.0.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.0.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.join();
        let Some(t) = self.tensors.get(&name) else {
            return param;
        };
        let dims = param.dims();
        if t.shape != dims.to_vec() {
            self.errors.push(format!(
                "{name}: checkpoint shape {:?}, model shape {:?}",
                t.shape, dims
            ));
            return param;
        }
        self.loaded.push(name);
        // A fresh leaf with the old id and the old `require_grad` (on autodiff backends).
        flexi_burn::params::with_values(param, TensorData::new(t.values.clone(), dims))
    }
}

/// Replaces parameters by module path with `tensors` (on any backend); every tensor must find
/// a parameter of its shape. `origin` names the file in errors.
pub fn load_tensors<B: Backend, M: Module<B>>(
    model: M,
    tensors: &BTreeMap<String, HostTensor>,
    origin: &Path,
) -> Result<M> {
    let mut m = Load {
        path: ModulePath::default(),
        tensors,
        loaded: Vec::new(),
        errors: Vec::new(),
    };
    let model = model.map(&mut m);
    let unused: Vec<&String> = tensors.keys().filter(|k| !m.loaded.contains(k)).collect();
    if !m.errors.is_empty() || !unused.is_empty() {
        let mut message = m.errors.join("; ");
        if !unused.is_empty() {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&format!("tensors with no matching parameter: {unused:?}"));
        }
        return Err(InferError::Checkpoint {
            path: origin.to_path_buf(),
            message,
        });
    }
    Ok(model)
}
