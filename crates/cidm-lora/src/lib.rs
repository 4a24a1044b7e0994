//! # cidm-lora
//!
//! LoRA adapters for the `cidm` UNet (METHOD.md section 1): each adapted projection computes
//! `y = x W0 + b + (alpha / r) (x D) U`, with a frozen base `W0` and trainable low-rank factors,
//! down `D` `[in, r]` and up `U` `[r, out]`. The crate gives that low-rank bank of the core
//! ([`cidm_diffusion::LowRankBank`]) its LoRA meaning:
//!
//! - [`LoraConfig`] picks rank, alpha, targets and init seed; [`LoraAdapter::init`] injects a
//!   fresh adapter with PEFT's initialisation (down Kaiming-uniform, up zero) into the
//!   projections the config targets: by default q, k, v and out of every cross-attention
//!   (64 adapters in SD 1.5); self-attention or glob patterns on diffusers module paths as
//!   options ([`LoraTargets`]);
//! - [`LoraTrainer`] trains it on an autodiff backend with only the factors trainable, AdamW and
//!   global-norm gradient clipping;
//! - [`LoraAdapter::merge_into`] / [`LoraAdapter::unmerge_from`] fold it into the base weights
//!   and back;
//! - [`LoraStack`] stacks several adapters into one gated bank so that one batched UNet call
//!   runs a different adapter mixture per sample (the exact form of elastic weight
//!   aggregation's merge);
//! - [`LoraAdapter::save`] / [`LoraAdapter::load`] read and write the PEFT / diffusers
//!   safetensors format that diffusers' `load_lora_weights` reads, and load kohya files.
//!
//! Naming trap: PEFT's `lora_A` is the down factor and `lora_B` the up factor, so the paper's
//! A (the factor CIDM's regularizers constrain) is PEFT's `lora_B`, here [`LoraFactors::up`].
//!
//! ```no_run
//! # use burn::backend::Flex as B;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cidm_diffusion::{ModelDir, UNet2DConditionModel};
//! use cidm_lora::{LoraAdapter, LoraConfig};
//!
//! let device = Default::default();
//! let dir = ModelDir::open("stable-diffusion-v1-5")?;
//! let mut unet = UNet2DConditionModel::<B>::from_model_dir(&dir, None, &device)?;
//! let adapter = LoraAdapter::load("pytorch_lora_weights.safetensors", &unet, &device)?;
//! adapter.attach(&mut unet)?; // or adapter.merge_into(&mut unet, 1.0)?
//! # Ok(()) }
//! ```
//!
//! docs/lora.md describes the file formats and the tolerances of the golden tests.

#![warn(missing_docs)]

mod adapter;
mod config;
mod error;
mod format;
mod init;
mod merge;
mod optimizer_state;
mod sites;
mod stack;
mod train;

pub use adapter::{attached_banks, detach_all, LoraAdapter, LoraFactors};
pub use config::{LoraConfig, LoraTargets};
pub use error::{LoraError, Result};
pub use format::tensor_file;
pub use optimizer_state::{adam_moments, load_adam_moments, AdamMoments};
pub use sites::{projection_sites, AttentionKind, ProjectionSite};
pub use stack::LoraStack;
pub use train::{DenoisingBatch, LoraTrainer, LoraTrainingConfig, StepReport};
