//! What the UNet is conditioned on, passed as data: text embeddings for the cross-attention
//! layers (one shared by all, or one per layer) and optional per-sample gates for the low-rank
//! banks of each layer.
//!
//! Cross-attention layers are numbered in one stable order shared by every crate: the
//! transformer blocks of the down blocks, then the mid block, then the up blocks, each in
//! execution order (16 layers for SD 1.5). [`crate::UNet2DConditionModel::cross_attention_layers`]
//! says how many a model has.

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
        }
    }

    /// One text embedding per cross-attention layer (layer-wise concept tokens).
    pub fn per_layer(texts: Vec<Tensor<B, 3>>) -> Self {
        Self {
            text: PerLayer::Layers(texts),
            gates: None,
        }
    }

    /// Adds bank gates.
    pub fn with_gates(mut self, gates: PerLayer<Tensor<B, 2>>) -> Self {
        self.gates = Some(gates);
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

    /// Checks counts and shapes against a UNet with `layers` cross-attention layers, context
    /// width `dim`, a batch of `batch` samples and, per layer, the ranks of the banks in that
    /// layer's transformer block (gates apply to every bank of the block, so all must match).
    pub(crate) fn validate(
        &self,
        layers: usize,
        dim: usize,
        batch: usize,
        ranks: &[Vec<usize>],
    ) -> Result<()> {
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
        let Some(gates) = &self.gates else {
            return Ok(());
        };
        gates.check_count("bank gates", layers)?;
        for (layer, gate) in gates.values() {
            let [b, width] = gate.dims();
            let layer_ranks: Vec<(usize, usize)> = ranks
                .iter()
                .enumerate()
                .filter(|(l, _)| layer.is_none_or(|only| only == *l))
                .flat_map(|(l, rs)| rs.iter().map(move |&r| (l, r)))
                .collect();
            if b != batch && b != 1 {
                return Err(Error::InvalidInput(format!(
                    "bank gates: batch {b}, expected {batch} or 1"
                )));
            }
            if let Some((l, rank)) = layer_ranks.into_iter().find(|&(_, rank)| rank != width) {
                return Err(Error::InvalidInput(format!(
                    "bank gates are {width} wide, the banks of layer {l} have rank {rank}"
                )));
            }
        }
        Ok(())
    }
}
