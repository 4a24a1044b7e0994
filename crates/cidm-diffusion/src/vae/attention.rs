//! The self-attention of the VAE's mid blocks: diffusers' `Attention` as `UNetMidBlock2D`
//! builds it (a group norm, one head as wide as the channels, biased projections, a residual),
//! loaded under either of the two namings VAE checkpoints use.
//!
//! Supported checkpoint layouts, detected per projection:
//! - current diffusers: `to_q`, `to_k`, `to_v`, `to_out.0`, weights `[c, c]`;
//! - deprecated (diffusers' old `AttentionBlock`, still in many SD 1.x VAE files): `query`,
//!   `key`, `value`, `proj_attn`, weights `[c, c]`;
//! - either naming with 1x1-convolution weights `[c, c, 1, 1]`, as the original LDM
//!   checkpoints stored them and some conversions left them.
//!
//! The norm is `group_norm` in all of them. A file holding both names for one projection loads
//! the deprecated one and then fails `ensure_all_used` on the other.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::loading::{Init, SafetensorsWeights, VarBuilder};
use crate::lowrank::AdaptableLinear;
use crate::nn::{group_norm, linear, to_image, to_tokens, GroupNorm};
use crate::unet::attention::Attention;

/// The four projections: current diffusers name, deprecated name.
const PROJECTIONS: [(&str, &str); 4] = [
    ("to_q", "query"),
    ("to_k", "key"),
    ("to_v", "value"),
    ("to_out.0", "proj_attn"),
];

/// Where the builder learns which names and shapes a checkpoint gives the projections.
#[derive(Debug, Clone, Copy)]
pub enum AttentionKeys<'a> {
    /// Current names and `[c, c]` weights (random initialisation).
    Current,
    /// Looked up per projection in these weights: the deprecated name if it is stored, else
    /// the current one; a 4-dimensional stored weight is read as a 1x1 convolution.
    DetectIn(&'a SafetensorsWeights),
}

impl AttentionKeys<'_> {
    /// The stored name and whether the weight is conv-shaped, for one projection of the
    /// attention at `vb`.
    fn resolve<B: Backend>(
        &self,
        vb: &VarBuilder<B>,
        current: &'static str,
        deprecated: &'static str,
    ) -> (&'static str, bool) {
        match self {
            AttentionKeys::Current => (current, false),
            AttentionKeys::DetectIn(weights) => {
                let weight = |name: &str| weights.shape(&vb.pp(name).path("weight"));
                let name = if weight(deprecated).is_some() {
                    deprecated
                } else {
                    current
                };
                (name, weight(name).is_some_and(|shape| shape.len() == 4))
            }
        }
    }
}

/// A biased `c -> c` projection whose weight is stored as a 1x1 convolution `[c, c, 1, 1]`.
fn conv_shaped_linear<B: Backend>(vb: &VarBuilder<B>, c: usize) -> Result<Linear<B>> {
    let weight = vb.matrix_transposed("weight", [c, c, 1, 1], Init::fan_in(c))?;
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias: Some(vb.param("bias", [c], Init::fan_in(c))?),
    })
}

/// `x + to_out(attention(group_norm(x)))` over the `h * w` positions, one head of width `c`.
#[derive(Module, Debug)]
pub struct MidBlockAttention<B: Backend> {
    group_norm: GroupNorm<B>,
    attention: Attention<B>,
}

impl<B: Backend> MidBlockAttention<B> {
    /// Builds the norm (`groups`, `eps`) and the projections of width `channels`, under the
    /// names `keys` finds.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        channels: usize,
        groups: usize,
        eps: f64,
        keys: AttentionKeys<'_>,
    ) -> Result<Self> {
        let [to_q, to_k, to_v, to_out] = PROJECTIONS.map(|(current, deprecated)| {
            let (name, conv_shaped) = keys.resolve(vb, current, deprecated);
            let vb = vb.pp(name);
            if conv_shaped {
                conv_shaped_linear(&vb, channels)
            } else {
                linear(&vb, channels, channels, true)
            }
            .map(AdaptableLinear::new)
        });
        Ok(Self {
            group_norm: group_norm(&vb.pp("group_norm"), groups, channels, eps)?,
            attention: Attention {
                to_q: to_q?,
                to_k: to_k?,
                to_v: to_v?,
                to_out: to_out?,
                heads: 1,
            },
        })
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]` -> `[batch, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let tokens = to_tokens(self.group_norm.forward(x.clone()));
        let out = self.attention.forward(tokens, None, None);
        to_image(out, h, w) + x
    }
}
