//! Continual customization for CIDM (Concept-Incremental Diffusion Models, NeurIPS 2024), on
//! the backend-generic core `cidm-diffusion`.
//!
//! This crate holds the pieces of the concept consolidation loss (METHOD.md sections 2-3):
//!
//! - [`ConceptTokens`]: layer-wise concept tokens, one learnable row per word and
//!   cross-attention layer, encoded into per-layer [`cidm_diffusion::Conditioning`];
//!   [`keep_updating_tokens`] is the released code's norm threshold.
//! - [`orthogonal_regularizer`]: R1 in three named forms ([`R1Form`]).
//! - [`CommonSubspace`]: R2 with its shared `W*` and per-task `H_i`, exact or factorised
//!   ([`R2Variant`]), and the descent step of the two-step update.
//! - [`ContinualConfig`]: `gamma1`, `gamma2`, the forms and the token settings.
//!
//! The loss of task `g >= 2` is `denoise + gamma1 * R1 + gamma2 * R2`. Orientation: all
//! low-rank factors here are the paper's, `A` `[out, rank]`, `B` `[rank, in]`; the core's
//! `LowRankBank` stores their transposes. docs/continual.md explains forms and defaults.

pub mod checkpoint;
pub mod common_subspace;
pub mod concept_tokens;
pub mod config;
pub mod data;
pub mod delta;
pub mod error;
pub mod learner;
pub mod method;
pub mod orthogonal;
pub mod store;
pub mod train_task;
pub mod trainer;
pub mod training_config;

pub use checkpoint::{read_checkpoint, write_checkpoint, TrainingState};
pub use common_subspace::{
    state_floats, CommonSubspace, ExactCommonSubspace, ExactGradients, FactorisedCommonSubspace,
    FactorisedGradients,
};
pub use concept_tokens::{keep_updating_tokens, ConceptTokens, ConceptWord, TokenInit};
pub use config::{ContinualConfig, R1Form, R2Variant};
pub use data::{read_image_folder, Crop, LatentCache, TrainingImage};
pub use delta::LowRankDelta;
pub use error::{Error, Result};
pub use learner::{adapter_deltas, attached_deltas, TaskLearner};
pub use method::Method;
pub use orthogonal::orthogonal_regularizer;
pub use store::{BaseFingerprint, StoreManifest, TaskManifest, TaskStore};
pub use train_task::{train_task, TrainEvent, TrainTaskRequest, DEFAULT_PROMPT};
pub use trainer::{TaskContext, TaskStepReport, TaskTrainer, TaskWords};
pub use training_config::TaskTrainingConfig;
