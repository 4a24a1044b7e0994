//! The crate's error type: every failure a caller can cause (files, configs, shapes) is one of
//! these variants and names the file and, where there is one, the tensor.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a model or running it on bad input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A JSON file (config, index) did not parse or does not have the expected fields.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What serde reported, with line and column.
        source: serde_json::Error,
    },
    /// A safetensors file is not well formed (bad header, offsets out of range, ...).
    #[error("{path}: corrupt safetensors file: {reason}")]
    CorruptWeights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the model needs is absent from the weights.
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The weights file (or directory for sharded weights).
        path: PathBuf,
        /// The diffusers name of the tensor.
        tensor: String,
    },
    /// A tensor exists but its shape is not the one the config implies.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The diffusers name of the tensor.
        tensor: String,
        /// The shape the model config implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype this loader does not read (only f32, f16, bf16 are read).
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, only F32, F16 and BF16 are supported")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The diffusers name of the tensor.
        tensor: String,
        /// The dtype found in the header.
        dtype: String,
    },
    /// The weights hold tensors the model does not use: usually a config that does not match
    /// the checkpoint.
    #[error("{path}: {count} tensor(s) are not used by the model, the first is `{first}`")]
    UnusedTensors {
        /// The weights file.
        path: PathBuf,
        /// How many tensors were left over.
        count: usize,
        /// The first unused name in sorted order.
        first: String,
    },
    /// A config value is outside what the model can be built with (zero channels, ...).
    #[error("{path}: invalid config: {reason}")]
    InvalidConfig {
        /// The config file, or `<memory>` for a config built in code.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A config asks for a diffusers feature this implementation does not have.
    #[error("{path}: unsupported config: `{field}` = {value} ({supported})")]
    UnsupportedConfig {
        /// The config file, or `<memory>` for a config built in code.
        path: PathBuf,
        /// The config key.
        field: String,
        /// The value found.
        value: String,
        /// What is supported instead.
        supported: String,
    },
    /// A tensor passed to a forward function or scheduler has the wrong shape or size.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A stored weight is NaN or infinite. Such a model can only produce NaN images, so
    /// loading refuses it and names the first bad value rather than sampling black images.
    #[error("{path}: tensor `{tensor}` holds {value} at flat index {index}")]
    NonFiniteWeight {
        /// The weights file.
        path: PathBuf,
        /// The name of the tensor.
        tensor: String,
        /// Row-major index of the first non-finite element.
        index: usize,
        /// The value found there (NaN, inf or -inf).
        value: f32,
    },
    /// Sampling produced NaN or infinity (fp16 overflow, a diverged LoRA, corrupt weights set
    /// in memory): reported at the first step where it appears instead of decoding a black
    /// image.
    #[error(
        "sampling produced NaN or infinity in the {stage} at step {step} of {steps} \
         (timestep {timestep}){}",
        match layer {
            Some(layer) => format!("; first non-finite parameter: `{layer}`"),
            None => "; every parameter is finite, so an activation overflowed \
                     (try f32 or a smaller guidance scale)".to_string(),
        }
    )]
    NonFiniteSample {
        /// The 1-based step.
        step: usize,
        /// The number of steps of the run.
        steps: usize,
        /// The scheduler timestep of that step.
        timestep: usize,
        /// Where it was seen: the UNet's noise prediction or the scheduler's update.
        stage: SamplingStage,
        /// The dotted path of the first UNet parameter that is not finite, if any is.
        layer: Option<String>,
    },
    /// A tokenizer file is not what it claims to be (a merges line that is not a pair, a
    /// token missing from the vocabulary, a tokenizer.json of another model type, ...).
    #[error("{path}: invalid tokenizer: {reason}")]
    Tokenizer {
        /// The tokenizer file, or its folder when the files disagree with each other.
        path: PathBuf,
        /// What is wrong, in the tokenizers library's words where it found it.
        reason: String,
    },
}

/// The part of a sampling step where a non-finite value was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingStage {
    /// The UNet's noise prediction (after guidance).
    NoisePrediction,
    /// The latents the scheduler's update produced.
    SchedulerStep,
}

impl std::fmt::Display for SamplingStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SamplingStage::NoisePrediction => "UNet noise prediction",
            SamplingStage::SchedulerStep => "scheduler update",
        })
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::UnsupportedConfig`].
    pub(crate) fn unsupported(
        path: impl Into<PathBuf>,
        field: &str,
        value: impl std::fmt::Debug,
        supported: &str,
    ) -> Self {
        Error::UnsupportedConfig {
            path: path.into(),
            field: field.to_string(),
            value: format!("{value:?}"),
            supported: supported.to_string(),
        }
    }
}
