//! Helpers the per-layer recomputation tests share (`recompute.rs`, `recompute_whisper.rs`):
//! gradients by module path and their largest difference.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

/// The gradient of every parameter that has one, by module path, as f32 on the host.
struct Grads<'a>(&'a GradientsParams, BTreeMap<String, Vec<f32>>, Vec<String>);

impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Grads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.2.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.2.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        if let Some(g) = self.0.get::<Bk::InnerBackend, D>(p.id) {
            let v = g.into_data().convert::<f32>().to_vec::<f32>().unwrap();
            self.1.insert(self.2.join("."), v);
        }
    }
}

/// `grads` of `model`'s parameters by module path.
pub fn by_path<Bk: AutodiffBackend, M: Module<Bk>>(
    model: &M,
    grads: &GradientsParams,
) -> BTreeMap<String, Vec<f32>> {
    let mut g = Grads(grads, BTreeMap::new(), Vec::new());
    model.visit(&mut g);
    g.1
}

/// `(max |a - b|, max |a|)` over two gradient sets with the same parameters.
pub fn compare(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> (f32, f32) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same parameters have gradients"
    );
    let (mut diff, mut scale) = (0f32, 0f32);
    for (k, x) in a {
        for (p, q) in x.iter().zip(&b[k]) {
            assert!(q.is_finite(), "{k}: {q}");
            diff = diff.max((p - q).abs());
            scale = scale.max(p.abs());
        }
    }
    (diff, scale)
}
