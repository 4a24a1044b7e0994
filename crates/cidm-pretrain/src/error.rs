//! Errors of pretraining and export, each naming what failed.

use std::path::PathBuf;

/// A pretraining or export failure.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// The configuration cannot be trained (e.g. zero steps, a caption dropout outside [0, 1]).
    #[error("invalid pretraining config: {0}")]
    InvalidConfig(String),
    /// A model component failed (building, a forward pass, loading the written directory).
    #[error(transparent)]
    Model(#[from] cidm_diffusion::Error),
    /// Writing a weights file failed.
    #[error(transparent)]
    Weights(#[from] cidm_lora::LoraError),
    /// The shapes world refused its config.
    #[error(transparent)]
    World(#[from] cidm_shapes::ShapesError),
    /// A loss became NaN or infinite.
    #[error("{stage}: the loss is not finite at step {step}")]
    NonFiniteLoss {
        /// Which stage (`vae` or `denoiser`).
        stage: &'static str,
        /// The 1-based step.
        step: usize,
    },
    /// A module parameter has no diffusers name (the export does not know its layout).
    #[error("parameter {0:?} has no diffusers name")]
    UnnamedParameter(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding JSON failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result with [`PretrainError`].
pub type Result<T> = std::result::Result<T, PretrainError>;
