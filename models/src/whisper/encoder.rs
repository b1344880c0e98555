//! The audio encoder.
//!
//! ```text
//! x = gelu(conv1(mel))              conv1: n_mels -> d_model, kernel 3, padding 1
//! x = gelu(conv2(x))                conv2: d_model -> d_model, kernel 3, stride 2, padding 1
//! x = x^T + embed_positions          sinusoidal, loaded from the checkpoint   [b, frames/2, d]
//! for each layer:
//!     x = x + self_attn(self_attn_layer_norm(x))
//!     x = x + fc2(gelu(fc1(final_layer_norm(x))))
//! out = layer_norm(x)
//! ```

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::nn::conv::Conv1d;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use flexi_burn::SampleRanks;

use super::attention::WhisperAttention;
use super::error::{Result, WhisperError};
use crate::proj::Proj;

/// One pre-norm encoder block.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Norm before self-attention.
    pub self_attn_layer_norm: LayerNorm<B>,
    /// Self-attention.
    pub self_attn: WhisperAttention<B>,
    /// Norm before the MLP.
    pub final_layer_norm: LayerNorm<B>,
    /// MLP up projection.
    pub fc1: Proj<B>,
    /// MLP down projection.
    pub fc2: Proj<B>,
}

impl<B: Backend> EncoderLayer<B> {
    /// `x [b, t, d] -> [b, t, d]`.
    pub fn forward(&self, x: Tensor<B, 3>, ranks: &SampleRanks) -> Tensor<B, 3> {
        let h = self
            .self_attn
            .forward_self(self.self_attn_layer_norm.forward(x.clone()), ranks);
        let x = x.add(h);
        let h = self.final_layer_norm.forward(x.clone());
        let h = self.fc2.forward(gelu(self.fc1.forward(h, ranks)), ranks);
        x.add(h)
    }
}

/// The encoder stack.
#[derive(Module, Debug)]
pub struct WhisperEncoder<B: Backend> {
    /// First convolution (kernel 3, padding 1).
    pub conv1: Conv1d<B>,
    /// Second convolution (kernel 3, stride 2, padding 1).
    pub conv2: Conv1d<B>,
    /// Positions `[max_source_positions, d_model]` (frozen).
    pub embed_positions: Param<Tensor<B, 2>>,
    /// Blocks.
    pub layers: Vec<EncoderLayer<B>>,
    /// Final norm.
    pub layer_norm: LayerNorm<B>,
}

impl<B: Backend> WhisperEncoder<B> {
    /// `mel [b, n_mels, frames] -> [b, frames / 2, d_model]`. `frames` must be even and at
    /// most `2 * max_source_positions` (released models were trained on exactly 3000 frames,
    /// one 30 s window; transformers refuses anything else, this accepts shorter input as
    /// well, e.g. for tests).
    pub fn forward(&self, mel: Tensor<B, 3>, ranks: &SampleRanks) -> Result<Tensor<B, 3>> {
        let mut x = self.stem(mel)?;
        for layer in &self.layers {
            x = layer.forward(x, ranks);
        }
        Ok(self.layer_norm.forward(x))
    }

    /// The frozen stem: both convolutions and the positions,
    /// `mel [b, n_mels, frames] -> [b, frames / 2, d_model]` (no adapter takes part). Encoder
    /// position `t` sees mel frames `2t - 2 ..= 2t + 2` only.
    pub fn stem(&self, mel: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let [_, n_mels, frames] = mel.dims();
        let [c_out, c_in, _] = self.conv1.weight.dims();
        let [max_pos, _] = self.embed_positions.dims();
        if n_mels != c_in {
            return Err(WhisperError::InvalidInput(format!(
                "the mel spectrogram has {n_mels} bins, the model takes num_mel_bins = {c_in}"
            )));
        }
        if frames == 0 || frames % 2 != 0 || frames / 2 > max_pos {
            return Err(WhisperError::InvalidInput(format!(
                "the mel spectrogram has {frames} frames; the encoder takes an even number up to {} (one 30 s window)",
                2 * max_pos
            )));
        }
        let x = gelu(self.conv1.forward(mel));
        let x = gelu(self.conv2.forward(x)); // [b, d, frames / 2]
        let t = frames / 2;
        let pos = self
            .embed_positions
            .val()
            .slice([0..t, 0..c_out])
            .unsqueeze::<3>();
        Ok(x.swap_dims(1, 2).add(pos))
    }
}
