//! transformers' `CLIPAttention`, `CLIPMLP` and `CLIPEncoderLayer`: the pre-norm transformer
//! layer shared by the CLIP text encoder, whose self-attention is causal (a token sees itself
//! and the tokens before it, which is why padding after the end token cannot change earlier
//! outputs), and the CLIP vision encoder, whose patches all see each other.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

use super::config::Activation;
use crate::error::Result;
use crate::loading::VarBuilder;
use crate::nn::{attention_upcast, linear, linear_forward, LayerNorm};

/// Multi-head self-attention, `q_proj`, `k_proj`, `v_proj`, `out_proj`, all biased; causal in
/// the text encoder, full in the vision encoder.
#[derive(Module, Debug)]
pub struct CLIPAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    heads: usize,
    causal: bool,
}

impl<B: Backend> CLIPAttention<B> {
    /// Builds the four `hidden -> hidden` projections; `causal` masks attention to later
    /// tokens.
    pub fn new(vb: &VarBuilder<B>, hidden: usize, heads: usize, causal: bool) -> Result<Self> {
        let project = |name: &str| linear(&vb.pp(name), hidden, hidden, true);
        Ok(Self {
            q_proj: project("q_proj")?,
            k_proj: project("k_proj")?,
            v_proj: project("v_proj")?,
            out_proj: project("out_proj")?,
            heads,
            causal,
        })
    }

    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, tokens, hidden] = x.dims();
        x.reshape([batch, tokens, self.heads, hidden / self.heads])
            .swap_dims(1, 2)
    }

    /// `softmax(Q K^T / sqrt(head_dim)) V` per head, with the causal mask if the layer has one.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, hidden]` -> `[batch, tokens, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, tokens, hidden] = x.dims();
        let q = self.split_heads(linear_forward(&self.q_proj, x.clone()));
        let k = self.split_heads(linear_forward(&self.k_proj, x.clone()));
        let v = self.split_heads(linear_forward(&self.v_proj, x));
        let options = AttentionModuleOptions {
            is_causal: self.causal,
            ..Default::default()
        };
        let out = attention_upcast(q, k, v, options);
        linear_forward(
            &self.out_proj,
            out.swap_dims(1, 2).reshape([batch, tokens, hidden]),
        )
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct CLIPMLP<B: Backend> {
    /// `hidden -> intermediate`.
    pub fc1: Linear<B>,
    /// `intermediate -> hidden`.
    pub fc2: Linear<B>,
    quick_gelu: bool,
}

impl<B: Backend> CLIPMLP<B> {
    /// Builds `fc1` and `fc2`.
    pub fn new(
        vb: &VarBuilder<B>,
        hidden: usize,
        intermediate: usize,
        activation: Activation,
    ) -> Result<Self> {
        Ok(Self {
            fc1: linear(&vb.pp("fc1"), hidden, intermediate, true)?,
            fc2: linear(&vb.pp("fc2"), intermediate, hidden, true)?,
            quick_gelu: activation == Activation::QuickGelu,
        })
    }

    /// # Shapes
    /// - x: `[batch, tokens, hidden]` -> `[batch, tokens, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = linear_forward(&self.fc1, x);
        let h = if self.quick_gelu {
            h.clone() * sigmoid(h * 1.702)
        } else {
            gelu(h)
        };
        linear_forward(&self.fc2, h)
    }
}

/// `x + attn(norm1(x))`, then `+ mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct CLIPEncoderLayer<B: Backend> {
    layer_norm1: LayerNorm<B>,
    /// Causal self-attention.
    pub self_attn: CLIPAttention<B>,
    layer_norm2: LayerNorm<B>,
    /// The feed-forward network.
    pub mlp: CLIPMLP<B>,
}

impl<B: Backend> CLIPEncoderLayer<B> {
    /// Builds layer `encoder.layers.{i}` from `vb` at that prefix; `causal` as in
    /// [`CLIPAttention::new`].
    pub fn new(
        vb: &VarBuilder<B>,
        hidden: usize,
        intermediate: usize,
        heads: usize,
        activation: Activation,
        eps: f64,
        causal: bool,
    ) -> Result<Self> {
        Ok(Self {
            layer_norm1: LayerNorm::new(&vb.pp("layer_norm1"), hidden, eps)?,
            self_attn: CLIPAttention::new(&vb.pp("self_attn"), hidden, heads, causal)?,
            layer_norm2: LayerNorm::new(&vb.pp("layer_norm2"), hidden, eps)?,
            mlp: CLIPMLP::new(&vb.pp("mlp"), hidden, intermediate, activation)?,
        })
    }

    /// # Shapes
    /// - x: `[batch, tokens, hidden]` -> `[batch, tokens, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}
