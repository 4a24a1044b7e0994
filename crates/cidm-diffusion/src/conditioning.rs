//! What the UNet is conditioned on, passed as data: text embeddings for the cross-attention
//! layers (one shared by all, or one per layer), optional per-sample gates for the low-rank
//! banks of each layer, and optional regions for regional cross-attention.
//!
//! Cross-attention layers are numbered in one stable order shared by every crate: the
//! transformer blocks of the down blocks, then the mid block, then the up blocks, each in
//! execution order (16 layers for SD 1.5). [`crate::UNet2DConditionModel::cross_attention_layers`]
//! says how many a model has.

use std::collections::HashSet;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// Per-layer data, either one value shared by every layer or one value per layer.
#[derive(Debug, Clone)]
pub enum PerLayer<T> {
    /// One value used by every cross-attention layer.
    Shared(T),
    /// One value per cross-attention layer, in the stable down-mid-up order.
    Layers(Vec<T>),
}

impl<T> PerLayer<T> {
    /// The value for layer `index` (the caller has validated the count).
    pub fn get(&self, index: usize) -> &T {
        match self {
            PerLayer::Shared(value) => value,
            PerLayer::Layers(values) => &values[index],
        }
    }

    fn check_count(&self, what: &str, layers: usize) -> Result<()> {
        match self {
            PerLayer::Layers(values) if values.len() != layers => {
                Err(Error::InvalidInput(format!(
                "{what}: {} per-layer values given, the UNet has {layers} cross-attention layers",
                values.len()
            )))
            }
            _ => Ok(()),
        }
    }

    fn values(&self) -> Box<dyn Iterator<Item = (Option<usize>, &T)> + '_> {
        match self {
            PerLayer::Shared(value) => Box::new(std::iter::once((None, value))),
            PerLayer::Layers(values) => {
                Box::new(values.iter().enumerate().map(|(i, v)| (Some(i), v)))
            }
        }
    }
}

/// The conditioning of one UNet call.
#[derive(Debug, Clone)]
pub struct Conditioning<B: Backend> {
    /// Text embeddings `[batch, tokens, cross_attention_dim]` used as keys and values.
    pub text: PerLayer<Tensor<B, 3>>,
    /// Gates `[batch, rank]` (or `[1, rank]`) for the low-rank banks of each layer's
    /// transformer block; `None` runs attached banks ungated.
    pub gates: Option<PerLayer<Tensor<B, 2>>>,
    /// Regional cross-attention; `None` runs every cross-attention on `text` alone.
    pub regions: Option<Regions<B>>,
}

/// One region of regional cross-attention: its own text and bank gates, and the batch samples
/// in which it replaces the cross-attention output at its positions.
#[derive(Debug, Clone)]
pub struct Region<B: Backend> {
    /// The region's text embedding `[1, tokens, cross_attention_dim]`, shared or per layer.
    pub text: PerLayer<Tensor<B, 3>>,
    /// Gates `[1, rank]` for the banks while attending to this region's text; `None` runs
    /// attached banks ungated.
    pub gates: Option<PerLayer<Tensor<B, 2>>>,
    /// Indices of the batch samples this region applies to, each at most once.
    pub samples: Vec<usize>,
}

/// Regional cross-attention (METHOD.md section 5): in every cross-attention layer, region u
/// computes `f_u` = the layer's cross-attention of the features at its positions to the
/// region's own text (with the region's own gates), and there `f_u` replaces the output of
/// the attention to the sample's text. Where several regions cover a position their outputs
/// are averaged.
///
/// Positions are host data (row-major pixel indices of each attention resolution), so each
/// region attends only from its own positions of its own samples: U regions partitioning the
/// image add about two samples' worth of cross-attention, not U times the batch. The caller
/// builds them for every resolution that
/// [`crate::UNet2DConditionModel::attention_resolutions`] lists for the sample size.
#[derive(Debug, Clone)]
pub struct Regions<B: Backend> {
    /// The regions.
    pub regions: Vec<Region<B>>,
    /// Per attention resolution `[h, w]`: for each region, the row-major positions
    /// (`row * w + column`, strictly increasing) it covers; possibly none at coarse layers.
    pub positions: Vec<([usize; 2], Vec<Vec<usize>>)>,
}

impl<B: Backend> Regions<B> {
    /// Each region's positions at resolution `[h, w]`, if given.
    pub fn positions(&self, resolution: [usize; 2]) -> Option<&[Vec<usize>]> {
        self.positions
            .iter()
            .find(|(r, _)| *r == resolution)
            .map(|(_, p)| p.as_slice())
    }

