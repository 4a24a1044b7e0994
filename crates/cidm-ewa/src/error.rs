//! The crate's error type: every failure a caller can cause (a task word that is not a
//! registered concept token, adapters and tasks that do not pair up, shapes that do not fit)
//! is one of these variants, never a panic.

/// Result alias used throughout the crate.
pub type Result<T, E = EwaError> = std::result::Result<T, E>;

/// Everything that can go wrong while aggregating task weights.
#[derive(Debug, thiserror::Error)]
pub enum EwaError {
    /// The diffusion core (tokenizer, text encoder, UNet) rejected an input.
    #[error(transparent)]
    Diffusion(#[from] cidm_diffusion::Error),
    /// The LoRA crate rejected the adapters (sizes that do not stack or fit the UNet).
    #[error(transparent)]
    Lora(#[from] cidm_lora::LoraError),
    /// The concept tokens could not encode a prompt.
    #[error(transparent)]
    Continual(#[from] cidm_continual::Error),
    /// A task's concept word is not one of the registered concept tokens.
    #[error("task {task}: concept word {word:?} is not a registered concept token")]
    UnknownWord {
        /// Index of the task, in task order.
        task: usize,
        /// The word.
        word: String,
    },
    /// A task's template prompt lost its concept words (truncated past the tokenizer's length).
    #[error("task {task}: its template prompt {prompt:?} holds none of its concept tokens")]
    NoConceptPositions {
        /// Index of the task.
        task: usize,
        /// The template prompt as encoded.
        prompt: String,
    },
    /// A list or tensor does not have the count or shape the formula needs.
    #[error("{what}: found {found:?}, expected {expected}")]
    Shape {
        /// Which input.
        what: String,
        /// What was given (a shape, or a count).
        found: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// An embedding holds NaN or infinity, so no weight can be computed from it.
    #[error("{0} holds NaN or infinity")]
    NonFinite(String),
    /// An EWA variant name that is not `code`, `paper` or `off`.
    #[error("unknown EWA variant {0:?}: expected `code`, `paper` or `off`")]
    UnknownVariant(String),
    /// Any other invalid argument (empty lists, a template without `{{}}`, a bad alpha).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
