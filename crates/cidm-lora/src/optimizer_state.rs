//! AdamW's per-parameter state keyed by stable names instead of burn's parameter ids.
//!
//! burn keys an optimizer's state by `ParamId`, which is drawn afresh whenever a module is
//! built, so a state saved by one process cannot be loaded into a model rebuilt by the next.
//! Training checkpoints therefore store the moments under names the caller chooses (module
//! paths), and restoring maps each name to the id the rebuilt parameter has now.

use std::collections::{BTreeMap, HashMap};

use burn::module::{AutodiffModule, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamW, AdamWState, AdaptiveMomentumState, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use cidm_diffusion::precision::param_from_data;

use crate::error::{LoraError, Result};

/// The AdamW state of one parameter: its step count and both moments, backend-free so that
/// it can be written to a file.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamMoments {
    /// Steps taken on this parameter (AdamW's bias correction depends on it).
    pub time: usize,
    /// First moment, the parameter's shape.
    pub moment_1: TensorData,
    /// Second moment, the parameter's shape.
    pub moment_2: TensorData,
}

/// The state of every named parameter of `optimizer` that has one (parameters not stepped yet
/// have none).
pub fn adam_moments<B, M, const D: usize>(
    optimizer: &OptimizerAdaptor<AdamW, M, B>,
    names: &[(ParamId, String)],
) -> BTreeMap<String, AdamMoments>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut records = optimizer.to_record();
    names
        .iter()
        .filter_map(|(id, name)| {
            let state: AdamWState<B::InnerBackend, D> = records.remove(id)?.into_state();
            let momentum = state.momentum;
            Some((
                name.clone(),
                AdamMoments {
                    time: momentum.time,
                    moment_1: momentum.moment_1.into_data(),
                    moment_2: momentum.moment_2.into_data(),
                },
            ))
        })
        .collect()
}

/// Loads `state` into `optimizer` for the parameters `names` (their current ids), after
/// checking every entry (the state of parameters not in `state` is kept): a name that is not in `names` or a moment whose shape is not
/// `shapes[name]` is an error and leaves the optimizer as it was. Returns the optimizer in
/// both cases, with the result.
pub fn load_adam_moments<B, M, const D: usize>(
    optimizer: OptimizerAdaptor<AdamW, M, B>,
    names: &[(ParamId, String)],
    shapes: &BTreeMap<String, Vec<usize>>,
    state: &BTreeMap<String, AdamMoments>,
    device: &B::Device,
) -> (OptimizerAdaptor<AdamW, M, B>, Result<()>)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let ids: HashMap<&str, ParamId> = names.iter().map(|(id, n)| (n.as_str(), *id)).collect();
    // Start from the optimizer's own map (burn's map type), keeping unnamed parameters' state.
    let mut records = optimizer.to_record();
    for (name, moments) in state {
        let (Some(id), Some(shape)) = (ids.get(name.as_str()), shapes.get(name)) else {
            let error = LoraError::InvalidInput(format!(
                "optimizer state for `{name}`, which is not a trained parameter here"
            ));
            return (optimizer, Err(error));
        };
        for moment in [&moments.moment_1, &moments.moment_2] {
            if moment.shape.as_slice() != shape.as_slice() || shape.len() != D {
                let error = LoraError::ShapeMismatch {
                    key: format!("optimizer state of {name}"),
                    expected: shape.clone(),
                    found: moment.shape.to_vec(),
                };
                return (optimizer, Err(error));
            }
        }
        let momentum = AdaptiveMomentumState::new(
            moments.time,
            param_from_data::<B::InnerBackend, D>(moments.moment_1.clone(), device),
            param_from_data::<B::InnerBackend, D>(moments.moment_2.clone(), device),
        );
        records.insert(*id, AdaptorRecord::from_state(AdamWState::new(momentum)));
    }
    (optimizer.load_record(records), Ok(()))
}
