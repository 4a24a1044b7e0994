//! The ResNet blocks' 3x3 convolution alone (`conv2`: the block's channels in and out,
//! padding 1), at each level of the UNet: the CPU convolution of `cidm-kernels` against
//! burn's (`cidm-diffusion`'s `nn::conv_forward` with it switched off), timed and checked as
//! `fused_op.rs` describes. The weight is frozen, as in LoRA training: the training record
//! checks x's gradient. Only Flex has the CPU convolution, so the records run on Flex alone
//! (a GPU build keeps burn-cubecl's convolutions, which the UNet steps time).

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::{conv_forward, conv_options};
use cidm::kernels::{fused_conv2d, set_fused_conv};

use crate::check::{forced, Comparison};
use crate::error::Result;
use crate::fused_op::{self, BenchOp};
use crate::setup::Setup;
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;

/// One level of the UNet: `[BATCH, channels, side, side]` in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Channels in and out.
    pub channels: usize,
    /// Side of the feature map.
    pub side: usize,
}

impl ConvShape {
    /// `conv_c320_64x64`: the record name, as the reference prints it too.
    pub fn name(&self) -> String {
        format!("conv_c{}_{}x{}", self.channels, self.side, self.side)
    }
}

/// Distinct levels of `setup`'s UNet: each block's output channels at its resolution. SD 1.5:
/// 320 at 64x64, 640 at 32x32, 1280 at 16x16 and at 8x8.
pub fn shapes(setup: &Setup) -> Vec<ConvShape> {
    let mut shapes = Vec::new();
    for (block, &channels) in setup.unet.block_out_channels.iter().enumerate() {
        let shape = ConvShape {
            channels,
            side: setup.latent >> block,
        };
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    shapes
}

/// The convolution on the inference backend.
pub fn forward(shape: ConvShape, reps: Reps) -> Comparison {
    let (x, conv) = inputs::<Selected>(shape, &backend::device());
    fused_op::forward(x, Conv(conv), reps)
}

/// Forward plus backward on the training backend.
pub fn forward_backward(shape: ConvShape, reps: Reps) -> Comparison {
    let (x, conv) = inputs::<Training>(shape, &backend::device());
    fused_op::forward_backward(x, Conv(conv), reps)
}

/// The model's convolution (`nn::conv_forward`).
struct Conv<B: Backend>(Conv2d<B>);

impl<B: Backend> BenchOp<B, 4> for Conv<B> {
    fn apply(&self, x: &Tensor<B, 4>, fused: bool) -> Result<Tensor<B, 4>> {
        Ok(forced(set_fused_conv, fused, || {
            conv_forward(&self.0, x.clone())
        }))
    }

    fn params(&self) -> Vec<Tensor<B, 1>> {
        Vec::new()
    }

    fn refusal(&self, x: &Tensor<B, 4>) -> Option<String> {
        let Some(options) = conv_options(&self.0) else {
            return Some("only explicit padding takes the CPU convolution".to_owned());
        };
        let bias = self.0.bias.as_ref().map(|bias| bias.val());
        forced(set_fused_conv, true, || {
            fused_conv2d(x, &self.0.weight.val(), bias.as_ref(), &options)
        })
        .err()
        .map(|unfused| unfused.to_string())
    }
}

/// Standard-normal x and a frozen 3x3 convolution with weights of the variance a trained
/// layer keeps its outputs at (`1 / fan_in`) and a random bias.
fn inputs<B: Backend>(shape: ConvShape, device: &B::Device) -> (Tensor<B, 4>, Conv2d<B>) {
    let ConvShape { channels, side } = shape;
    let x = Tensor::random(
        [BATCH, channels, side, side],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let std = (1.0 / (9 * channels) as f64).sqrt();
    let weight = Tensor::random(
        [channels, channels, 3, 3],
        Distribution::Normal(0.0, std),
        device,
    );
    let bias = Tensor::random([channels], Distribution::Normal(0.0, 0.1), device);
    let conv = Conv2d {
        weight: Param::from_tensor(weight).set_require_grad(false),
        bias: Some(Param::from_tensor(bias).set_require_grad(false)),
        stride: [1, 1],
        kernel_size: [3, 3],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
    };
    (x, conv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::ConfigName;

    /// SD 1.5's levels: 320 channels at 64x64, 640 at 32x32, 1280 at 16x16 and 8x8.
    #[test]
    fn sd15_names() {
        let setup = Setup::new(ConfigName::Sd15).unwrap();
        let names: Vec<_> = shapes(&setup).iter().map(ConvShape::name).collect();
        assert_eq!(
            names,
            [
                "conv_c320_64x64",
                "conv_c640_32x32",
                "conv_c1280_16x16",
                "conv_c1280_8x8"
            ]
        );
    }
}
