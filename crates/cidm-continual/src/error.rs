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
    /// Any other invalid argument (empty lists, non-finite or negative settings).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
