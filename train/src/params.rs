//! Parameter utilities by module path: stable ids, freezing, and saving/loading the trainable
//! tensors (an adapter, or every weight for full fine-tuning) as safetensors.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

pub use infer::weights::{
    HostTensor, load_tensors, module_tensors, read_safetensors, to_safetensors, trainable_tensors,
};

struct SeededInit {
    names: Vec<String>,
    containers: Vec<String>,
    seed: u64,
    svd_form: bool,
}

impl<B: Backend> ModuleMapper<B> for SeededInit {
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
        param.map(|old| {
            let require_grad = old.is_require_grad();
            let new = Tensor::from_data(TensorData::new(values, dims), &old.device());
            if require_grad {
                new.require_grad()
            } else {
                new
            }
        })
    }
}

/// Re-initialises every FlexiLinear's random factors from `seed` and the layer's path, with
/// PEFT's distributions (LoRA: A kaiming-uniform, B untouched (zero); AdaLoRA SVD form: A and
/// B ~ N(0, 0.02)). The backend's own RNG is global to the process; this makes the initial
/// adapter a function of the seed alone, on every backend.
pub fn seeded_adapter_init<B: Backend, M: Module<B>>(model: M, seed: u64, svd_form: bool) -> M {
    model.map(&mut SeededInit {
        names: Vec::new(),
        containers: Vec::new(),
        seed,
        svd_form,
    })
}
