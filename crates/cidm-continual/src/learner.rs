//! A task learner `Z_g` (METHOD.md section 3): what training one task leaves behind, its LoRA
//! factors and its words' layer-wise token embeddings, and the paper-orientation view of the
//! factors that the regularizers take.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_diffusion::{LowRankBank, UNet2DConditionModel};
use cidm_lora::{attached_banks, LoraAdapter, LoraFactors};

use crate::delta::LowRankDelta;

/// One trained task: its concept words, their class words, its LoRA and its token rows.
#[derive(Debug, Clone)]
pub struct TaskLearner<B: Backend> {
    /// Concept words, e.g. `<dog1>`.
    pub words: Vec<String>,
    /// One class word per concept word, e.g. `dog`.
    pub classes: Vec<String>,
    /// The task's LoRA.
    pub adapter: LoraAdapter<B>,
    /// Layer-wise token rows `[words, layers, hidden]`.
    pub tokens: Tensor<B, 3>,
}

/// An adapter's factors in the paper's orientation (`A = (scale * up)^T`, `B = down^T`), one
/// per adapted projection in module-path order: the layer order R1 and R2 use everywhere.
pub fn adapter_deltas<B: Backend>(adapter: &LoraAdapter<B>) -> Vec<LowRankDelta<B>> {
    let scale = adapter.scale();
    adapter
        .layers()
        .values()
        .map(|f: &LoraFactors<B>| paper_delta(f.down.clone(), f.up.clone(), scale))
        .collect()
}

/// The banks attached to `unet` in the paper's orientation and module-path order, with their
/// autodiff graph: the new task's factors while it trains.
pub fn attached_deltas<B: Backend>(unet: &UNet2DConditionModel<B>) -> Vec<LowRankDelta<B>> {
    let by_path: BTreeMap<String, &LowRankBank<B>> = attached_banks(unet)
        .into_iter()
        .map(|(site, bank)| (site.path, bank))
        .collect();
    by_path
        .into_values()
        .map(|bank| paper_delta(bank.down.val(), bank.up.val(), bank.scale))
        .collect()
}

fn paper_delta<B: Backend>(down: Tensor<B, 2>, up: Tensor<B, 2>, scale: f64) -> LowRankDelta<B> {
    LowRankDelta {
        up: up.mul_scalar(scale).transpose(),
        down: down.transpose(),
    }
}
