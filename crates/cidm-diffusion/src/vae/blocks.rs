//! The VAE's blocks (diffusers' `unet_2d_blocks`): `DownEncoderBlock2D`, `UpDecoderBlock2D`
//! and `UNetMidBlock2D`. They reuse the UNet's ResNet, resampling and attention modules; the
//! ResNets are built without a time embedding, the VAE has none.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::attention::{AttentionKeys, MidBlockAttention};
use crate::error::Result;
use crate::loading::VarBuilder;
use crate::unet::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// Epsilon of every group norm in diffusers' `Encoder` and `Decoder` (`resnet_eps`).
pub(crate) const VAE_NORM_EPS: f64 = 1e-6;

/// `layers` ResNets from `c_in` to `c_out` channels (the first changes the width).
fn resnets<B: Backend>(
    vb: &VarBuilder<B>,
    c_in: usize,
    c_out: usize,
    layers: usize,
    groups: usize,
) -> Result<Vec<ResnetBlock2D<B>>> {
    (0..layers)
        .map(|j| {
            let c_in = if j == 0 { c_in } else { c_out };
            ResnetBlock2D::new(
                &vb.pp(format!("resnets.{j}")),
                c_in,
                c_out,
                None,
                groups,
                VAE_NORM_EPS,
                1.0,
            )
        })
        .collect()
}

/// An encoder block: ResNets, then (all but the last block) a strided convolution that halves
/// the resolution, padded at the bottom and right only (diffusers' `padding=0`).
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    downsampler: Option<Downsample2D<B>>,
}

impl<B: Backend> DownEncoderBlock2D<B> {
    /// Builds `layers` ResNets from `c_in` to `c_out` and, if `downsample`, the downsampler.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        c_in: usize,
        c_out: usize,
        layers: usize,
        groups: usize,
        downsample: bool,
    ) -> Result<Self> {
        Ok(Self {
            resnets: resnets(vb, c_in, c_out, layers, groups)?,
            downsampler: downsample
                .then(|| Downsample2D::new(&vb.pp("downsamplers.0"), c_out, 0))
                .transpose()?,
        })
    }

    /// # Shapes
    /// - x: `[batch, c_in, h, w]` -> `[batch, c_out, floor(h / 2), floor(w / 2)]` with the
    ///   downsampler, `[batch, c_out, h, w]` without (`h`, `w` >= 2 with it)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.resnets.iter().fold(x, |x, r| r.forward(x, None));
        match &self.downsampler {
            Some(down) => down.forward(x),
            None => x,
        }
    }
}

/// A decoder block: ResNets, then (all but the last block) nearest-neighbour upsampling by 2
/// and a convolution.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    upsampler: Option<Upsample2D<B>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    /// Builds `layers` ResNets from `c_in` to `c_out` and, if `upsample`, the upsampler.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        c_in: usize,
        c_out: usize,
        layers: usize,
        groups: usize,
        upsample: bool,
    ) -> Result<Self> {
        Ok(Self {
            resnets: resnets(vb, c_in, c_out, layers, groups)?,
            upsampler: upsample
                .then(|| Upsample2D::new(&vb.pp("upsamplers.0"), c_out))
                .transpose()?,
        })
    }

    /// # Shapes
    /// - x: `[batch, c_in, h, w]` -> `[batch, c_out, 2 h, 2 w]` with the upsampler,
    ///   `[batch, c_out, h, w]` without
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.resnets.iter().fold(x, |x, r| r.forward(x, None));
        match &self.upsampler {
            Some(up) => {
                let [_, _, h, w] = x.dims();
                up.forward(x, [2 * h, 2 * w])
            }
            None => x,
        }
    }
}

/// `UNetMidBlock2D` with one layer and no time embedding: ResNet, optional self-attention,
/// ResNet, all at constant width.
#[derive(Module, Debug)]
pub struct UNetMidBlock2D<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attention: Option<MidBlockAttention<B>>,
}

impl<B: Backend> UNetMidBlock2D<B> {
    /// Builds the two ResNets and, if `add_attention`, the attention (`attentions.0`) under
    /// the names `keys` finds.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        channels: usize,
        groups: usize,
        add_attention: bool,
        keys: AttentionKeys<'_>,
    ) -> Result<Self> {
        Ok(Self {
            resnets: resnets(vb, channels, channels, 2, groups)?,
            attention: add_attention
                .then(|| {
                    MidBlockAttention::new(
                        &vb.pp("attentions.0"),
                        channels,
                        groups,
                        VAE_NORM_EPS,
                        keys,
                    )
                })
                .transpose()?,
        })
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]` -> `[batch, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(attention) = &self.attention {
            x = attention.forward(x);
        }
        self.resnets[1].forward(x, None)
    }
}
