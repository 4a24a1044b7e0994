//! Per-layer task weights of one prompt, and the relation-free weights of `off`.

use serde::{Deserialize, Serialize};

use crate::config::EwaVariant;
use crate::error::{EwaError, Result};
use crate::relations::layer_weights;
use crate::rows::TokenRows;
use crate::task_embeddings::TaskEmbeddings;

/// The weights w_i^l of one prompt: `values[l][i]` is task i's weight at cross-attention
/// layer l. Computed once per prompt; alpha is applied when they become gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EwaWeights {
    values: Vec<Vec<f64>>,
}

impl EwaWeights {
    /// Weights of every layer of one prompt. `prompt[l]` holds the prompt's layer-l rows at
    /// the positions that count (see [`crate::counted_positions`]); `Off` ignores them.
    pub fn compute(
        variant: EwaVariant,
        prompt: &[TokenRows],
        tasks: &TaskEmbeddings,
    ) -> Result<Self> {
        if variant == EwaVariant::Off {
            return Ok(Self::equal(tasks.layers(), tasks.task_count()));
        }
        if prompt.len() != tasks.layers() {
            return Err(EwaError::Shape {
                what: "prompt rows".into(),
                found: vec![prompt.len()],
                expected: format!("one per layer ({})", tasks.layers()),
            });
        }
        let values = prompt
            .iter()
            .enumerate()
            .map(|(l, rows)| {
                let concepts: Vec<&TokenRows> = (0..tasks.task_count())
                    .filter_map(|i| tasks.get(i, l))
                    .collect();
                layer_weights(variant, rows, &concepts)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { values })
    }

    /// `1 / tasks` for every task and layer: LoRA-M's equal-weight merge.
    pub fn equal(layers: usize, tasks: usize) -> Self {
        Self {
            values: vec![vec![1.0 / tasks.max(1) as f64; tasks]; layers],
        }
    }

    /// Weights from explicit values `[layer][task]`; errors when empty, ragged or not finite.
    pub fn from_values(values: Vec<Vec<f64>>) -> Result<Self> {
        let tasks = values.first().map_or(0, Vec::len);
        if tasks == 0 || values.iter().any(|l| l.len() != tasks) {
            return Err(EwaError::Shape {
                what: "EWA weights".into(),
                found: values.iter().map(Vec::len).collect(),
                expected: "at least one layer, the same positive task count in each".into(),
            });
        }
        if values.iter().flatten().any(|w| !w.is_finite()) {
            return Err(EwaError::NonFinite("EWA weights".into()));
        }
        Ok(Self { values })
    }

    /// Cross-attention layers L.
    pub fn layers(&self) -> usize {
        self.values.len()
    }

    /// Number of tasks g.
    pub fn task_count(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    /// The weights of every task at layer `layer`.
    pub fn layer(&self, layer: usize) -> Option<&[f64]> {
        self.values.get(layer).map(Vec::as_slice)
    }

    /// Every layer's weights, `[layer][task]`.
    pub fn values(&self) -> &[Vec<f64>] {
        &self.values
    }

    /// Each task's weight averaged over layers: one number per task, for logs and reports.
    pub fn mean_per_task(&self) -> Vec<f64> {
        let layers = self.values.len().max(1) as f64;
        (0..self.task_count())
            .map(|i| self.values.iter().map(|w| w[i]).sum::<f64>() / layers)
            .collect()
    }
}
