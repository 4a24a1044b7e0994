//! Building blocks shared by every diffusers module: layers built through a [`VarBuilder`]
//! under their diffusers names, and the layer norm whose epsilon burn keeps private.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::loading::{Init, VarBuilder};

/// A linear layer from `weight` `[out, in]` (PyTorch layout, stored transposed as burn wants
/// `[in, out]`) and, if `bias`, `bias` `[out]`.
pub fn linear<B: Backend>(
    vb: &VarBuilder<B>,
    d_in: usize,
    d_out: usize,
    bias: bool,
) -> Result<Linear<B>> {
    let weight = vb
        .tensor("weight", [d_out, d_in], Init::fan_in(d_in))?
        .transpose();
    let bias = if bias {
        Some(vb.param("bias", [d_out], Init::fan_in(d_in))?)
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias,
    })
}

/// A square-kernel 2D convolution with bias, `weight` `[out, in, k, k]`.
pub fn conv2d<B: Backend>(
    vb: &VarBuilder<B>,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d<B>> {
    let fan_in = c_in * kernel * kernel;
    Ok(Conv2d {
        weight: vb.param(
            "weight",
            [c_out, c_in, kernel, kernel],
            Init::fan_in(fan_in),
        )?,
        bias: Some(vb.param("bias", [c_out], Init::fan_in(fan_in))?),
        stride: [stride, stride],
        kernel_size: [kernel, kernel],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(padding, padding, padding, padding),
    })
}

/// An affine group norm, `weight` and `bias` `[channels]`.
pub fn group_norm<B: Backend>(
    vb: &VarBuilder<B>,
    groups: usize,
    channels: usize,
    eps: f64,
) -> Result<GroupNorm<B>> {
    Ok(GroupNorm {
        gamma: Some(vb.param("weight", [channels], Init::Ones)?),
        beta: Some(vb.param("bias", [channels], Init::Zeros)?),
        num_groups: groups,
        num_channels: channels,
        epsilon: eps,
        affine: true,
    })
}

/// Layer norm over the last dimension, as `torch.nn.LayerNorm(dim, eps)` with affine weights.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale `[dim]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[dim]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Builds `weight` and `bias` of size `dim`.
    pub fn new(vb: &VarBuilder<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.param("weight", [dim], Init::Ones)?,
            bias: vb.param("bias", [dim], Init::Zeros)?,
            eps,
        })
    }

    /// # Shapes
    /// - x: `[batch, tokens, dim]` -> `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        let x = (x - mean) / (var + self.eps).sqrt();
        x * self.weight.val().unsqueeze::<3>() + self.bias.val().unsqueeze::<3>()
    }
}
