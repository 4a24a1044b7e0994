//! `CLIPVisionConfig`: the serde mirror of the `vision_config` of a transformers `CLIPModel`
//! `config.json`, and its validation.
//!
//! As for the text config, keys with no effect on the forward pass (dropout rates, init
//! ranges, the sub-model's own `projection_dim`) are ignored; `hidden_act` is checked.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{Activation, MAX_LAYERS, MAX_POSITIONS, MAX_WIDTH};
use crate::error::{Error, Result};

/// The largest `image_size` accepted: far above the 224-336 pixels CLIP ViTs take, and it
/// bounds the patch grid a hostile config can ask for.
pub const MAX_IMAGE_SIZE: usize = 4096;

/// The configuration of a transformers `CLIPVisionModel`. Field defaults are transformers'
/// (those of OpenAI CLIP ViT-B/32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CLIPVisionConfig {
    /// Width of the patch embeddings and hidden states (default 768).
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer (default 3072).
    pub intermediate_size: usize,
    /// Encoder layers (default 12).
    pub num_hidden_layers: usize,
    /// Attention heads; must divide `hidden_size` (default 12).
    pub num_attention_heads: usize,
    /// Input channels; only 3 (RGB) is supported (default 3).
    pub num_channels: usize,
    /// Side of the square input image in pixels (default 224).
    pub image_size: usize,
    /// Side of the square patches, the stride of the patch convolution (default 32).
    pub patch_size: usize,
    /// `quick_gelu` (default) or `gelu`.
    pub hidden_act: String,
    /// Epsilon of every layer norm (default 1e-5).
    pub layer_norm_eps: f64,
}

impl Default for CLIPVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl CLIPVisionConfig {
    /// Patches per side: transformers' `image_size // patch_size`.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Rows of the position table: one per patch plus the class token.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Checks every bound and returns the activation; `path` is what errors name.
    pub fn validate(&self, path: &Path) -> Result<Activation> {
        let activation = Activation::parse(&self.hidden_act, path)?;
        if self.num_channels != 3 {
            return Err(Error::unsupported(
                path,
                "vision_config.num_channels",
                self.num_channels,
                "3 (RGB)",
            ));
        }
        for (field, value, max) in [
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
            ("image_size", self.image_size, MAX_IMAGE_SIZE),
            ("patch_size", self.patch_size, self.image_size),
        ] {
            if value == 0 || value > max {
                return Err(Error::config(
                    path,
                    format!("vision_config.{field} = {value} is outside 1..={max}"),
                ));
            }
        }
        if self.num_positions() > MAX_POSITIONS {
            return Err(Error::config(
                path,
                format!(
                    "vision_config: {} patches of {} pixels exceed {MAX_POSITIONS} positions",
                    self.num_positions() - 1,
                    self.patch_size
                ),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                path,
                format!(
                    "vision_config: {} attention heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(Error::config(
                path,
                "vision_config.layer_norm_eps must be positive and finite",
            ));
        }
        Ok(activation)
    }
}
