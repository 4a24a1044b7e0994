//! The benchmark's error type: a bad plan, and every layer's own errors.

use std::path::PathBuf;

/// Result alias of the benchmark module.
pub type Result<T, E = BenchmarkError> = std::result::Result<T, E>;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    /// The plan file does not parse.
    #[error("{path}: not a benchmark plan: {reason}")]
    Plan {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The plan parses but cannot run.
    #[error("invalid benchmark plan: {0}")]
    InvalidPlan(String),
    /// The diffusion core failed (loading, sampling, writing).
    #[error(transparent)]
    Diffusion(#[from] cidm_diffusion::Error),
    /// Training or the store failed.
    #[error(transparent)]
    Continual(#[from] cidm_continual::Error),
    /// Generation with a store failed.
    #[error(transparent)]
    Generation(#[from] crate::concept_model::ConceptModelError),
    /// A region spec is invalid.
    #[error(transparent)]
    Regions(#[from] cidm_regions::RegionError),
    /// The evaluator failed.
    #[error("evaluation: {0}")]
    Evaluation(String),
    /// Writing an image failed.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// A report file could not be written or serialised.
    #[error("{path}: {reason}")]
    Report {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
