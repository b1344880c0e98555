//! The SwiGLU feed-forward block.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flexi_burn::SampleRanks;

use crate::host_act::silu_mul_host;
use crate::proj::Proj;

/// `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[hidden] -> [intermediate]`.
    pub gate_proj: Proj<B>,
    /// `[hidden] -> [intermediate]`.
    pub up_proj: Proj<B>,
    /// `[intermediate] -> [hidden]`.
    pub down_proj: Proj<B>,
}

impl<B: Backend> Mlp<B> {
    /// `x [batch, seq, hidden] -> [batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>, ranks: &SampleRanks) -> Tensor<B, 3> {
        let gate = self.gate_proj.forward(x.clone(), ranks); // [b, s, inter]
        let up = self.up_proj.forward(x, ranks); // [b, s, inter]
        self.down_proj.forward(silu_mul_host(gate, up), ranks)
    }
}
