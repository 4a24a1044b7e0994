//! GroupNorm plus SiLU alone, at the shapes of the UNet's ResNet blocks: the fused kernels of
//! `cidm-kernels` against the plain path (`cidm-diffusion`'s norm with the kernels switched
//! off), timed and checked as `fused_op.rs` describes.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::GroupNorm;
use cidm::kernels::{fused_group_norm, set_fused_group_norm, GroupNormOptions};

use crate::check::{forced, Comparison};
use crate::error::Result;
use crate::fused_op::{self, weight, BenchOp};
use crate::setup::Setup;
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;

/// One norm shape of the UNet (batch [`BATCH`], square feature maps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormShape {
    /// Channels of the feature map.
    pub channels: usize,
    /// Side of the feature map.
    pub side: usize,
    /// Groups (the config's `norm_num_groups`).
    pub groups: usize,
    /// Added to the variance (the config's `norm_eps`).
    pub epsilon: f64,
}

impl NormShape {
    /// `gn_c320_64x64`: the record name, as the reference prints it too.
    pub fn name(&self) -> String {
        format!("gn_c{}_{}x{}", self.channels, self.side, self.side)
    }
}

/// Distinct norm shapes of `setup`'s UNet's ResNet blocks: each down block's output channels
/// at its resolution, and the widest norm of all, the first ResNet of the last up block
/// (the second block's channels concatenated with the first's skip, at full resolution).
/// SD 1.5: 320 at 64x64, 640 at 32x32, 1280 at 16x16 and 8x8, 960 at 64x64.
pub fn shapes(setup: &Setup) -> Vec<NormShape> {
    let config = &setup.unet;
    let channels = &config.block_out_channels;
    let shape = |channels: usize, side: usize| NormShape {
        channels,
        side,
        groups: config.norm_num_groups,
        epsilon: config.norm_eps,
    };
    let mut all: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(block, &c)| shape(c, setup.latent >> block))
        .collect();
    if let [first, second, ..] = channels[..] {
        all.push(shape(first + second, setup.latent));
    }
    let mut shapes = Vec::new();
    for shape in all {
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    shapes
}

/// The norm with SiLU on the inference backend.
pub fn forward(shape: NormShape, reps: Reps) -> Comparison {
    let (x, norm) = inputs::<Selected>(shape, &backend::device());
    fused_op::forward(x, norm, reps)
}

/// Forward plus backward on the training backend.
pub fn forward_backward(shape: NormShape, reps: Reps) -> Comparison {
    let (x, norm) = inputs::<Training>(shape, &backend::device());
    fused_op::forward_backward(x, norm, reps)
}

/// The model's norm and SiLU (`GroupNorm::forward_silu`).
impl<B: Backend> BenchOp<B, 4> for GroupNorm<B> {
    fn apply(&self, x: &Tensor<B, 4>, fused: bool) -> Result<Tensor<B, 4>> {
        Ok(forced(set_fused_group_norm, fused, || {
            self.forward_silu(x.clone())
        }))
    }

    fn params(&self) -> Vec<Tensor<B, 1>> {
        vec![self.gamma.val(), self.beta.val()]
    }

    fn refusal(&self, x: &Tensor<B, 4>) -> Option<String> {
        let options = GroupNormOptions {
            groups: self.num_groups,
            epsilon: self.epsilon,
            silu: true,
        };
        forced(set_fused_group_norm, true, || {
            fused_group_norm(x, &self.gamma.val(), &self.beta.val(), options)
        })
        .err()
        .map(|unfused| unfused.to_string())
    }
}

/// Standard-normal x and a norm with random weights ([`weight`]).
fn inputs<B: Backend>(shape: NormShape, device: &B::Device) -> (Tensor<B, 4>, GroupNorm<B>) {
    let x = Tensor::random(
        [BATCH, shape.channels, shape.side, shape.side],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let norm = GroupNorm {
        gamma: Param::from_tensor(weight(shape.channels, 1.0, device)),
        beta: Param::from_tensor(weight(shape.channels, 0.0, device)),
        num_groups: shape.groups,
        epsilon: shape.epsilon,
    };
    (x, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::ConfigName;

    /// SD 1.5's ResNet norms: 32 groups, epsilon 1e-5, the four block widths at their
    /// resolutions and the 960 channels of the last up block's first ResNet at 64x64.
    #[test]
    fn sd15_shapes() {
        let setup = Setup::new(ConfigName::Sd15).unwrap();
        let got: Vec<_> = shapes(&setup)
            .iter()
            .map(|s| (s.channels, s.side, s.groups, s.epsilon))
            .collect();
        assert_eq!(
            got,
            [
                (320, 64, 32, 1e-5),
                (640, 32, 32, 1e-5),
                (1280, 16, 32, 1e-5),
                (1280, 8, 32, 1e-5),
                (960, 64, 32, 1e-5),
            ]
        );
        assert_eq!(shapes(&setup)[0].name(), "gn_c320_64x64");
    }
}
