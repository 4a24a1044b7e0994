//! The crate's error type. Every failure a caller can cause (a file that does not fit the
//! model, a corrupt file, a config or gate tensor of the wrong size) is one of these variants,
//! and names the file, the key and the shapes involved, so that a mismatch can be fixed
//! without a debugger.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = LoraError> = std::result::Result<T, E>;

/// Everything that can go wrong while building, applying, saving or loading LoRA adapters.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not a well-formed safetensors file, or its metadata or config JSON does not
    /// parse.
    #[error("{path}: corrupt LoRA file: {reason}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor is stored in a dtype the loader does not read (F32, F16 and BF16 are read).
    #[error("{path}: tensor `{key}` has dtype {dtype}, only F32, F16 and BF16 are supported")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// The dtype found in the header.
        dtype: String,
    },
    /// A key is not a LoRA factor or alpha in any format this crate reads.
    #[error(
        "{path}: `{key}` is not a LoRA key (expected `<module>.lora_A.weight` / \
         `.lora_B.weight`, `<module>.lora.down.weight` / `.lora.up.weight`, or kohya \
         `lora_unet_<module>.lora_down.weight` / `.lora_up.weight` / `.alpha`)"
    )]
    UnrecognizedKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// An adapter targets a module the UNet does not have as an adaptable attention
    /// projection.
    #[error("`{key}` targets `{module}`, which is not an attention projection of this UNet")]
    UnknownModule {
        /// The file key or adapter entry that names the module.
        key: String,
        /// The module path as understood (diffusers naming).
        module: String,
    },
    /// One factor of a module is present and the other is missing.
    #[error("{path}: module `{module}` has no {factor} factor")]
    MissingFactor {
        /// The file.
        path: PathBuf,
        /// The module path.
        module: String,
        /// `down (lora_A)` or `up (lora_B)`.
        factor: &'static str,
    },
    /// A factor's shape does not fit the module it targets.
    #[error("`{key}` has shape {found:?}, the model needs {expected:?}")]
    ShapeMismatch {
        /// The file key or module path.
        key: String,
        /// The shape the model (and the adapter's rank) implies.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// Modules of one adapter have different ranks (one adapter has one rank; a file with a
    /// PEFT `rank_pattern` is not supported).
    #[error("`{key}` has rank {found}, the adapter's rank is {expected}")]
    RankMismatch {
        /// The file key or module path.
        key: String,
        /// The adapter's rank.
        expected: usize,
        /// The rank found.
        found: usize,
    },
    /// The file uses a LoRA variant this crate does not implement (DoRA, rsLoRA, per-module
    /// alpha or rank patterns, LoRA biases).
    #[error("{path}: unsupported LoRA variant: {feature}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The variant and the setting that asks for it.
        feature: String,
    },
    /// A LoRA or training config has a value no adapter can be built with.
    #[error("invalid LoRA config: {0}")]
    InvalidConfig(String),
    /// A tensor or list passed to a function has the wrong size (gate weights, empty stacks).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A training loss, or the norm of its gradients, came out NaN or infinite (an f16
    /// overflow in the backward pass gives a finite loss with infinite gradients); nothing was
    /// updated by that step.
    #[error("the training loss or its gradients are not finite (denoising {denoise}, regularizer {regularizer}, gradient norm {grad_norm}): nothing was updated")]
    NonFiniteLoss {
        /// The denoising term.
        denoise: f32,
        /// The extra term added by the caller (0 without one).
        regularizer: f32,
        /// The global L2 norm of the factors' gradients, before clipping.
        grad_norm: f32,
    },
    /// The core rejected an operation (a bank that does not fit, a forward pass on bad input).
    #[error(transparent)]
    Model(#[from] cidm_diffusion::Error),
}
