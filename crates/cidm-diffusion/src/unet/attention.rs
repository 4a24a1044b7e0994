//! diffusers' `Attention` (self and cross), the GEGLU `FeedForward`, and the
//! `BasicTransformerBlock` that chains them.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::conditioning::{Conditioning, Regions};
use crate::error::Result;
use crate::loading::VarBuilder;
use crate::lowrank::AdaptableLinear;
use crate::nn::{attention_upcast, geglu, linear, linear_forward, LayerNorm};

/// Multi-head attention with adaptable projections `to_q`, `to_k`, `to_v` (biased only in the
/// VAE) and `to_out.0` (with bias): `softmax(Q K^T / sqrt(d)) V` per head.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub to_q: AdaptableLinear<B>,
    /// Key projection.
    pub to_k: AdaptableLinear<B>,
    /// Value projection.
    pub to_v: AdaptableLinear<B>,
    /// Output projection (diffusers' `to_out.0`).
    pub to_out: AdaptableLinear<B>,
    /// Head count; crate-visible so that the VAE can assemble one from projections stored
    /// under deprecated names.
    pub(crate) heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Builds the projections; `context_dim` is the key/value input width (the query width
    /// for self-attention); `qkv_bias` gives `to_q`, `to_k`, `to_v` biases (the VAE's do).
    pub fn new(
        vb: &VarBuilder<B>,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let project = |name: &str, d_in: usize| -> Result<AdaptableLinear<B>> {
            Ok(AdaptableLinear::new(linear(
                &vb.pp(name),
                d_in,
                inner,
                qkv_bias,
            )?))
        };
        Ok(Self {
            to_q: project("to_q", query_dim)?,
            to_k: project("to_k", context_dim)?,
            to_v: project("to_v", context_dim)?,
            to_out: AdaptableLinear::new(linear(&vb.pp("to_out.0"), inner, query_dim, true)?),
            heads,
        })
    }

    /// The four projections in diffusers order, with their diffusers names.
    pub fn projections(&self) -> [(&'static str, &AdaptableLinear<B>); 4] {
        [
            ("to_q", &self.to_q),
            ("to_k", &self.to_k),
            ("to_v", &self.to_v),
            ("to_out.0", &self.to_out),
        ]
    }

    /// Mutable access to the four projections, for attaching banks.
    pub fn projections_mut(&mut self) -> [(&'static str, &mut AdaptableLinear<B>); 4] {
        [
            ("to_q", &mut self.to_q),
            ("to_k", &mut self.to_k),
            ("to_v", &mut self.to_v),
            ("to_out.0", &mut self.to_out),
        ]
    }

    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, tokens, inner] = x.dims();
        x.reshape([batch, tokens, self.heads, inner / self.heads])
            .swap_dims(1, 2)
    }

    /// Attends from `x` to `context` (to `x` itself when `None`).
    ///
    /// # Shapes
    /// - x: `[batch, tokens, query_dim]`
    /// - context: `[batch, context_tokens, context_dim]`
    /// - gates: `[batch, rank]` or `[1, rank]` for attached banks
    /// - output: `[batch, tokens, query_dim]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<&Tensor<B, 3>>,
        gates: Option<&Tensor<B, 2>>,
    ) -> Tensor<B, 3> {
        let [batch, tokens, _] = x.dims();
        let context = context.cloned().unwrap_or_else(|| x.clone());
        let q = self.split_heads(self.to_q.forward(x, gates));
        let k = self.split_heads(self.to_k.forward(context.clone(), gates));
        let v = self.split_heads(self.to_v.forward(context, gates));
        let out = attention_upcast(q, k, v, AttentionModuleOptions::default());
        let inner = out.dims()[1] * out.dims()[3];
        self.to_out
            .forward(out.swap_dims(1, 2).reshape([batch, tokens, inner]), gates)
    }

    /// Regional cross-attention (see [`Regions`]): the attention of `x` to `context`, and at
    /// each region's positions, for the samples the region lists, the attention of the same
    /// features to the region's text with the region's gates instead (overlaps averaged).
    /// Queries are independent rows, so attending from the region's positions alone gives
    /// exactly those rows of the full attention.
    ///
    /// # Shapes
    /// - x: `[batch, h * w, query_dim]`, context: `[batch, context_tokens, context_dim]`
    /// - positions: one list per region, indices into `h * w`
    /// - output: `[batch, h * w, query_dim]`
    pub fn forward_regional(
        &self,
        x: Tensor<B, 3>,
        context: &Tensor<B, 3>,
        gates: Option<&Tensor<B, 2>>,
        regions: &Regions<B>,
        layer: usize,
        positions: &[Vec<usize>],
    ) -> Tensor<B, 3> {
        let own = self.forward(x.clone(), Some(context), gates);
        let [batch, tokens, dim] = own.dims();
        let device = own.device();
        // How many regions cover each (sample, position): host data, as the positions are.
        let mut cover = vec![0u32; batch * tokens];
        let mut sum = Tensor::<B, 3>::zeros([batch, tokens, dim], &device);
        let index = |values: &[usize]| {
            let ids: Vec<i64> = values.iter().map(|&v| v as i64).collect();
            Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [values.len()]), &device)
        };
        for (region, cells) in regions.regions.iter().zip(positions) {
            let count = region.samples.len();
            if count == 0 || cells.is_empty() {
                continue;
            }
            for &s in &region.samples {
                for &p in cells {
                    cover[s * tokens + p] += 1;
                }
            }
            let (samples, cells) = (index(&region.samples), index(cells));
            let inside = x
                .clone()
                .select(0, samples.clone())
                .select(1, cells.clone());
            let text = region.text.get(layer).clone().repeat_dim(0, count);
            let gates = region.gates.as_ref().map(|g| g.get(layer));
            let f = self.forward(inside, Some(&text), gates);
            let placed = Tensor::<B, 3>::zeros([count, tokens, dim], &device).select_assign(
                1,
                cells,
                f,
                IndexingUpdateOp::Add,
            );
            sum = sum.select_assign(0, samples, placed, IndexingUpdateOp::Add);
        }
        let weights = |f: fn(u32) -> f32| {
            let values: Vec<f32> = cover.iter().map(|&c| f(c)).collect();
            Tensor::<B, 3>::from_data(TensorData::new(values, [batch, tokens, 1]), &device)
        };
        let keep = weights(|c| if c == 0 { 1.0 } else { 0.0 });
        let mean = weights(|c| if c == 0 { 0.0 } else { 1.0 / c as f32 });
        own * keep + sum * mean
    }
}

