//! Parameter utilities by module path: stable ids, freezing, and saving/loading the trainable
//! tensors (an adapter, or every weight for full fine-tuning) as safetensors.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use flexi_burn::Adapters;

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

/// A parameter id that is the same in every run: the hash of its module path.
fn stable_id(path: &str) -> ParamId {
    ParamId::from(flexi_burn::adapters::path_hash(path))
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

struct AnyTrainable(bool);

impl<B: AutodiffBackend> ModuleVisitor<B> for AnyTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 |= param.is_require_grad();
    }
}

/// Whether any float parameter of `module` trains (requires a gradient).
pub fn has_trainable<B: AutodiffBackend, M: Module<B>>(module: &M) -> bool {
    let mut v = AnyTrainable(false);
    module.visit(&mut v);
    v.0
}

pub use infer::weights::{
    HostTensor, load_tensors, module_tensors, read_safetensors, to_safetensors, trainable_tensors,
};

/// Re-initialises every adapted layer's random factors from `seed` and the layer's path
/// ([`flexi_burn::FlexiLinear::seeded_init`]: PEFT's distributions). The backend's own RNG is
/// global to the process; this makes the initial adapter a function of the seed alone, on
/// every backend.
pub fn seeded_adapter_init<B: Backend, M: Adapters<B>>(mut model: M, seed: u64) -> M {
    for (path, layer) in model.adapters_mut() {
        layer.seeded_init(seed, &path);
    }
    model
}
