//! The crate's error type: every failure a caller can cause (a missing file, an empty folder,
//! an image that does not decode, lists that do not pair up) is one of these variants and
//! names the file where there is one, never a panic.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading images and computing the CLIP metrics.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The CLIP model, tokenizer or image processor failed to load or rejected an input.
    #[error(transparent)]
    Model(#[from] cidm_diffusion::Error),
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A folder holds no image file (PNG or JPEG).
    #[error("{path}: no PNG or JPEG images in this folder")]
    EmptyFolder {
        /// The folder.
        path: PathBuf,
    },
    /// A file is not a readable PNG or JPEG image.
    #[error("{path}: unreadable image: {reason}")]
    UnreadableImage {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// An image has no prompt: neither one for all images nor a `.txt` caption beside it.
    #[error("{image}: no caption file {caption} beside the image (or give one prompt for all)")]
    MissingCaption {
        /// The image file.
        image: PathBuf,
        /// The caption file looked for.
        caption: PathBuf,
    },
    /// A `WORD=CLASS` replacement that does not parse.
    #[error("class word {0:?}: expected WORD=CLASS with a non-empty WORD")]
    ClassWord(String),
    /// Inputs that do not fit the formula: empty lists, counts or widths that do not pair
    /// up, an embedding of zero length.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
