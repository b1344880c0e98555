//! Parameter utilities by module path: stable ids, freezing, and saving/loading the trainable
//! tensors (an adapter, or every weight for full fine-tuning) as safetensors.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Result, TrainError};

#[derive(Default)]
struct ModulePath {
    names: Vec<String>,
}

impl ModulePath {
    fn join(&self) -> String {
        self.names.join(".")
    }
}

/// Replaces a parameter's value with `f(old value)` computed outside the autodiff graph,
/// keeping its id and whether it requires a gradient (a fresh leaf, like an optimizer update).
pub fn replace_values<B: AutodiffBackend, const D: usize>(
    param: Param<Tensor<B, D>>,
    f: impl FnOnce(Tensor<B::InnerBackend, D>) -> Tensor<B::InnerBackend, D>,
) -> Param<Tensor<B, D>> {
    param.map(|old| {
        let require_grad = old.is_require_grad();
        let new = Tensor::from_inner(f(old.inner()));
        if require_grad {
            new.require_grad()
        } else {
            new
        }
    })
}

/// FNV-1a of a module path: a parameter id that is the same in every run.
fn stable_id(path: &str) -> ParamId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ParamId::from(h)
}

struct StableIds {
    path: ModulePath,
    unfreeze: bool,
}

impl<B: AutodiffBackend> ModuleMapper<B> for StableIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.names.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.names.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let id = stable_id(&self.path.join());
        let tensor = param.val();
        let tensor = if self.unfreeze {
            tensor.require_grad()
        } else {
            tensor
        };
        Param::initialized(id, tensor)
    }
}

/// Gives every float parameter an id derived from its module path, so optimizer state saved
/// by one process applies to the same parameters in the next (resume). With `unfreeze`, every
/// parameter also becomes trainable (full fine-tuning).
pub fn stable_param_ids<B: AutodiffBackend, M: Module<B>>(model: M, unfreeze: bool) -> M {
    model.map(&mut StableIds {
        path: ModulePath::default(),
        unfreeze,
    })
}

struct FreshLeaves;

impl<B: AutodiffBackend> ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !param.is_require_grad() {
            return param;
        }
        param.map(|t| t.detach().require_grad())
    }
}

/// The same model with every trainable parameter as a new autodiff leaf (same values, same
/// [`ParamId`]s). Two such copies build independent autodiff graphs, which Burn runs on
/// separate threads without sharing a graph lock; their gradients still map to the original
/// parameters through the ids.
pub fn fresh_leaves<B: AutodiffBackend, M: Module<B>>(model: M) -> M {
    model.map(&mut FreshLeaves)
}

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

struct CollectTrainable {
    path: ModulePath,
    out: BTreeMap<String, HostTensor>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectTrainable {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.names.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.names.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        self.out
            .insert(self.path.join(), HostTensor::of(param.val().inner()));
    }
}

/// The trainable parameters by module path.
pub fn trainable_tensors<B: AutodiffBackend, M: Module<B>>(
    model: &M,
) -> BTreeMap<String, HostTensor> {
    let mut v = CollectTrainable {
        path: ModulePath::default(),
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
        .map_err(|e| TrainError::Model(format!("building safetensors: {e}")))?;
    safetensors::serialize(views, None)
        .map_err(|e| TrainError::Model(format!("serialising safetensors: {e}")))
}

/// Reads f32 tensors from a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("not a valid safetensors file: {e}"),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!("tensor {name} is {:?}, expected F32", view.dtype()),
            });
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

struct LoadTensors<'a> {
    path: ModulePath,
    tensors: &'a BTreeMap<String, HostTensor>,
    loaded: Vec<String>,
    errors: Vec<String>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for LoadTensors<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.names.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.names.pop();
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
        let values = t.values.clone();
        replace_values(param, |old| {
            let device = old.device();
            Tensor::from_data(TensorData::new(values, dims), &device)
        })
    }
}

/// Replaces parameters by path with `tensors`; every tensor must find a parameter of its shape.
pub fn load_tensors<B: AutodiffBackend, M: Module<B>>(
    model: M,
    tensors: &BTreeMap<String, HostTensor>,
    origin: &Path,
) -> Result<M> {
    let mut m = LoadTensors {
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
        return Err(TrainError::Checkpoint {
            path: origin.to_path_buf(),
            message,
        });
    }
    Ok(model)
}

struct SeededInit {
    names: Vec<String>,
    containers: Vec<String>,
    seed: u64,
    svd_form: bool,
}

impl<B: AutodiffBackend> ModuleMapper<B> for SeededInit {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.names.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.names.pop();
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.containers.last().map(String::as_str) != Some("Struct:FlexiLinear") {
            return param;
        }
        let field = self.names.last().map(String::as_str);
        let normal = match (field, self.svd_form) {
            (Some("lora_a"), false) => false,
            (Some("lora_a" | "lora_b"), true) => true,
            _ => return param,
        };
        let dims = param.dims();
        let n: usize = dims.iter().product();
        let path = self.names.join(".");
        let mut rng = StdRng::seed_from_u64(crate::trainer::mix(self.seed, stable_id(&path).val()));
        let values: Vec<f32> = if normal {
            // PEFT AdaLoRA: N(0, 0.02) (Box–Muller).
            (0..n)
                .map(|_| {
                    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                    let u2: f64 = rng.random();
                    (0.02 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect()
        } else {
            // PEFT LoRA: kaiming-uniform with a = sqrt(5): U(-1/sqrt(d_in), 1/sqrt(d_in)).
            let bound = 1.0 / (dims[D - 1] as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        replace_values(param, |old| {
            let device = old.device();
            Tensor::from_data(TensorData::new(values, dims), &device)
        })
    }
}

/// Re-initialises every FlexiLinear's random factors from `seed` and the layer's path, with
/// PEFT's distributions (LoRA: A kaiming-uniform, B untouched (zero); AdaLoRA SVD form: A and
/// B ~ N(0, 0.02)). The backend's own RNG is global to the process; this makes the initial
/// adapter a function of the seed alone, on every backend.
pub fn seeded_adapter_init<B: AutodiffBackend, M: Module<B>>(
    model: M,
    seed: u64,
    svd_form: bool,
) -> M {
    model.map(&mut SeededInit {
        names: Vec::new(),
        containers: Vec::new(),
        seed,
        svd_form,
    })
}
