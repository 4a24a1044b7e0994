//! diffusers' `Transformer2DModel` for continuous (latent image) input: group norm, `proj_in`
//! (1x1 conv for SD 1.x, linear for SD 2.x), transformer blocks over the flattened pixels,
//! `proj_out`, residual.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::attention::BasicTransformerBlock;
use crate::conditioning::Conditioning;
use crate::error::Result;
use crate::loading::VarBuilder;
use crate::nn::{
    conv2d, conv_forward, group_norm, linear, linear_forward, to_image, to_tokens, GroupNorm,
};

/// `proj_in` / `proj_out`: a 1x1 convolution or a linear layer on the flattened pixels.
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    /// SD 1.x: `use_linear_projection = false`.
    Conv(Conv2d<B>),
    /// SD 2.x: `use_linear_projection = true`.
    Linear(Linear<B>),
}

impl<B: Backend> Projection<B> {
    fn new(vb: &VarBuilder<B>, c_in: usize, c_out: usize, linear_projection: bool) -> Result<Self> {
        Ok(if linear_projection {
            Projection::Linear(linear(vb, c_in, c_out, true)?)
        } else {
            Projection::Conv(conv2d(vb, c_in, c_out, 1, 1, 0)?)
        })
    }
}

/// A spatial transformer.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    norm: GroupNorm<B>,
    proj_in: Projection<B>,
    /// The transformer blocks, one cross-attention layer each.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    proj_out: Projection<B>,
}

/// What a [`Transformer2DModel`] is built from.
pub(crate) struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub depth: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl<B: Backend> Transformer2DModel<B> {
    /// Builds the model; its blocks take cross-attention layer indices from `next_layer` on,
    /// which is advanced past them.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        spec: &TransformerSpec,
        next_layer: &mut usize,
    ) -> Result<Self> {
        let c = spec.channels;
        let blocks = (0..spec.depth)
            .map(|i| {
                let layer = *next_layer;
                *next_layer += 1;
                BasicTransformerBlock::new(
                    &vb.pp(format!("transformer_blocks.{i}")),
                    c,
                    spec.context_dim,
                    spec.heads,
                    layer,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(&vb.pp("norm"), spec.groups, c, 1e-6)?,
            proj_in: Projection::new(&vb.pp("proj_in"), c, c, spec.linear_projection)?,
            transformer_blocks: blocks,
            proj_out: Projection::new(&vb.pp("proj_out"), c, c, spec.linear_projection)?,
        })
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]` -> `[batch, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>, cond: &Conditioning<B>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv_forward(conv, x)),
            Projection::Linear(linear) => linear_forward(linear, to_tokens(x)),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward_conditioned(tokens, cond, [h, w]);
        }
        let x = match &self.proj_out {
            Projection::Conv(conv) => conv_forward(conv, to_image(tokens, h, w)),
            Projection::Linear(linear) => to_image(linear_forward(linear, tokens), h, w),
        };
        x + residual
    }
}
