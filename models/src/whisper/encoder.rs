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

use std::ops::Range;

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::nn::conv::Conv1d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flexi_burn::SampleRanks;

use super::attention::WhisperAttention;
use super::error::{Result, WhisperError};
use crate::host_act::gelu_host;
use crate::proj::Proj;
use crate::sdpa;

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
        let n = x.dims()[1];
        let whole = std::iter::once(0..n).collect::<Vec<_>>();
        sdpa::cat_parts(self.forward_parts(vec![x], &whole, ranks), 1)
    }

    /// [`EncoderLayer::forward`] on the frames in parts (`xs[i]` holds frames `parts[i]`,
    /// each its own buffer): the norms, projections and MLP are per frame and run part by
    /// part, two parts on two threads (see [`crate::llama`]'s decoder layer for why); attention
    /// sees all frames.
    pub fn forward_parts(
        &self,
        xs: Vec<Tensor<B, 3>>,
        parts: &[Range<usize>],
        ranks: &SampleRanks,
    ) -> Vec<Tensor<B, 3>> {
        let attn = &self.self_attn;
        let projected = sdpa::map_parts(parts, |i, _| {
            let h = self.self_attn_layer_norm.forward(xs[i].clone());
            let (k, v) = (
                attn.k_proj.forward(h.clone(), ranks),
                attn.v_proj.forward(h.clone(), ranks),
            );
            (attn.queries(h, ranks), k, v)
        });
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for (qi, ki, vi) in projected {
            q.push(qi);
            k.push(ki);
            v.push(vi);
        }
        let heads = |t: Vec<Tensor<B, 3>>| attn.split_heads(sdpa::cat_parts(t, 1));
        let ctx = attn.attend_heads(heads(q), heads(k), heads(v), None); // [b, heads, n, hd]
        sdpa::map_parts(parts, |i, rows| {
            let h = attn.out_proj.forward(attn.merge_heads(&ctx, &rows), ranks);
            let x = xs[i].clone().add(h);
            let h = self.final_layer_norm.forward(x.clone());
            let h = self
                .fc2
                .forward(gelu_host(self.fc1.forward(h, ranks)), ranks);
            x.add(h)
        })
    }
}

/// The encoder's frames in parts: `xs[i]` `[b, parts[i].len(), d_model]` holds frames
/// `parts[i]` ([`WhisperEncoder::stem_parts`]).
pub type FrameParts<B> = (Vec<Tensor<B, 3>>, Vec<Range<usize>>);

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
        let (mut xs, parts) = self.stem_parts(mel)?;
        for layer in &self.layers {
            xs = layer.forward_parts(xs, &parts, ranks);
        }
        Ok(self.norm_parts(xs, &parts))
    }

    /// The stem's output as [`WhisperEncoder::forward`] splits it: the frames in two parts on
    /// two threads on the CPU (`sdpa::parallel_halves`), each its own buffer, one part
    /// otherwise; `xs[i]` `[b, parts[i].len(), d_model]` holds frames `parts[i]`. The layers
    /// take them through [`EncoderLayer::forward_parts`] (per-layer recomputation runs the
    /// layers one by one this way).
    pub fn stem_parts(&self, mel: Tensor<B, 3>) -> Result<FrameParts<B>> {
        let conv = self.stem_conv(mel)?; // [b, d, frames / 2]
        let parts = sdpa::parallel_halves::<B>(conv.dims()[2], &conv.device());
        let xs = parts
            .iter()
            .map(|rows| self.add_positions(sdpa::narrow_rows(&conv, 2, rows), rows))
            .collect();
        Ok((xs, parts))
    }

    /// The final norm over the last layer's parts, joined: `[b, frames / 2, d_model]`.
    pub fn norm_parts(&self, xs: Vec<Tensor<B, 3>>, parts: &[Range<usize>]) -> Tensor<B, 3> {
        let xs = sdpa::map_parts(parts, |i, _| self.layer_norm.forward(xs[i].clone()));
        sdpa::cat_parts(xs, 1)
    }

    /// The frozen stem: both convolutions and the positions,
    /// `mel [b, n_mels, frames] -> [b, frames / 2, d_model]` (no adapter takes part). Encoder
    /// position `t` sees mel frames `2t - 2 ..= 2t + 2` only.
    pub fn stem(&self, mel: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let conv = self.stem_conv(mel)?;
        let t = conv.dims()[2];
        Ok(self.add_positions(conv, &(0..t)))
    }

    /// The stem's two convolutions, `mel [b, n_mels, frames] -> [b, d_model, frames / 2]`,
    /// after checking the input's shape.
    fn stem_conv(&self, mel: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let [_, n_mels, frames] = mel.dims();
        let [_, c_in, _] = self.conv1.weight.dims();
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
        let x = gelu_host(self.conv1.forward(mel));
        Ok(gelu_host(self.conv2.forward(x))) // [b, d, frames / 2]
    }

    /// Frames `rows` of the stem's convolutions `[b, d, rows]` as `[b, rows, d]` with their
    /// positional embeddings added.
    fn add_positions(&self, conv: Tensor<B, 3>, rows: &Range<usize>) -> Tensor<B, 3> {
        let d = conv.dims()[1];
        let pos = self
            .embed_positions
            .val()
            .slice([rows.clone(), 0..d])
            .unsqueeze::<3>();
        conv.swap_dims(1, 2).add(pos)
    }
}
