//! # cidm-diffusion
//!
//! The backend-generic Stable Diffusion core of `cidm`, on burn: the conditional UNet built
//! from a diffusers `config.json`, noise schedulers with diffusers semantics, and loading of
//! diffusers model directories from safetensors.
//!
//! Two extension points let the crates above adapt the model without the core knowing them:
//! - [`Conditioning`] is data passed to [`UNet2DConditionModel::forward`]: one text embedding
//!   for every cross-attention layer, or one per layer in a stable order (down, mid, up);
//! - every attention projection is an [`AdaptableLinear`]: a frozen base plus an optional
//!   [`LowRankBank`] with optional per-sample gates.

pub mod clip;
pub mod conditioning;
pub mod error;
pub mod io;
pub mod loading;
pub mod lowrank;
pub mod nn;
pub mod pipeline;
pub mod precision;
pub mod schedulers;
pub mod totals;
pub mod unet;
pub mod vae;

pub use clip::{
    CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer,
    CLIPVisionModel, TokenizedPrompt,
};
pub use conditioning::{Conditioning, PerLayer};
pub use error::{Error, Result};
pub use loading::{ModelDir, SafetensorsWeights, VarBuilder};
pub use lowrank::{AdaptableLinear, LowRankBank};
pub use pipeline::{GenerationRequest, Sampler, StableDiffusion};
pub use unet::{UNet2DConditionConfig, UNet2DConditionModel};
pub use vae::{to_rgb8, AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian, Rgb8Image};
