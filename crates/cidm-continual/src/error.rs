//! The crate's error type: every failure a caller can cause (bad shapes, words that cannot
//! become concept tokens, a regularizer asked for without the tasks it needs) is one of these
//! variants, never a panic.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in continual customization.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The diffusion core (tokenizer, text encoder) rejected an input.
    #[error(transparent)]
    Diffusion(#[from] cidm_diffusion::Error),
    /// A tensor or a list of tensors does not have the shape or count the formula needs.
    #[error("{what}: shape {found:?}, expected {expected}")]
    Shape {
        /// Which input, e.g. "up factor of task 0, layer 3".
        what: String,
        /// The shape that was given (for lists, the count).
        found: Vec<usize>,
        /// The shape that was expected, in words.
        expected: String,
    },
    /// A concept word is already a token, so it would not get a fresh, trainable row.
    #[error("concept word {0:?} is already in the vocabulary")]
    WordInVocabulary(String),
    /// A class word used to initialise a concept token is not exactly one token.
    #[error("class word {word:?} is {tokens} tokens, not one: pick a single-token class word")]
    ClassWordNotSingleToken {
        /// The class word, e.g. "dog".
        word: String,
        /// How many tokens it split into.
        tokens: usize,
    },
    /// R1 compares the new task with old ones; task 1 trains on the denoising loss alone.
    #[error("R1 needs at least one old task (task 1 uses the denoising loss alone)")]
    NoOldTasks,
    /// The LoRA crate rejected an adapter, a file or a training step.
    #[error(transparent)]
    Lora(#[from] cidm_lora::LoraError),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A store, task or checkpoint file is not what this crate writes.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds the store's lock (it is training or changing a task).
    #[error("the task store {0} is locked by another process; try again when it has finished")]
    StoreLocked(std::path::PathBuf),
    /// The store's tasks were trained on another base model.
    #[error("the task store was made for base model {expected}, this model is {found}")]
    BaseModelMismatch {
        /// The store's base-model fingerprint.
        expected: String,
        /// The loaded model's fingerprint.
        found: String,
    },
    /// The store holds tasks of another method; methods cannot be mixed in one store.
    #[error("the task store holds {store} tasks; a {requested} task needs a store of its own")]
    MethodMismatch {
        /// The store's method.
        store: String,
        /// The method asked for.
        requested: String,
    },
    /// No task with this number in the store.
    #[error("the store has no task {0}")]
    UnknownTask(usize),
    /// A concept word is already used by a task of the store.
    #[error("concept word {word:?} is already learned by task {task}")]
    WordTaken {
        /// The word.
        word: String,
        /// The task that has it.
        task: usize,
    },
    /// A checkpoint of an interrupted training exists and would be overwritten.
    #[error(
        "{0} holds a checkpoint of an interrupted training: resume it, or delete it to start over"
    )]
    CheckpointExists(std::path::PathBuf),
    /// The training loss, or its gradients' norm, became NaN or infinite; the last good
    /// checkpoint (if any) is kept.
    #[error("the loss or its gradients are not finite at step {step} (denoising {denoise}, regularizer {regularizer}, gradient norm {grad_norm}){}", checkpoint.as_ref().map(|p| format!("; the last good checkpoint is {}", p.display())).unwrap_or_default())]
    NonFiniteLoss {
        /// The step (1-based) whose loss was not finite.
        step: usize,
        /// The denoising term.
        denoise: f32,
        /// The regularizer term.
        regularizer: f32,
        /// The global L2 norm of the LoRA factors' gradients, before clipping.
        grad_norm: f32,
        /// The last good checkpoint, if one was written.
        checkpoint: Option<std::path::PathBuf>,
    },
    /// Any other invalid argument (empty lists, non-finite or negative settings).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
