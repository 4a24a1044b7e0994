//! # cidm-ewa
//!
//! Elastic weight aggregation (EWA, METHOD.md section 4): at inference, every stored task's
//! LoRA is weighted per cross-attention layer by how strongly the prompt relates to the
//! task's concept tokens, and the weighted sum is applied as the model's adaptation.
//!
//! - [`TaskEmbeddings`]: e_i^l, each task's concept words encoded once in a template prompt;
//! - [`relation`], [`psi`]: the two named variants ([`EwaVariant`]: `code`, the released
//!   code's and the default; `paper`, eq. 3 read literally; `off`, LoRA-M's equal weights);
//! - [`Ewa`]: the adapters stacked into one gated bank; a prompt's [`EwaWeights`] become
//!   per-layer gates `alpha * w_i^l` ([`Ewa::gates`]), an exact merge without dense deltas,
//!   or are baked into the base for repeated sampling ([`Ewa::bake`]).
//!
//! ```no_run
//! # use burn::backend::Flex as B;
//! # fn run(
//! #     sd: &cidm_diffusion::StableDiffusion<B>,
//! #     unet: &mut cidm_diffusion::UNet2DConditionModel<B>,
//! #     concepts: &cidm_continual::ConceptTokens<B>,
//! #     adapters: &[cidm_lora::LoraAdapter<B>],
//! #     task_words: &[Vec<String>],
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use cidm_diffusion::pipeline::{gaussian_latents, sample, SamplingSettings};
//! use cidm_diffusion::Sampler;
//! use cidm_ewa::{Ewa, EwaConfig, PromptEncoder};
//!
//! let encoder = PromptEncoder {
//!     tokenizer: &sd.tokenizer,
//!     encoder: &sd.text_encoder,
//!     concepts,
//!     clip_skip: 0,
//! };
//! let ewa = Ewa::encode(EwaConfig::default(), adapters, task_words, &encoder)?;
//! ewa.attach(unet)?;
//! let (conditioning, _weights) =
//!     ewa.guided_conditioning(&encoder, "a <dog1> dog on the beach", "")?;
//! let settings = SamplingSettings {
//!     scheduler: &sd.scheduler,
//!     kind: Sampler::DpmPlusPlus.kind(),
//!     steps: 50,
//!     guidance_scale: 7.5,
//! };
//! let latents = gaussian_latents([1, 4, 64, 64], 0, &Default::default());
//! let latents = sample(unet, latents, &conditioning, &settings, &mut |_, _| {})?;
//! # Ok(()) }
//! ```
//!
//! docs/ewa.md gives the formulas, defaults, deviations from the paper and tolerances.

#![warn(missing_docs)]

mod aggregation;
mod bake;
mod config;
mod error;
mod prompt;
mod relations;
mod rows;
mod task_embeddings;
mod weights;

pub use aggregation::{Ewa, PromptConditioning};
pub use config::{EwaConfig, EwaVariant};
pub use error::{EwaError, Result};
pub use prompt::{counted_positions, EncodedBatch, PromptEncoder};
pub use relations::{layer_weights, psi, relation};
pub use rows::TokenRows;
pub use task_embeddings::TaskEmbeddings;
pub use weights::EwaWeights;
