//! The adaptable projections of a UNet, named by their full diffusers module paths
//! (`down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q`).
//!
//! Those paths are what LoRA files key their factors by and what target patterns match, so
//! they are computed in one place, in the UNet's stable cross-attention layer order (down,
//! mid, up) that every crate shares.

use burn::tensor::backend::Backend;
use cidm_diffusion::unet::BasicTransformerBlock;
use cidm_diffusion::{AdaptableLinear, UNet2DConditionModel};

/// Which attention of a transformer block a projection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttentionKind {
    /// `attn1`: the block's self-attention.
    SelfAttention,
    /// `attn2`: the block's cross-attention to the text conditioning.
    CrossAttention,
}

impl AttentionKind {
    /// The diffusers module name: `attn1` or `attn2`.
    pub fn module_name(self) -> &'static str {
        match self {
            AttentionKind::SelfAttention => "attn1",
            AttentionKind::CrossAttention => "attn2",
        }
    }
}

/// One adaptable projection of a UNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionSite {
    /// Full diffusers module path, e.g.
    /// `up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0`.
    pub path: String,
    /// The cross-attention layer index of the projection's transformer block (its gates).
    pub layer: usize,
    /// Self- or cross-attention.
    pub attention: AttentionKind,
    /// `to_q`, `to_k`, `to_v` or `to_out.0`.
    pub projection: &'static str,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

/// Every adaptable projection of `unet`, in the stable layer order, with self-attention before
/// cross-attention within a block and the projections in diffusers order (q, k, v, out).
pub fn projection_sites<B: Backend>(unet: &UNet2DConditionModel<B>) -> Vec<ProjectionSite> {
    unet.transformer_blocks()
        .into_iter()
        .flat_map(|block| block_sites(block))
        .collect()
}

/// Calls `visit` with every adaptable projection of `unet` and its site, in the order of
/// [`projection_sites`]; stops at the first error.
pub(crate) fn visit_projections_mut<B: Backend, E>(
    unet: &mut UNet2DConditionModel<B>,
    mut visit: impl FnMut(&ProjectionSite, &mut AdaptableLinear<B>) -> Result<(), E>,
) -> Result<(), E> {
    for block in unet.transformer_blocks_mut() {
        let sites = block_sites(block);
        let projections = block
            .attn1
            .projections_mut()
            .into_iter()
            .chain(block.attn2.projections_mut());
        for (site, (_, projection)) in sites.iter().zip(projections) {
            visit(site, projection)?;
        }
    }
    Ok(())
}

/// The sites of one transformer block: `attn1` then `attn2`, q, k, v, out each.
fn block_sites<B: Backend>(block: &BasicTransformerBlock<B>) -> Vec<ProjectionSite> {
    [
        (AttentionKind::SelfAttention, &block.attn1),
        (AttentionKind::CrossAttention, &block.attn2),
    ]
    .into_iter()
    .flat_map(|(attention, attn)| {
        attn.projections()
            .into_iter()
            .map(move |(projection, linear)| ProjectionSite {
                path: format!("{}.{}.{projection}", block.path, attention.module_name()),
                layer: block.layer,
                attention,
                projection,
                d_in: linear.d_in(),
                d_out: linear.d_out(),
            })
    })
    .collect()
}
