//! The pretraining recipe as one serde type: the shapes-world dataset, the sizes of the three
//! networks, and the two training stages (autoencoder first, then text encoder and UNet
//! jointly on the frozen autoencoder's latents). Defaults are the recipe of the committed
//! `assets/shapes-base` model.

use cidm_diffusion::unet::config::PerBlock;
use cidm_diffusion::{AutoencoderKLConfig, CLIPTextConfig, UNet2DConditionConfig};
use cidm_shapes::WorldConfig;
use serde::{Deserialize, Serialize};

use crate::error::{PretrainError, Result};

/// Everything one pretraining run depends on; with the same config and seed the run is
/// repeatable on the same backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PretrainConfig {
    /// Seed of the dataset, the initialisation and every random draw (default 0).
    pub seed: u64,
    /// How the base-world images are drawn (default: the world's default, 32x32).
    pub world: WorldConfig,
    /// Number of base-world images rendered and trained on (default 10000).
    pub images: usize,
    /// Share of captions given the prefix "a photo of " (default 0.25), so that the concept
    /// captions of the continual stream ("a photo of a `<star1>` star") use words the text
    /// encoder has seen.
    pub photo_prefix: f32,
    /// Sizes of the networks.
    pub architecture: Architecture,
    /// The autoencoder stage.
    pub vae: VaeTraining,
    /// The text-encoder + UNet stage.
    pub denoiser: DenoiserTraining,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            world: WorldConfig::default(),
            images: 10000,
            photo_prefix: 0.25,
            architecture: Architecture::default(),
            vae: VaeTraining::default(),
            denoiser: DenoiserTraining::default(),
        }
    }
}

/// Sizes of the text encoder, UNet and autoencoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Architecture {
    /// Text encoder width, also the UNet's cross-attention width (default 32).
    pub text_hidden: usize,
    /// Text encoder layers (default 2).
    pub text_layers: usize,
    /// Text encoder attention heads (default 4).
    pub text_heads: usize,
    /// Text encoder MLP width (default 128).
    pub text_intermediate: usize,
    /// UNet channels per resolution, highest resolution first (default [32, 64]).
    pub unet_channels: Vec<usize>,
    /// Whether each down block (and its mirror up block) has cross-attention; the mid
    /// block always has (default [true, false]: attention at the latent resolution and in
    /// the middle, 4 cross-attention layers).
    pub unet_cross_attention: Vec<bool>,
    /// ResNets per UNet down block (default 1).
    pub unet_layers_per_block: usize,
    /// Attention heads of the UNet's transformers (diffusers' `attention_head_dim`, default 4).
    pub unet_heads: usize,
    /// Group-norm groups of the UNet (default 8).
    pub unet_groups: usize,
    /// Autoencoder channels per resolution; each block but the last halves the image
    /// (default [8, 16, 32]: 32x32 images to 8x8 latents).
    pub vae_channels: Vec<usize>,
    /// Group-norm groups of the autoencoder (default 4).
    pub vae_groups: usize,
    /// Latent channels (default 4).
    pub latent_channels: usize,
}

impl Default for Architecture {
    fn default() -> Self {
        Self {
            text_hidden: 32,
            text_layers: 2,
            text_heads: 4,
            text_intermediate: 128,
            unet_channels: vec![32, 64],
            unet_cross_attention: vec![true, false],
            unet_layers_per_block: 1,
            unet_heads: 4,
            unet_groups: 8,
            vae_channels: vec![8, 16, 32],
            vae_groups: 4,
            latent_channels: 4,
        }
    }
}

/// The autoencoder stage: reconstruction (mean squared error) plus a small KL term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeTraining {
    /// Optimizer steps (default 1500).
    pub steps: usize,
    /// Images per step (default 8).
    pub batch: usize,
    /// AdamW learning rate (default 2e-3).
    pub learning_rate: f64,
    /// Weight of the KL divergence to the standard normal, per latent element against the
    /// per-pixel reconstruction error (default 1e-6, as small as LDM's autoencoders).
    pub kl_weight: f64,
    /// Images whose latents measure the `scaling_factor` (default 1024).
    pub scaling_images: usize,
}

impl Default for VaeTraining {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch: 8,
            learning_rate: 2e-3,
            kl_weight: 1e-6,
            scaling_images: 1024,
        }
    }
}

/// The denoiser stage: epsilon prediction with the SD 1.5 scaled-linear DDPM schedule, the
/// text encoder trained jointly with the UNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DenoiserTraining {
    /// Optimizer steps (default 6000).
    pub steps: usize,
    /// Images per step (default 16).
    pub batch: usize,
    /// Peak AdamW learning rate (default 1e-3), reached after `warmup` steps and decayed by
    /// a half cosine to a tenth of it.
    pub learning_rate: f64,
    /// Linear warm-up steps (default 100).
    pub warmup: usize,
    /// Share of captions replaced by the empty prompt, so that classifier-free guidance has
    /// an unconditional model to push away from (default 0.1).
    pub caption_dropout: f32,
    /// Largest global gradient norm (default 1.0).
    pub max_grad_norm: f32,
}

impl Default for DenoiserTraining {
    fn default() -> Self {
        Self {
            steps: 6000,
            batch: 16,
            learning_rate: 1e-3,
            warmup: 100,
            caption_dropout: 0.1,
            max_grad_norm: 1.0,
        }
    }
}