    /// Checks the regions against the UNet's layer count, context width, batch, bank ranks
    /// and the attention resolution of each layer.
    fn validate(
        &self,
        dim: usize,
        batch: usize,
        ranks: &[Vec<usize>],
        resolutions: &[[usize; 2]],
    ) -> Result<()> {
        let layers = resolutions.len();
        let bad = |msg: String| Err(Error::InvalidInput(format!("regions: {msg}")));
        if self.regions.is_empty() {
            return bad("no region given (leave `regions` unset instead)".into());
        }
        for (u, region) in self.regions.iter().enumerate() {
            region
                .text
                .check_count(&format!("text of region {u}"), layers)?;
            for (layer, text) in region.text.values() {
                let [b, _, d] = text.dims();
                if b != 1 || d != dim {
                    return bad(format!(
                        "text of region {u}{}: shape {:?}, expected [1, tokens, {dim}]",
                        layer.map(|l| format!(" in layer {l}")).unwrap_or_default(),
                        text.dims()
                    ));
                }
            }
            if let Some(gates) = &region.gates {
                check_gates(gates, &format!("gates of region {u}"), 1, layers, ranks)?;
            }
            let mut seen = HashSet::new();
            if let Some(&s) = region
                .samples
                .iter()
                .find(|&&s| s >= batch || !seen.insert(s))
            {
                return bad(format!(
                    "region {u} lists sample {s} twice or outside the batch of {batch}"
                ));
            }
        }
        for &[h, w] in resolutions {
            let Some(positions) = self.positions([h, w]) else {
                return bad(format!("no positions for attention resolution {h}x{w}"));
            };
            if positions.len() != self.regions.len() {
                return bad(format!(
                    "{} position lists at resolution {h}x{w} for {} regions",
                    positions.len(),
                    self.regions.len()
                ));
            }
            for (u, p) in positions.iter().enumerate() {
                let increasing = p.windows(2).all(|w| w[0] < w[1]);
                if !increasing || p.last().is_some_and(|&last| last >= h * w) {
                    return bad(format!(
                        "positions of region {u} at {h}x{w} must increase strictly and stay below {}",
                        h * w
                    ));
                }
            }
        }
        Ok(())
    }
}

impl<B: Backend> Conditioning<B> {
    /// One text embedding for every cross-attention layer.
    ///
    /// # Shapes
    /// - text: `[batch, tokens, cross_attention_dim]`
    pub fn shared(text: Tensor<B, 3>) -> Self {
        Self {
            text: PerLayer::Shared(text),
            gates: None,
            regions: None,
        }
    }

    /// One text embedding per cross-attention layer (layer-wise concept tokens).
    pub fn per_layer(texts: Vec<Tensor<B, 3>>) -> Self {
        Self {
            text: PerLayer::Layers(texts),
            gates: None,
            regions: None,
        }
    }

    /// Adds bank gates.
    pub fn with_gates(mut self, gates: PerLayer<Tensor<B, 2>>) -> Self {
        self.gates = Some(gates);
        self
    }

    /// Adds regional cross-attention.
    pub fn with_regions(mut self, regions: Regions<B>) -> Self {
        self.regions = Some(regions);
        self
    }

    /// The text embedding of cross-attention layer `layer`.
    pub fn text(&self, layer: usize) -> &Tensor<B, 3> {
        self.text.get(layer)
    }

    /// The bank gates of cross-attention layer `layer`.
    pub fn gates(&self, layer: usize) -> Option<&Tensor<B, 2>> {
        self.gates.as_ref().map(|g| g.get(layer))
    }

    /// Checks counts and shapes against a UNet whose cross-attention layers run at
    /// `resolutions` (one `[h, w]` per layer, so their count is the layer count), with context
    /// width `dim`, a batch of `batch` samples and, per layer, the ranks of the banks in that
    /// layer's transformer block (gates apply to every bank of the block, so all must match).
    pub(crate) fn validate(
        &self,
        resolutions: &[[usize; 2]],
        dim: usize,
        batch: usize,
        ranks: &[Vec<usize>],
    ) -> Result<()> {
        let layers = resolutions.len();
        self.text.check_count("text conditioning", layers)?;
        for (layer, text) in self.text.values() {
            let [b, _, d] = text.dims();
            if b != batch || d != dim {
                return Err(Error::InvalidInput(format!(
                    "text conditioning{}: shape {:?}, expected [{batch}, tokens, {dim}]",
                    layer.map(|l| format!(" of layer {l}")).unwrap_or_default(),
                    text.dims()
                )));
            }
        }
        if let Some(gates) = &self.gates {
            check_gates(gates, "bank gates", batch, layers, ranks)?;
        }
        match &self.regions {
            Some(regions) => regions.validate(dim, batch, ranks, resolutions),
            None => Ok(()),
        }
    }
}

/// Checks per-layer gates: `[batch, rank]` or `[1, rank]`, the rank of every bank of the layer.
fn check_gates<B: Backend>(
    gates: &PerLayer<Tensor<B, 2>>,
    what: &str,
    batch: usize,
    layers: usize,
    ranks: &[Vec<usize>],
) -> Result<()> {
    gates.check_count(what, layers)?;
    for (layer, gate) in gates.values() {
        let [b, width] = gate.dims();
        if b != batch && b != 1 {
            return Err(Error::InvalidInput(format!(
                "{what}: batch {b}, expected {batch} or 1"
            )));
        }
        let mismatch = ranks
            .iter()
            .enumerate()
            .filter(|(l, _)| layer.is_none_or(|only| only == *l))
            .flat_map(|(l, rs)| rs.iter().map(move |&r| (l, r)))
            .find(|&(_, rank)| rank != width);
        if let Some((l, rank)) = mismatch {
            return Err(Error::InvalidInput(format!(
                "{what} are {width} wide, the banks of layer {l} have rank {rank}"
            )));
        }
    }
    Ok(())
}
