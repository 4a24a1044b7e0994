//! What one text-to-image generation is asked to do, as a serde type with diffusers' defaults.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schedulers::SchedulerKind;

/// The sampler, by its command-line name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Sampler {
    /// DDIM, deterministic (eta = 0).
    Ddim,
    /// DPM-Solver++ 2M multistep, the released CIDM code's sampler.
    #[default]
    #[serde(rename = "dpm++")]
    DpmPlusPlus,
}

impl Sampler {
    /// The scheduler that implements it.
    pub fn kind(self) -> SchedulerKind {
        match self {
            Sampler::Ddim => SchedulerKind::Ddim,
            Sampler::DpmPlusPlus => SchedulerKind::DpmSolverMultistep,
        }
    }
}

/// A text-to-image request. `prompts` and `negative_prompts` pair up one image each; an empty
/// negative list means the empty negative prompt for every image, as diffusers does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationRequest {
    /// One prompt per image.
    pub prompts: Vec<String>,
    /// One negative prompt per image, or none.
    pub negative_prompts: Vec<String>,
    /// Image width in pixels, a multiple of the VAE's downscaling factor (8 for SD).
    pub width: usize,
    /// Image height in pixels, a multiple of the VAE's downscaling factor.
    pub height: usize,
    /// Denoising steps (default 50).
    pub steps: usize,
    /// Classifier-free guidance scale; guidance is off at 1 or below (default 7.5).
    pub guidance_scale: f64,
    /// Seed of the initial noise when no initial latents are given (default 0).
    pub seed: u64,
    /// The sampler (default DPM-Solver++ 2M).
    pub sampler: Sampler,
    /// Text-encoder layers to skip from the end (diffusers' `clip_skip`, default 0).
    pub clip_skip: usize,
}

impl Default for GenerationRequest {
    fn default() -> Self {
        Self {
            prompts: Vec::new(),
            negative_prompts: Vec::new(),
            width: 512,
            height: 512,
            steps: 50,
            guidance_scale: 7.5,
            seed: 0,
            sampler: Sampler::default(),
            clip_skip: 0,
        }
    }
}

impl GenerationRequest {
    /// Whether classifier-free guidance runs (diffusers: guidance scale above 1).
    pub fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }

    /// The negative prompt of image `i`.
    pub fn negative(&self, i: usize) -> &str {
        self.negative_prompts
            .get(i)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Checks the request against a VAE that downsamples by `scale`; returns the latent
    /// height and width.
    pub fn validate(&self, scale: usize) -> Result<[usize; 2]> {
        let bad = |msg: String| Err(Error::InvalidInput(msg));
        if self.prompts.is_empty() {
            return bad("no prompt given".into());
        }
        if !self.negative_prompts.is_empty() && self.negative_prompts.len() != self.prompts.len() {
            return bad(format!(
                "{} negative prompts for {} prompts",
                self.negative_prompts.len(),
                self.prompts.len()
            ));
        }
        if self.width == 0
            || self.height == 0
            || !self.width.is_multiple_of(scale)
            || !self.height.is_multiple_of(scale)
        {
            return bad(format!(
                "image size {}x{} must be positive multiples of {scale}",
                self.width, self.height
            ));
        }
        if self.width > 8192 || self.height > 8192 {
            return bad(format!(
                "image size {}x{} is above 8192",
                self.width, self.height
            ));
        }
        if !self.guidance_scale.is_finite() {
            return bad(format!(
                "guidance scale {} is not finite",
                self.guidance_scale
            ));
        }
        Ok([self.height / scale, self.width / scale])
    }
}
