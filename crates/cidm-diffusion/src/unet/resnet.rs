//! diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::error::Result;
use crate::loading::VarBuilder;
use crate::nn::{conv2d, conv_forward, group_norm, linear, linear_forward, GroupNorm};

/// A residual block conditioned on the time embedding:
/// `(x + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb)))))) / scale`, with a 1x1
/// `conv_shortcut` on `x` when the channel count changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    time_emb_proj: Option<Linear<B>>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    conv_shortcut: Option<Conv2d<B>>,
    output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// Builds a block from `c_in` to `c_out` channels; `temb` is the time embedding width, or
    /// `None` for the VAE's blocks, which have no time conditioning.
    pub fn new(
        vb: &VarBuilder<B>,
        c_in: usize,
        c_out: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
        output_scale_factor: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(&vb.pp("norm1"), groups, c_in, eps)?,
            conv1: conv2d(&vb.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: temb
                .map(|temb| linear(&vb.pp("time_emb_proj"), temb, c_out, true))
                .transpose()?,
            norm2: group_norm(&vb.pp("norm2"), groups, c_out, eps)?,
            conv2: conv2d(&vb.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut: if c_in != c_out {
                Some(conv2d(&vb.pp("conv_shortcut"), c_in, c_out, 1, 1, 0)?)
            } else {
                None
            },
            output_scale_factor,
        })
    }

    /// # Shapes
    /// - x: `[batch, c_in, h, w]`, temb: `[batch, temb]` -> `[batch, c_out, h, w]`
    ///
    /// `temb` is ignored by blocks built without a time embedding.
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = conv_forward(&self.conv1, self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h + linear_forward(proj, silu(temb.clone())).unsqueeze_dims::<4>(&[2, 3]);
        }
        let h = conv_forward(&self.conv2, self.norm2.forward_silu(h));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv_forward(conv, x),
            None => x,
        };
        let out = shortcut + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// Strided 3x3 convolution halving the resolution (diffusers `downsamplers.0.conv`). With
/// `padding` 0 diffusers pads one row and column at the bottom and right instead.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    /// Builds the convolution.
    pub fn new(vb: &VarBuilder<B>, channels: usize, padding: usize) -> Result<Self> {
        let mut conv = conv2d(&vb.pp("conv"), channels, channels, 3, 2, padding)?;
        if padding == 0 {
            conv.padding = PaddingConfig2d::Explicit(0, 0, 1, 1);
        }
        Ok(Self { conv })
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]` -> `[batch, c, ceil(h / 2), ceil(w / 2)]` (with padding 1)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv_forward(&self.conv, x)
    }
}

/// Nearest-neighbour upsampling to a given size followed by a 3x3 convolution (diffusers
/// `upsamplers.0.conv`).
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    conv: Conv2d<B>,
}

/// Source indices of PyTorch's `nearest` interpolation: `floor(i * in / out)`.
fn nearest_indices<B: Backend>(
    size_in: usize,
    size_out: usize,
    device: &B::Device,
) -> Tensor<B, 1, Int> {
    let indices: Vec<i64> = (0..size_out)
        .map(|i| ((i * size_in) / size_out) as i64)
        .collect();
    Tensor::from_ints(indices.as_slice(), device)
}

impl<B: Backend> Upsample2D<B> {
    /// Builds the convolution.
    pub fn new(vb: &VarBuilder<B>, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(&vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// Upsamples to `size` (twice the input size unless the skip connection it will be
    /// concatenated with says otherwise, for odd latent sizes).
    ///
    /// # Shapes
    /// - x: `[batch, c, h, w]` -> `[batch, c, size[0], size[1]]`
    pub fn forward(&self, x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let device = x.device();
        let x = if size == [2 * h, 2 * w] {
            let [b, c, _, _] = x.dims();
            x.reshape([b, c, h, 1, w, 1])
                .repeat_dim(3, 2)
                .repeat_dim(5, 2)
                .reshape([b, c, 2 * h, 2 * w])
        } else {
            x.select(2, nearest_indices::<B>(h, size[0], &device))
                .select(3, nearest_indices::<B>(w, size[1], &device))
        };
        conv_forward(&self.conv, x)
    }
}
