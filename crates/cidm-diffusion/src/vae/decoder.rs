//! diffusers' VAE `Decoder` (with group norms, the Stable Diffusion kind): latents to images.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::attention::AttentionKeys;
use super::blocks::{UNetMidBlock2D, UpDecoderBlock2D, VAE_NORM_EPS};
use super::config::AutoencoderKLConfig;
use crate::error::Result;
use crate::loading::VarBuilder;
use crate::nn::{conv2d, conv_forward, group_norm, GroupNorm};

/// `conv_in` to the widest channels, the mid block, the up blocks (block widths reversed,
/// `layers_per_block + 1` ResNets each), then norm, SiLU and `conv_out`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    conv_in: Conv2d<B>,
    mid_block: UNetMidBlock2D<B>,
    up_blocks: Vec<UpDecoderBlock2D<B>>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    /// Builds the decoder of a validated `config`.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        config: &AutoencoderKLConfig,
        keys: AttentionKeys<'_>,
    ) -> Result<Self> {
        let groups = config.norm_num_groups;
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let last = reversed.len() - 1;
        let up_blocks = reversed
            .iter()
            .enumerate()
            .map(|(i, &c_out)| {
                UpDecoderBlock2D::new(
                    &vb.pp(format!("up_blocks.{i}")),
                    reversed[i.saturating_sub(1)],
                    c_out,
                    config.layers_per_block + 1,
                    groups,
                    i < last,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_in: conv2d(
                &vb.pp("conv_in"),
                config.latent_channels,
                reversed[0],
                3,
                1,
                1,
            )?,
            mid_block: UNetMidBlock2D::new(
                &vb.pp("mid_block"),
                reversed[0],
                groups,
                config.mid_block_add_attention,
                keys,
            )?,
            up_blocks,
            conv_norm_out: group_norm(
                &vb.pp("conv_norm_out"),
                groups,
                reversed[last],
                VAE_NORM_EPS,
            )?,
            conv_out: conv2d(
                &vb.pp("conv_out"),
                reversed[last],
                config.out_channels,
                3,
                1,
                1,
            )?,
        })
    }

    /// # Shapes
    /// - latents: `[batch, latent_channels, h, w]`
    /// - output: `[batch, out_channels, f h, f w]` with `f` the downsample factor
    pub fn forward(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = conv_forward(&self.conv_in, latents);
        let x = self.mid_block.forward(x);
        let x = self.up_blocks.iter().fold(x, |x, b| b.forward(x));
        conv_forward(&self.conv_out, self.conv_norm_out.forward_silu(x))
    }
}
