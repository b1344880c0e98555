//! A projection of any model: a plain frozen [`Linear`] or, when the projection is in the
//! adapter's target set, a [`FlexiLinear`] that takes the per-sample ranks. Llama and Whisper
//! build every projection as one of these.
//!
//! Non-targeted projections are plain `Linear`s (no LoRA parameters at all, and nothing to
//! mask), so parameter counts and checkpoints of a LoRA on `q_proj,v_proj` only hold those.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use flexi_burn::{FlexiLinear, SampleRanks};

/// A plain or adapted projection.
// A model has seven per layer; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Proj<B: Backend> {
    /// Frozen, no adapter.
    Plain(Linear<B>),
    /// Frozen base plus nested LoRA factors.
    Adapted(FlexiLinear<B>),
}

impl<B: Backend> Proj<B> {
    /// `x [batch, seq, d_in] -> [batch, seq, d_out]`; `ranks` is ignored by a plain projection.
    pub fn forward(&self, x: Tensor<B, 3>, ranks: &SampleRanks) -> Tensor<B, 3> {
        match self {
            Proj::Plain(l) => flexi_burn::linear_nd(x, l),
            Proj::Adapted(l) => l.forward(x, ranks),
        }
    }

    /// The frozen base weight stored in `dtype` (mixed precision, [`flexi_burn::precision`]);
    /// the adapter's factors keep their type.
    pub fn store_frozen(self, dtype: FloatDType) -> Self {
        match self {
            Proj::Plain(l) => Proj::Plain(flexi_burn::store_frozen_linear(l, dtype)),
            Proj::Adapted(mut l) => {
                l.base = flexi_burn::store_frozen_linear(l.base, dtype);
                Proj::Adapted(l)
            }
        }
    }

    /// The adapter, if any.
    pub fn adapter(&self) -> Option<&FlexiLinear<B>> {
        match self {
            Proj::Plain(_) => None,
            Proj::Adapted(l) => Some(l),
        }
    }

    /// The adapter, mutably, if any.
    pub fn adapter_mut(&mut self) -> Option<&mut FlexiLinear<B>> {
        match self {
            Proj::Plain(_) => None,
            Proj::Adapted(l) => Some(l),
        }
    }
}

/// The adapted layers among `projs` (module paths `"{prefix}.{name}.Adapted"`, Burn's path of
/// the enum variant), for [`flexi_burn::Adapters`] implementations.
pub(crate) fn adapted<'a, B: Backend>(
    prefix: &str,
    projs: impl IntoIterator<Item = (&'static str, &'a Proj<B>)>,
) -> Vec<(String, &'a FlexiLinear<B>)> {
    projs
        .into_iter()
        .filter_map(|(name, p)| p.adapter().map(|l| (format!("{prefix}.{name}.Adapted"), l)))
        .collect()
}

/// [`adapted`], mutably.
pub(crate) fn adapted_mut<'a, B: Backend>(
    prefix: &str,
    projs: impl IntoIterator<Item = (&'static str, &'a mut Proj<B>)>,
) -> Vec<(String, &'a mut FlexiLinear<B>)> {
    projs
        .into_iter()
        .filter_map(|(name, p)| {
            p.adapter_mut()
                .map(|l| (format!("{prefix}.{name}.Adapted"), l))
        })
        .collect()
}
