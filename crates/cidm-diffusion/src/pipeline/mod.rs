//! Text-to-image generation with a diffusers Stable Diffusion directory: prompt encoding,
//! classifier-free guidance, the sampling loop and latent files.

mod latents;
mod request;
mod sampling;
mod stable_diffusion;

pub use latents::{gaussian, gaussian_latents, read_latents, write_latents, LATENTS_KEY};
pub use request::{GenerationRequest, Sampler};
pub use sampling::{
    apply_guidance, first_non_finite_parameter, sample, sample_with, SamplingSettings,
};
pub use stable_diffusion::{EncodedPrompts, StableDiffusion};
