//! Reading diffusers-format weights and model directories.

pub(crate) mod json;
mod model_dir;
mod safetensors;
mod safetensors_checks;
mod var_builder;

pub use json::{read_text, MAX_TEXT_BYTES};
pub use model_dir::ModelDir;
pub use safetensors::SafetensorsWeights;
pub use safetensors_checks::{decode_f32, parse_safetensors};
pub use var_builder::{Init, VarBuilder};
