//! diffusers' VAE `Encoder`: images to the moments (mean and log-variance, stacked on the
//! channel axis) of the latent distribution.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::attention::AttentionKeys;
use super::blocks::{DownEncoderBlock2D, UNetMidBlock2D, VAE_NORM_EPS};
use super::config::AutoencoderKLConfig;
use crate::error::Result;
use crate::loading::VarBuilder;
use crate::nn::{conv2d, conv_forward, group_norm, GroupNorm};

/// `conv_in`, the down blocks, the mid block, then norm, SiLU and `conv_out` to twice the
/// latent channels (diffusers' `double_z=True`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    conv_in: Conv2d<B>,
    down_blocks: Vec<DownEncoderBlock2D<B>>,
    mid_block: UNetMidBlock2D<B>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    /// Builds the encoder of a validated `config`.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        config: &AutoencoderKLConfig,
        keys: AttentionKeys<'_>,
    ) -> Result<Self> {
        let boc = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let last = boc.len() - 1;
        let down_blocks = boc
            .iter()
            .enumerate()
            .map(|(i, &c_out)| {
                DownEncoderBlock2D::new(
                    &vb.pp(format!("down_blocks.{i}")),
                    boc[i.saturating_sub(1)],
                    c_out,
                    config.layers_per_block,
                    groups,
                    i < last,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_in: conv2d(&vb.pp("conv_in"), config.in_channels, boc[0], 3, 1, 1)?,
            down_blocks,
            mid_block: UNetMidBlock2D::new(
                &vb.pp("mid_block"),
                boc[last],
                groups,
                config.mid_block_add_attention,
                keys,
            )?,
            conv_norm_out: group_norm(&vb.pp("conv_norm_out"), groups, boc[last], VAE_NORM_EPS)?,
            conv_out: conv2d(
                &vb.pp("conv_out"),
                boc[last],
                2 * config.latent_channels,
                3,
                1,
                1,
            )?,
        })
    }

    /// # Shapes
    /// - images: `[batch, in_channels, h, w]` with `h`, `w` >= the downsample factor `f`
    /// - output: `[batch, 2 latent_channels, floor(h / f), floor(w / f)]` (floors taken once
    ///   per block)
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = conv_forward(&self.conv_in, images);
        let x = self.down_blocks.iter().fold(x, |x, b| b.forward(x));
        let x = self.mid_block.forward(x);
        conv_forward(&self.conv_out, self.conv_norm_out.forward_silu(x))
    }
}