impl DenoiserTraining {
    /// The learning rate of 0-based `step`: linear warm-up, then a half cosine from the peak
    /// to a tenth of it at the last step.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.learning_rate * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.learning_rate * (0.1 + 0.9 * cosine)
    }
}

impl PretrainConfig {
    /// Rejects configs that cannot train: no images or steps, empty batches, shares outside
    /// [0, 1], non-positive rates, or sizes the model configs refuse.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(PretrainError::InvalidConfig(msg));
        self.world.validate()?;
        if self.images == 0 {
            return bad("images must be at least 1".into());
        }
        for (what, share) in [
            ("photo_prefix", self.photo_prefix),
            ("denoiser.caption_dropout", self.denoiser.caption_dropout),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return bad(format!("{what} = {share} is outside [0, 1]"));
            }
        }
        for (what, n) in [
            ("vae.steps", self.vae.steps),
            ("vae.batch", self.vae.batch),
            ("vae.scaling_images", self.vae.scaling_images),
            ("denoiser.steps", self.denoiser.steps),
            ("denoiser.batch", self.denoiser.batch),
        ] {
            if n == 0 {
                return bad(format!("{what} must be at least 1"));
            }
        }
        for (what, rate) in [
            ("vae.learning_rate", self.vae.learning_rate),
            ("denoiser.learning_rate", self.denoiser.learning_rate),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(format!("{what} = {rate} must be positive"));
            }
        }
        if self.architecture.unet_cross_attention.len() != self.architecture.unet_channels.len() {
            return bad(format!(
                "architecture.unet_cross_attention has {} entries for {} UNet blocks",
                self.architecture.unet_cross_attention.len(),
                self.architecture.unet_channels.len()
            ));
        }
        if !(self.vae.kl_weight.is_finite() && self.vae.kl_weight >= 0.0) {
            return bad(format!("vae.kl_weight = {}", self.vae.kl_weight));
        }
        if !(self.denoiser.max_grad_norm.is_finite() && self.denoiser.max_grad_norm > 0.0) {
            return bad(format!(
                "denoiser.max_grad_norm = {}",
                self.denoiser.max_grad_norm
            ));
        }
        let f = self.vae_config(1.0).downsample_factor();
        if !(self.world.size as usize).is_multiple_of(f) {
            return bad(format!(
                "image size {} is not a multiple of the autoencoder's factor {f}",
                self.world.size
            ));
        }
        let memory = std::path::Path::new("<pretrain config>");
        self.vae_config(1.0).validate(memory)?;
        self.clip_config().validate(memory)?;
        self.unet_config().validate(memory)?;
        Ok(())
    }

    /// Side of the latents the UNet works on.
    pub fn latent_size(&self) -> usize {
        self.world.size as usize / self.vae_config(1.0).downsample_factor()
    }

    /// The CLIP text encoder: the full CLIP vocabulary (49408 tokens, the real BPE), 77
    /// positions, quick-GELU, the special ids of SD 1.5's config.
    pub fn clip_config(&self) -> CLIPTextConfig {
        let a = &self.architecture;
        CLIPTextConfig {
            hidden_size: a.text_hidden,
            intermediate_size: a.text_intermediate,
            num_hidden_layers: a.text_layers,
            num_attention_heads: a.text_heads,
            ..CLIPTextConfig::sd15()
        }
    }

    /// The UNet: cross-attention in the down blocks `unet_cross_attention` marks, their
    /// mirror up blocks and the mid block; epsilon prediction of `latent_channels` channels.
    pub fn unet_config(&self) -> UNet2DConditionConfig {
        let a = &self.architecture;
        let attends = |i: usize| a.unet_cross_attention.get(i).copied().unwrap_or(false);
        let blocks = a.unet_channels.len();
        let down = (0..blocks)
            .map(|i| {
                if attends(i) {
                    "CrossAttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
                .into()
            })
            .collect();
        let up = (0..blocks)
            .rev()
            .map(|i| {
                if attends(i) {
                    "CrossAttnUpBlock2D"
                } else {
                    "UpBlock2D"
                }
                .into()
            })
            .collect();
        UNet2DConditionConfig {
            sample_size: Some(self.latent_size()),
            in_channels: a.latent_channels,
            out_channels: a.latent_channels,
            down_block_types: down,
            up_block_types: up,
            block_out_channels: a.unet_channels.clone(),
            layers_per_block: PerBlock::All(a.unet_layers_per_block),
            norm_num_groups: a.unet_groups,
            cross_attention_dim: a.text_hidden,
            attention_head_dim: PerBlock::All(a.unet_heads),
            ..UNet2DConditionConfig::default()
        }
    }

    /// The autoencoder, with the given latent `scaling_factor`.
    pub fn vae_config(&self, scaling_factor: f64) -> AutoencoderKLConfig {
        let a = &self.architecture;
        let blocks = a.vae_channels.len();
        AutoencoderKLConfig {
            down_block_types: vec![cidm_diffusion::vae::config::DOWN_BLOCK.into(); blocks],
            up_block_types: vec![cidm_diffusion::vae::config::UP_BLOCK.into(); blocks],
            block_out_channels: a.vae_channels.clone(),
            layers_per_block: 1,
            latent_channels: a.latent_channels,
            norm_num_groups: a.vae_groups,
            sample_size: serde_json::Value::from(self.world.size),
            scaling_factor,
            ..AutoencoderKLConfig::default()
        }
    }
}
