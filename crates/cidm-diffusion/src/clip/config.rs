//! `CLIPTextConfig`: the serde mirror of a transformers `text_encoder/config.json`, its
//! validation, and named presets.
//!
//! Keys this implementation has no use for (`projection_dim`, `initializer_range`, dropout
//! rates, ...) are ignored: they do not change the text encoder's forward pass. The one key that
//! does and has alternatives, `hidden_act`, is checked: an activation other than the two that
//! CLIP checkpoints use fails with [`Error::UnsupportedConfig`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loading::json::read_json;

/// The activation between `mlp.fc1` and `mlp.fc2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP (Stable Diffusion 1.x).
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP ViT-H (Stable Diffusion 2.x).
    Gelu,
}

impl Activation {
    /// The activation a config's `hidden_act` names (`quick_gelu` or `gelu`); any other is
    /// [`Error::UnsupportedConfig`] naming `path`.
    pub(crate) fn parse(name: &str, path: &Path) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::unsupported(
                path,
                "hidden_act",
                other,
                "`quick_gelu` or `gelu`",
            )),
        }
    }
}

/// The configuration of a transformers `CLIPTextModel`. Field defaults are transformers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CLIPTextConfig {
    /// Rows of the token embedding table (default 49408).
    pub vocab_size: usize,
    /// Width of the hidden states and of the output (default 512; 768 in SD 1.x).
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer (default 2048).
    pub intermediate_size: usize,
    /// Encoder layers (default 12).
    pub num_hidden_layers: usize,
    /// Attention heads; must divide `hidden_size` (default 8).
    pub num_attention_heads: usize,
    /// Rows of the position embedding table: the longest token sequence (default 77).
    pub max_position_embeddings: usize,
    /// `quick_gelu` (default) or `gelu`.
    pub hidden_act: String,
    /// Epsilon of every layer norm (default 1e-5).
    pub layer_norm_eps: f64,
    /// Id of the start token (default 49406; the SD 1.x/2.x configs say 0, which nothing
    /// here relies on).
    pub bos_token_id: u32,
    /// Id of the end token (default 49407; the SD configs say 2).
    pub eos_token_id: u32,
    /// Id of the padding token (default 1).
    pub pad_token_id: u32,
}

impl Default for CLIPTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            bos_token_id: 49406,
            eos_token_id: 49407,
            pad_token_id: 1,
        }
    }
}

/// Upper bounds that keep a hostile config from asking for absurd allocations; the largest
/// CLIP text encoders in use (OpenCLIP bigG: 1280 wide, 32 layers) are far below them.
/// Rows of the token embedding table (CLIP: 49408).
pub const MAX_VOCAB: usize = 1 << 18;
/// Hidden width and head count; the MLP may be four times as wide.
pub const MAX_WIDTH: usize = 1 << 13;
/// Encoder layers.
pub const MAX_LAYERS: usize = 128;
/// Rows of the position embedding table (CLIP: 77).
pub const MAX_POSITIONS: usize = 1 << 12;

impl CLIPTextConfig {
    /// The text encoder of Stable Diffusion 1.x (OpenAI CLIP ViT-L/14), as in
    /// <https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/text_encoder/config.json>.
    pub fn sd15() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_attention_heads: 12,
            bos_token_id: 0,
            eos_token_id: 2,
            ..Self::default()
        }
    }

    /// The text encoder of Stable Diffusion 2.x (OpenCLIP ViT-H/14, last layer dropped), as in
    /// <https://huggingface.co/stabilityai/stable-diffusion-2-1/blob/main/text_encoder/config.json>.
    pub fn sd21() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            hidden_act: "gelu".into(),
            bos_token_id: 0,
            eos_token_id: 2,
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

    /// Checks every bound (the `MAX_*` constants of this module) and returns the activation;
    /// `path` is what errors name.
    pub fn validate(&self, path: &Path) -> Result<Activation> {
        let activation = Activation::parse(&self.hidden_act, path)?;
        for (field, value, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ] {
            if value == 0 || value > max {
                return Err(Error::config(
                    path,
                    format!("{field} = {value} is outside 1..={max}"),
                ));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                path,
                format!(
                    "{} attention heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(Error::config(
                path,
                "layer_norm_eps must be positive and finite",
            ));
        }
        Ok(activation)
    }
}
