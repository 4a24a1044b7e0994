//! `AutoencoderKLConfig`: the serde mirror of a diffusers `vae/config.json`, its validation,
//! and the Stable Diffusion 1.5 preset.
//!
//! Every key diffusers writes is accepted. Keys this implementation cannot honour must hold a
//! value it can (other block types, per-channel latent statistics), otherwise loading fails
//! with [`Error::UnsupportedConfig`] naming the key rather than silently building another
//! network.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loading::json::read_json;

/// The only down block type of the KL autoencoders this crate builds.
pub const DOWN_BLOCK: &str = "DownEncoderBlock2D";
/// The only up block type of the KL autoencoders this crate builds.
pub const UP_BLOCK: &str = "UpDecoderBlock2D";

/// Upper bounds that keep a hostile config from asking for absurd allocations, checked
/// before anything is built (the SD VAEs use at most 512 channels, 4 blocks, 2 layers).
/// Channel counts (blocks, image and latent channels).
pub const MAX_CHANNELS: usize = 1 << 13;
/// Encoder (and decoder) blocks; each but the last halves the resolution.
pub const MAX_BLOCKS: usize = 8;
/// ResNets per encoder block.
pub const MAX_LAYERS: usize = 32;

/// The configuration of a diffusers `AutoencoderKL`. Field defaults are diffusers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    /// Image channels in (default 3).
    pub in_channels: usize,
    /// Image channels out (default 3).
    pub out_channels: usize,
    /// Encoder block types, highest resolution first: `DownEncoderBlock2D` only (default one).
    pub down_block_types: Vec<String>,
    /// Decoder block types, lowest resolution first: `UpDecoderBlock2D` only (default one).
    pub up_block_types: Vec<String>,
    /// Output channels of each encoder block; the decoder uses them reversed (default `[64]`).
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder block; decoder blocks have one more (default 1; SD: 2).
    pub layers_per_block: usize,
    /// Activation: `silu` (or its alias `swish`) only (default `silu`).
    pub act_fn: String,
    /// Channels of the latent space (default 4).
    pub latent_channels: usize,
    /// GroupNorm groups of every norm (default 32).
    pub norm_num_groups: usize,
    /// Nominal image size, an integer or a list; diffusers uses it only to tile large images,
    /// which this implementation does not do, so it is kept as given (default 32).
    pub sample_size: serde_json::Value,
    /// Multiplies encoded latents before the UNet sees them (default 0.18215, SD 1.x/2.x).
    pub scaling_factor: f64,
    /// Subtracted from encoded latents before scaling (SD3, Flux); null for SD 1.x/2.x
    /// (default null).
    pub shift_factor: Option<f64>,
    /// Per-channel latent means: must be null (per-channel statistics are not implemented).
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent deviations: must be null (per-channel statistics are not
    /// implemented).
    pub latents_std: Option<Vec<f64>>,
    /// diffusers runs the VAE in f32 under f16 pipelines when true; ignored here, where the
    /// caller's backend fixes the precision (default true).
    pub force_upcast: bool,
    /// A 1x1 `quant_conv` follows the encoder (default true).
    pub use_quant_conv: bool,
    /// A 1x1 `post_quant_conv` precedes the decoder (default true).
    pub use_post_quant_conv: bool,
    /// The mid blocks have a self-attention between their two ResNets (default true).
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DOWN_BLOCK.into()],
            up_block_types: vec![UP_BLOCK.into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: serde_json::Value::from(32),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl AutoencoderKLConfig {
    /// The Stable Diffusion 1.5 VAE, as in
    /// <https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/vae/config.json>
    /// (which predates `scaling_factor` and relies on its default, 0.18215).
    pub fn sd15() -> Self {
        Self {
            down_block_types: vec![DOWN_BLOCK.into(); 4],
            up_block_types: vec![UP_BLOCK.into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            sample_size: serde_json::Value::from(512),
            ..Self::default()
        }
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config: Self = read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// How much smaller the latents are than the images on each side: one halving per block
    /// but the last (8 for SD).
    pub fn downsample_factor(&self) -> usize {
        let halvings = self.block_out_channels.len().saturating_sub(1);
        2usize.saturating_pow(u32::try_from(halvings).unwrap_or(u32::MAX))
    }

    /// Checks that the model can be built from this config; `path` is what errors name.
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.check_supported(path)?;
        let blocks = self.block_out_channels.len();
        if blocks == 0 || blocks > MAX_BLOCKS {
            return Err(Error::config(
                path,
                format!("block_out_channels must have 1 to {MAX_BLOCKS} entries"),
            ));
        }
        if self.down_block_types.len() != blocks || self.up_block_types.len() != blocks {
            return Err(Error::config(
                path,
                "down_block_types, up_block_types and block_out_channels must have the same length",
            ));
        }
        for &c in self.block_out_channels.iter().chain([
            &self.in_channels,
            &self.out_channels,
            &self.latent_channels,
        ]) {
            if c == 0 || c > MAX_CHANNELS {
                return Err(Error::config(
                    path,
                    format!("channel count {c} is outside 1..={MAX_CHANNELS}"),
                ));
            }
        }
        let groups = self.norm_num_groups;
        if groups == 0 || self.block_out_channels.iter().any(|c| c % groups != 0) {
            return Err(Error::config(
                path,
                format!("norm_num_groups {groups} must divide every block_out_channels entry"),
            ));
        }
        if self.layers_per_block == 0 || self.layers_per_block > MAX_LAYERS {
            return Err(Error::config(
                path,
                format!("layers_per_block must be within 1..={MAX_LAYERS}"),
            ));
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor == 0.0 {
            return Err(Error::config(
                path,
                "scaling_factor must be finite and non-zero",
            ));
        }
        if self.shift_factor.is_some_and(|s| !s.is_finite()) {
            return Err(Error::config(path, "shift_factor must be finite"));
        }
        Ok(())
    }

    fn check_supported(&self, path: &Path) -> Result<()> {
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(Error::unsupported(
                path,
                "act_fn",
                &self.act_fn,
                "`silu` or `swish`",
            ));
        }
        for (field, types, supported) in [
            ("down_block_types", &self.down_block_types, DOWN_BLOCK),
            ("up_block_types", &self.up_block_types, UP_BLOCK),
        ] {
            if let Some(other) = types.iter().find(|t| *t != supported) {
                return Err(Error::unsupported(
                    path,
                    field,
                    other,
                    &format!("`{supported}`"),
                ));
            }
        }
        for (field, value) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if let Some(v) = value {
                return Err(Error::unsupported(path, field, v, "null"));
            }
        }
        Ok(())
    }
}
