//! Typed access to the adapted layers of a model: every [`FlexiLinear`] with its module path,
//! instead of walking the module tree and matching Burn's internal container names.
//!
//! A path is the prefix of the layer's parameter keys in checkpoints (`Module` paths as Burn's
//! visitors and `burn-store` write them, e.g. `layers.0.self_attn.q_proj.Adapted`), so
//! `format!("{path}.lora_a")` names its `A` factor in a saved adapter.

use burn::tensor::backend::Backend;

use crate::lora::FlexiLinear;

/// A module that holds [`FlexiLinear`] layers. Models implement it (`models::llama::Llama`,
/// `models::whisper::Whisper`); accounting, seeded initialisation and AdaLoRA use it.
pub trait Adapters<B: Backend> {
    /// Every adapted layer with its module path, in a fixed order.
    fn adapters(&self) -> Vec<(String, &FlexiLinear<B>)>;

    /// Every adapted layer, mutably, with its module path, in the same order.
    fn adapters_mut(&mut self) -> Vec<(String, &mut FlexiLinear<B>)>;
}

impl<B: Backend> Adapters<B> for FlexiLinear<B> {
    fn adapters(&self) -> Vec<(String, &FlexiLinear<B>)> {
        vec![(String::new(), self)]
    }

    fn adapters_mut(&mut self) -> Vec<(String, &mut FlexiLinear<B>)> {
        vec![(String::new(), self)]
    }
}

/// `prefix.path`, or `path` alone at the root.
pub fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{path}"),
    }
}

impl<B: Backend, M: Adapters<B>> Adapters<B> for Vec<M> {
    fn adapters(&self) -> Vec<(String, &FlexiLinear<B>)> {
        self.iter()
            .enumerate()
            .flat_map(|(i, m)| {
                m.adapters()
                    .into_iter()
                    .map(move |(p, l)| (join_path(&i.to_string(), &p), l))
            })
            .collect()
    }

    fn adapters_mut(&mut self) -> Vec<(String, &mut FlexiLinear<B>)> {
        self.iter_mut()
            .enumerate()
            .flat_map(|(i, m)| {
                m.adapters_mut()
                    .into_iter()
                    .map(move |(p, l)| (join_path(&i.to_string(), &p), l))
            })
            .collect()
    }
}

/// FNV-1a of a module path: an id that is the same in every run and process (stable parameter
/// ids, per-layer seeds).
pub fn path_hash(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
