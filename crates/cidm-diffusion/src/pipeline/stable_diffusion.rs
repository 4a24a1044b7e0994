//! `StableDiffusion`: the components of a diffusers Stable Diffusion directory, loaded once,
//! and the text-to-image pipeline over them (diffusers' `StableDiffusionPipeline`).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::latents::gaussian_latents;
use super::request::GenerationRequest;
use super::sampling::{sample, SamplingSettings};
use crate::clip::{CLIPTextModel, CLIPTokenizer};
use crate::conditioning::Conditioning;
use crate::error::{Error, Result};
use crate::loading::ModelDir;
use crate::schedulers::SchedulerConfig;
use crate::unet::UNet2DConditionModel;
use crate::vae::{to_rgb8, AutoencoderKL, Rgb8Image};

/// A loaded Stable Diffusion model.
#[derive(Debug)]
pub struct StableDiffusion<B: Backend> {
    /// The CLIP tokenizer (`tokenizer/`).
    pub tokenizer: CLIPTokenizer,
    /// The CLIP text encoder (`text_encoder/`).
    pub text_encoder: CLIPTextModel<B>,
    /// The noise predictor (`unet/`).
    pub unet: UNet2DConditionModel<B>,
    /// The autoencoder (`vae/`).
    pub vae: AutoencoderKL<B>,
    /// The scheduler's training config (`scheduler/scheduler_config.json`).
    pub scheduler: SchedulerConfig,
    device: B::Device,
}

/// Prompts encoded for the UNet.
#[derive(Debug, Clone)]
pub struct EncodedPrompts<B: Backend> {
    /// Text embeddings `[prompts, 77, cross_attention_dim]`.
    pub embeddings: Tensor<B, 3>,
    /// Indices of prompts that were cut to the tokenizer's length.
    pub truncated: Vec<usize>,
}

impl<B: Backend> StableDiffusion<B> {
    /// Loads every component of a diffusers directory; `variant` picks e.g. `fp16` weights.
    pub fn from_model_dir(root: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        let dir = ModelDir::open(root)?;
        let scheduler_folder = dir.root().join("scheduler");
        Ok(Self {
            tokenizer: CLIPTokenizer::from_model_dir(&dir)?,
            text_encoder: CLIPTextModel::from_model_dir(&dir, variant, device)?,
            unet: UNet2DConditionModel::from_model_dir(&dir, variant, device)?,
            vae: AutoencoderKL::from_model_dir(&dir, variant, device)?,
            scheduler: SchedulerConfig::from_file(scheduler_folder.join("scheduler_config.json"))?,
            device: device.clone(),
        })
    }

    /// The factor between image and latent sizes (8 for Stable Diffusion).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().downsample_factor()
    }

    /// Tokenizes and encodes prompts as diffusers does (padded to 77 tokens, truncated past).
    pub fn encode_prompts<S: AsRef<str>>(
        &self,
        prompts: &[S],
        clip_skip: usize,
    ) -> Result<EncodedPrompts<B>> {
        let tokenized = self.tokenizer.encode_batch(prompts)?;
        let truncated = tokenized
            .iter()
            .enumerate()
            .filter(|(_, t)| t.truncated)
            .map(|(i, _)| i)
            .collect();
        let ids: Vec<&[u32]> = tokenized.iter().map(|t| t.ids.as_slice()).collect();
        Ok(EncodedPrompts {
            embeddings: self.text_encoder.forward(&ids, clip_skip)?,
            truncated,
        })
    }

    /// The UNet conditioning of a request: `[negative prompts; prompts]` with guidance, the
    /// prompts alone without. Truncated prompts are reported with a warning, as diffusers does.
    pub fn conditioning(&self, request: &GenerationRequest) -> Result<Conditioning<B>> {
        let mut texts: Vec<&str> = Vec::new();
        if request.guided() {
            texts.extend((0..request.prompts.len()).map(|i| request.negative(i)));
        }
        texts.extend(request.prompts.iter().map(String::as_str));
        let encoded = self.encode_prompts(&texts, request.clip_skip)?;
        for &i in &encoded.truncated {
            tracing::warn!(
                prompt = texts[i],
                "prompt is longer than the tokenizer's 77 tokens and was truncated"
            );
        }
        Ok(Conditioning::shared(encoded.embeddings))
    }

    /// Runs a request to its final latents. `initial` replaces the seeded noise (to compare
    /// with another implementation latent for latent); `on_step(done, total)` reports progress.
    ///
    /// # Shapes
    /// - initial: `[prompts, in_channels, height / f, width / f]`
    /// - output: `[prompts, out_channels, height / f, width / f]`
    pub fn generate_latents(
        &self,
        request: &GenerationRequest,
        initial: Option<Tensor<B, 4>>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        let conditioning = self.conditioning(request)?;
        self.generate_latents_with(request, &conditioning, initial, on_step)
    }

    /// [`Self::generate_latents`] with a conditioning built elsewhere (layer-wise concept
    /// tokens, bank gates): `conditioning` must hold the request's batch, laid out
    /// `[negatives; prompts]` when guided, as [`Self::conditioning`] builds it.
    pub fn generate_latents_with(
        &self,
        request: &GenerationRequest,
        conditioning: &Conditioning<B>,
        initial: Option<Tensor<B, 4>>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        let latents = self.initial_latents(request, initial)?;
        let settings = self.sampling_settings(request);
        sample(&self.unet, latents, conditioning, &settings, on_step)
    }

    /// The request's starting latents: `initial` if given (its shape checked), else seeded
    /// Gaussian noise, one latent per prompt.
    pub fn initial_latents(
        &self,
        request: &GenerationRequest,
        initial: Option<Tensor<B, 4>>,
    ) -> Result<Tensor<B, 4>> {
        let [h, w] = request.validate(self.vae_scale_factor())?;
        let shape = [request.prompts.len(), self.unet.config().in_channels, h, w];
        match initial {
            Some(latents) if latents.dims() != shape => Err(Error::InvalidInput(format!(
                "initial latents have shape {:?}, the request needs {shape:?}",
                latents.dims()
            ))),
            Some(latents) => Ok(latents),
            None => Ok(gaussian_latents(shape, request.seed, &self.device)),
        }
    }

    /// The sampler, step count and guidance of a request, over this model's scheduler config.
    pub fn sampling_settings(&self, request: &GenerationRequest) -> SamplingSettings<'_> {
        SamplingSettings {
            scheduler: &self.scheduler,
            kind: request.sampler.kind(),
            steps: request.steps,
            guidance_scale: request.guidance_scale,
        }
    }

    /// Decodes final latents to 8-bit RGB images, as diffusers' image processor does.
    ///
    /// # Shapes
    /// - latents: `[batch, latent_channels, h, w]` -> `batch` images of `h * f` x `w * f`
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Vec<Rgb8Image>> {
        to_rgb8(self.vae.decode_latents(latents)?)
    }
}
