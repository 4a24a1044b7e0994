//! LayerNorm alone, at the shapes of the UNet's transformer blocks (each runs three on its
//! input rows: before self-attention, cross-attention and the feed-forward): the fused
//! kernels of `cidm-kernels` against the plain path (`cidm-diffusion`'s norm with the kernels
//! switched off), timed and checked as `fused_op.rs` describes.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::LayerNorm;
use cidm::kernels::{fused_layer_norm, set_fused_layer_norm};

use crate::check::{forced, Comparison};
use crate::error::Result;
use crate::fused_op::{self, weight, BenchOp};
use crate::setup::Setup;
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;
/// Epsilon of the transformer blocks' norms (diffusers' `BasicTransformerBlock` default).
const EPSILON: f64 = 1e-5;

/// One transformer input of the UNet: `[BATCH, tokens, dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowShape {
    /// Rows per sample (the pixels of the block's resolution).
    pub tokens: usize,
    /// Values per row (the block's channels).
    pub dim: usize,
}

impl RowShape {
    /// `ln_t4096_d320`: the record name, as the reference prints it too.
    pub fn name(&self) -> String {
        format!("ln_t{}_d{}", self.tokens, self.dim)
    }
}

/// The distinct transformer input shapes of `setup`'s UNet: every down block with
/// cross-attention and the mid block, at its resolution and width (the up blocks repeat
/// them). SD 1.5: 4096 rows of 320, 1024 of 640, 256 and 64 of 1280.
pub fn shapes(setup: &Setup) -> Vec<RowShape> {
    let config = &setup.unet;
    let blocks = config.block_out_channels.len();
    let level = |block: usize| RowShape {
        tokens: (setup.latent >> block).pow(2),
        dim: config.block_out_channels[block],
    };
    let mut shapes: Vec<_> = config
        .down_block_types
        .iter()
        .enumerate()
        .filter(|(_, kind)| kind.starts_with("CrossAttn"))
        .map(|(block, _)| level(block))
        .collect();
    let mid = level(blocks - 1);
    if !shapes.contains(&mid) {
        shapes.push(mid);
    }
    shapes
}

/// The norm on the inference backend.
pub fn forward(shape: RowShape, reps: Reps) -> Comparison {
    let (x, norm) = inputs::<Selected>(shape, &backend::device());
    fused_op::forward(x, norm, reps)
}

/// Forward plus backward on the training backend.
pub fn forward_backward(shape: RowShape, reps: Reps) -> Comparison {
    let (x, norm) = inputs::<Training>(shape, &backend::device());
    fused_op::forward_backward(x, norm, reps)
}

/// The model's norm (`LayerNorm::forward`).
impl<B: Backend> BenchOp<B, 3> for LayerNorm<B> {
    fn apply(&self, x: &Tensor<B, 3>, fused: bool) -> Result<Tensor<B, 3>> {
        Ok(forced(set_fused_layer_norm, fused, || {
            self.forward(x.clone())
        }))
    }

    fn params(&self) -> Vec<Tensor<B, 1>> {
        vec![self.weight.val(), self.bias.val()]
    }

    fn refusal(&self, x: &Tensor<B, 3>) -> Option<String> {
        forced(set_fused_layer_norm, true, || {
            fused_layer_norm(x, &self.weight.val(), &self.bias.val(), self.eps)
        })
        .err()
        .map(|unfused| unfused.to_string())
    }
}

/// Standard-normal x and a norm with random weights ([`weight`]).
fn inputs<B: Backend>(shape: RowShape, device: &B::Device) -> (Tensor<B, 3>, LayerNorm<B>) {
    let x = Tensor::random(
        [BATCH, shape.tokens, shape.dim],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let norm = LayerNorm {
        weight: Param::from_tensor(weight(shape.dim, 1.0, device)),
        bias: Param::from_tensor(weight(shape.dim, 0.0, device)),
        eps: EPSILON,
    };
    (x, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::ConfigName;

    /// SD 1.5's transformer inputs: 4096 rows of 320 values, 1024 of 640, 256 of 1280 in
    /// the down blocks and 64 of 1280 in the mid block.
    #[test]
    fn sd15_shapes() {
        let setup = Setup::new(ConfigName::Sd15).unwrap();
        let got: Vec<_> = shapes(&setup).iter().map(|s| (s.tokens, s.dim)).collect();
        assert_eq!(got, [(4096, 320), (1024, 640), (256, 1280), (64, 1280)]);
        assert_eq!(shapes(&setup)[0].name(), "ln_t4096_d320");
    }
}
