//! Reading diffusers-format weights and model directories.

pub(crate) mod json;
mod model_dir;
mod safetensors;
mod var_builder;

pub use model_dir::ModelDir;
pub use safetensors::SafetensorsWeights;
pub use var_builder::{Init, VarBuilder};
