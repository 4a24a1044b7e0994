//! # cidm-pretrain
//!
//! Pretrains the tiny Stable Diffusion that the shapes-world demo personalises: a CLIP text
//! encoder (the real 49408-token BPE vocabulary), a UNet with cross-attention at every
//! resolution and a KL autoencoder, all this project's own modules (`cidm-diffusion`),
//! trained with burn's autodiff on the captioned base world of `cidm-shapes`, and written as a
//! diffusers directory that diffusers and this project's loader both read.
//!
//! - [`config`]: the recipe (sizes, steps, rates, seed) as one serde type;
//! - [`data`]: the base world rendered and tokenized in memory;
//! - [`vae_training`], [`denoiser_training`]: the two stages;
//! - [`export`], [`model_dir`]: diffusers names and the directory writer;
//! - [`quality`]: generation read back by the shapes world's detector;
//! - [`pretrain()`]: the whole run.

pub mod config;
pub mod data;
pub mod denoiser_training;
mod error;
pub mod export;
mod loss_window;
pub mod model_dir;
pub mod pretrain;
pub mod quality;
pub mod vae_training;

pub use config::{Architecture, DenoiserTraining, PretrainConfig, VaeTraining};
pub use error::{PretrainError, Result};
pub use model_dir::write_model_dir;
pub use pretrain::{pretrain, PretrainRecord};
pub use quality::{measure_quality, QualityReport, QualitySettings};
