//! Several adapters as one gated bank, so that one batched UNet call runs a different adapter
//! mixture per sample without forming any dense `in x out` delta.
//!
//! For every projection, the down factors are concatenated along the rank axis and so are the
//! up factors, each adapter's `alpha / rank` folded into its up factor; the bank's own scale is
//! one. Per-sample gates `g [batch, R]` repeat adapter i's weight `w_i` over its `r_i`
//! columns, so the bank computes `sum_i w_i * scale_i * (x down_i) up_i`: the weighted merge
//! of METHOD.md section 4, applied exactly. A projection that some adapters do not adapt gets
//! zero columns for them, so every bank of the stack has the same total rank and one gate
//! width serves them all.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::precision::param_zeros;
use cidm_diffusion::{PerLayer, UNet2DConditionModel};

use crate::adapter::{attach_layers, LoraAdapter, LoraFactors};
use crate::error::{LoraError, Result};

/// Adapters stacked into one bank per projection, gated per sample.
#[derive(Debug, Clone)]
pub struct LoraStack<B: Backend> {
    ranks: Vec<usize>,
    layers: BTreeMap<String, LoraFactors<B>>,
    /// `[adapters, total_rank]`: row i is 1 on adapter i's columns. `weights @ expansion`
    /// turns per-adapter weights into per-column gates.
    expansion: Tensor<B, 2>,
}

impl<B: Backend> LoraStack<B> {
    /// Stacks `adapters` in the given order (column block i belongs to adapter i). Errors when
    /// the list is empty or two adapters disagree on a projection's size.
    pub fn new(adapters: &[LoraAdapter<B>]) -> Result<Self> {
        let Some(first) = adapters.first() else {
            return Err(LoraError::InvalidInput(
                "a stack needs at least one adapter".into(),
            ));
        };
        let device = first
            .layers()
            .values()
            .next()
            .map(|f| f.down.device())
            .ok_or_else(|| LoraError::InvalidInput("an adapter has no layers".into()))?;
        let ranks: Vec<usize> = adapters.iter().map(|a| a.config().rank).collect();
        let total: usize = ranks.iter().sum();

        let mut sizes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for adapter in adapters {
            for (path, factors) in adapter.layers() {
                let [d_in, _] = factors.down.dims();
                let [_, d_out] = factors.up.dims();
                match sizes.get(path.as_str()) {
                    Some(&(i, o)) if (i, o) != (d_in, d_out) => {
                        return Err(LoraError::ShapeMismatch {
                            key: format!("{path} [in, out]"),
                            expected: vec![i, o],
                            found: vec![d_in, d_out],
                        });
                    }
                    _ => {
                        sizes.insert(path, (d_in, d_out));
                    }
                }
            }
        }

        let layers = sizes
            .into_iter()
            .map(|(path, (d_in, d_out))| {
                let (downs, ups): (Vec<_>, Vec<_>) = adapters
                    .iter()
                    .map(|adapter| match adapter.layers().get(path) {
                        Some(f) => (f.down.clone(), f.up.clone() * adapter.scale()),
                        None => {
                            let rank = adapter.config().rank;
                            (
                                param_zeros([d_in, rank], &device),
                                param_zeros([rank, d_out], &device),
                            )
                        }
                    })
                    .unzip();
                let factors = LoraFactors {
                    down: Tensor::cat(downs, 1),
                    up: Tensor::cat(ups, 0),
                };
                (path.to_string(), factors)
            })
            .collect();

        let mut expansion = vec![0f32; adapters.len() * total];
        let mut column = 0;
        for (row, &rank) in ranks.iter().enumerate() {
            for c in column..column + rank {
                expansion[row * total + c] = 1.0;
            }
            column += rank;
        }
        Ok(Self {
            expansion: Tensor::from_data(
                TensorData::new(expansion, [adapters.len(), total]),
                &device,
            ),
            ranks,
            layers,
        })
    }

    /// Number of stacked adapters.
    pub fn adapter_count(&self) -> usize {
        self.ranks.len()
    }

    /// The rank of each stacked adapter, in stack order.
    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    /// The banks' rank R: the sum of the adapters' ranks, and the width of the gates.
    pub fn total_rank(&self) -> usize {
        self.ranks.iter().sum()
    }

    /// The stacked factors of every projection (up factors carry their adapter's scale).
    pub fn layers(&self) -> &BTreeMap<String, LoraFactors<B>> {
        &self.layers
    }

    /// Attaches the stacked banks (scale 1) to `unet`; checks the fit first, so a misfit
    /// changes nothing. Run the model with gates from [`LoraStack::gates`]; without gates
    /// every adapter counts with weight 1.
    pub fn attach(&self, unet: &mut UNet2DConditionModel<B>) -> Result<()> {
        attach_layers(unet, &self.layers, 1.0)
    }

    /// Per-column gates `[batch, R]` from per-adapter weights `[batch, adapters]` (or
    /// `[1, adapters]` for one mixture shared by the batch): adapter i's weight is repeated
    /// over its r_i columns.
    pub fn gates(&self, weights: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let [_, count] = weights.dims();
        if count != self.adapter_count() {
            return Err(LoraError::InvalidInput(format!(
                "gate weights have {count} columns, the stack has {} adapters",
                self.adapter_count()
            )));
        }
        Ok(weights.matmul(self.expansion.clone()))
    }

    /// [`LoraStack::gates`] for every layer: one weight matrix shared by all layers, or one
    /// per cross-attention layer (elastic weight aggregation's per-layer weights).
    pub fn per_layer_gates(
        &self,
        weights: PerLayer<Tensor<B, 2>>,
    ) -> Result<PerLayer<Tensor<B, 2>>> {
        Ok(match weights {
            PerLayer::Shared(w) => PerLayer::Shared(self.gates(w)?),
            PerLayer::Layers(ws) => PerLayer::Layers(
                ws.into_iter()
                    .map(|w| self.gates(w))
                    .collect::<Result<_>>()?,
            ),
        })
    }
}
