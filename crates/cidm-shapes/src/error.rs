//! The crate's error type: every input a caller can get wrong (a scene with a non-finite pose, a
//! concept name the stream does not hold, a box outside the image, a folder that cannot be
//! written) is one of these variants, never a panic.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = ShapesError> = std::result::Result<T, E>;

/// Everything that can go wrong while rendering, writing or evaluating the shapes world.
#[derive(Debug, thiserror::Error)]
pub enum ShapesError {
    /// A configuration, scene or stream value is outside its valid range.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// Which value, e.g. "image size".
        what: String,
        /// Why it was rejected, with the valid range.
        why: String,
    },
    /// A concept name that the stream or the evaluator does not know.
    #[error("unknown concept {0:?}")]
    UnknownConcept(String),
    /// A file or folder could not be created or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PNG could not be encoded or decoded.
    #[error("image {path}: {source}")]
    Image {
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
    /// The stream manifest could not be serialised.
    #[error("stream manifest: {0}")]
    Json(#[from] serde_json::Error),
}

impl ShapesError {
    /// Shorthand for [`ShapesError::Invalid`].
    pub(crate) fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            why: why.into(),
        }
    }
}