/// diffusers' `FeedForward` with GEGLU: `net.2(h * gelu(g))` where `[h, g] = net.0.proj(x)`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    proj: Linear<B>,
    out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    /// Builds `net.0.proj` (`dim -> 2 * 4 dim`) and `net.2` (`4 dim -> dim`).
    pub fn new(vb: &VarBuilder<B>, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: linear(&vb.pp("net.0.proj"), dim, 2 * inner, true)?,
            out: linear(&vb.pp("net.2"), inner, dim, true)?,
        })
    }

    /// # Shapes
    /// - x: `[batch, tokens, dim]` -> `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let activated = geglu(linear_forward(&self.proj, x))
            .expect("the projection's width, 2 * inner, is even");
        linear_forward(&self.out, activated)
    }
}

/// Self-attention, cross-attention and feed-forward, each pre-normed and residual. Its
/// cross-attention is cross-attention layer `layer` of the UNet.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn1: Attention<B>,
    norm2: LayerNorm<B>,
    /// Cross-attention to the text conditioning.
    pub attn2: Attention<B>,
    norm3: LayerNorm<B>,
    ff: FeedForward<B>,
    /// Index of this block's cross-attention in the UNet's stable order.
    pub layer: usize,
    /// The block's diffusers module path
    /// (`down_blocks.0.attentions.0.transformer_blocks.0`), which LoRA files key by.
    #[module(skip)]
    pub path: String,
}

impl<B: Backend> BasicTransformerBlock<B> {
    /// Builds a block of width `dim` attending to `context_dim`-wide text.
    pub fn new(
        vb: &VarBuilder<B>,
        dim: usize,
        context_dim: usize,
        heads: usize,
        layer: usize,
    ) -> Result<Self> {
        let head_dim = dim / heads;
        Ok(Self {
            norm1: LayerNorm::new(&vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::new(&vb.pp("attn1"), dim, dim, heads, head_dim, false)?,
            norm2: LayerNorm::new(&vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::new(&vb.pp("attn2"), dim, context_dim, heads, head_dim, false)?,
            norm3: LayerNorm::new(&vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(&vb.pp("ff"), dim)?,
            layer,
            path: vb.prefix().to_string(),
        })
    }

    /// The distinct ranks of the banks attached to this block's projections.
    pub fn bank_ranks(&self) -> Vec<usize> {
        let mut ranks: Vec<usize> = self
            .attn1
            .projections()
            .into_iter()
            .chain(self.attn2.projections())
            .filter_map(|(_, p)| p.bank.as_ref().map(|b| b.rank()))
            .collect();
        ranks.sort_unstable();
        ranks.dedup();
        ranks
    }

    /// # Shapes
    /// - x: `[batch, tokens, dim]`, context: `[batch, context_tokens, context_dim]`
    /// - gates: `[batch, rank]` or `[1, rank]`
    /// - output: `[batch, tokens, dim]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: &Tensor<B, 3>,
        gates: Option<&Tensor<B, 2>>,
    ) -> Tensor<B, 3> {
        self.forward_with(x, gates, |h| self.attn2.forward(h, Some(context), gates))
    }

    /// Runs the block on this layer's part of `cond` (text, gates and, when `cond` has
    /// regions, regional cross-attention at the positions of `resolution`). The UNet validates
    /// `cond` before its forward pass, so the positions exist.
    ///
    /// # Shapes
    /// - x: `[batch, h * w, dim]` for `resolution` `[h, w]` -> `[batch, h * w, dim]`
    pub fn forward_conditioned(
        &self,
        x: Tensor<B, 3>,
        cond: &Conditioning<B>,
        resolution: [usize; 2],
    ) -> Tensor<B, 3> {
        let (context, gates) = (cond.text(self.layer), cond.gates(self.layer));
        let regional = cond
            .regions
            .as_ref()
            .and_then(|r| r.positions(resolution).map(|p| (r, p)));
        self.forward_with(x, gates, |h| match regional {
            Some((regions, positions)) => self
                .attn2
                .forward_regional(h, context, gates, regions, self.layer, positions),
            None => self.attn2.forward(h, Some(context), gates),
        })
    }

    /// The block with `cross` as its cross-attention on the normed features.
    fn forward_with(
        &self,
        x: Tensor<B, 3>,
        gates: Option<&Tensor<B, 2>>,
        cross: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let x = self
            .attn1
            .forward(self.norm1.forward(x.clone()), None, gates)
            + x;
        let x = cross(self.norm2.forward(x.clone())) + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}
