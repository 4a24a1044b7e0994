//! `UNet2DConditionConfig`: the serde mirror of a diffusers `unet/config.json`, its validation,
//! and named presets.
//!
//! Every key diffusers writes is accepted; keys this implementation does not act on must hold
//! their diffusers default, otherwise loading fails with [`Error::UnsupportedConfig`] rather
//! than silently building a different network.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loading::json::read_json;

/// A value diffusers accepts either as one number for all blocks or as a per-block list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    All(T),
    /// One value per down block (the up blocks use the list reversed).
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// Expands to one value per block; errors when a list has the wrong length.
    pub fn expand(&self, blocks: usize, field: &str, path: &Path) -> Result<Vec<T>> {
        match self {
            PerBlock::All(value) => Ok(vec![value.clone(); blocks]),
            PerBlock::Each(values) if values.len() == blocks => Ok(values.clone()),
            PerBlock::Each(values) => Err(Error::config(
                path,
                format!("`{field}` has {} entries for {blocks} blocks", values.len()),
            )),
        }
    }
}

/// The configuration of a diffusers `UNet2DConditionModel`. Field defaults are diffusers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// Nominal latent size the model was trained at; any size divisible by nothing in
    /// particular runs (default 64).
    pub sample_size: Option<usize>,
    /// Latent channels in (default 4).
    pub in_channels: usize,
    /// Latent channels out (default 4).
    pub out_channels: usize,
    /// Maps the input from [0, 1] to [-1, 1] first (default false).
    pub center_input_sample: bool,
    /// Sinusoidal embedding puts cosines first (default true).
    pub flip_sin_to_cos: bool,
    /// Shift of the sinusoidal frequency denominator (default 0).
    pub freq_shift: usize,
    /// Down block types: `CrossAttnDownBlock2D` or `DownBlock2D`.
    pub down_block_types: Vec<String>,
    /// Mid block type: `UNetMidBlock2DCrossAttn` (default).
    pub mid_block_type: Option<String>,
    /// Up block types: `UpBlock2D` or `CrossAttnUpBlock2D`.
    pub up_block_types: Vec<String>,
    /// Restrict the transformer blocks to cross-attention only (default false; unsupported).
    pub only_cross_attention: PerBlock<bool>,
    /// Output channels of each down block (default [320, 640, 1280, 1280]).
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block; up blocks have one more (default 2).
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the strided downsampling convolution (default 1).
    pub downsample_padding: usize,
    /// Divides the mid block's residual sums (default 1.0).
    pub mid_block_scale_factor: f64,
    /// Dropout probability; inference and these implementations ignore it (default 0).
    pub dropout: f64,
    /// Activation: `silu` only (default).
    pub act_fn: String,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the ResNets and the output norm (default 1e-5).
    pub norm_eps: f64,
    /// Width of the text embeddings (default 1280; 768 for SD 1.5, 1024 for SD 2.x).
    pub cross_attention_dim: usize,
    /// Transformer blocks per `Transformer2DModel` (default 1).
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Number of attention heads. diffusers' historical naming: SD 1.x/2.x configs put the
    /// head count here, not the head dimension (default 8).
    pub attention_head_dim: PerBlock<usize>,
    /// Head count under its proper name; overrides `attention_head_dim` when set.
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Linear rather than 1x1-conv `proj_in`/`proj_out` in the transformers (SD 2.x: true).
    pub use_linear_projection: bool,
    /// diffusers' switch for attention scores in f32 under f16 (SD 2.1: true). Read for
    /// compatibility only: scores and softmax are always f32 here (`nn::attention_upcast`).
    pub upcast_attention: bool,
    /// Kernel size of `conv_in` (default 3).
    pub conv_in_kernel: usize,
    /// Kernel size of `conv_out` (default 3).
    pub conv_out_kernel: usize,
    /// Width of the time embedding (default 4 x `block_out_channels[0]`).
    pub time_embedding_dim: Option<usize>,
    /// `positional` only (default).
    pub time_embedding_type: String,
    /// `default` only.
    pub resnet_time_scale_shift: String,
    /// Must be null: class conditioning is not implemented.
    pub class_embed_type: Option<String>,
    /// Must be null: class conditioning is not implemented.
    pub num_class_embeds: Option<usize>,
    /// Must be null: SDXL-style added conditioning is not implemented yet.
    pub addition_embed_type: Option<String>,
    /// Must be null.
    pub encoder_hid_dim: Option<usize>,
    /// Must be null (LCM guidance embedding).
    pub time_cond_proj_dim: Option<usize>,
    /// Must be false.
    pub dual_cross_attention: bool,
    /// Must be false.
    pub resnet_skip_time_act: bool,
    /// Must be 1.0.
    pub resnet_out_scale_factor: f64,
    /// Must be null.
    pub time_embedding_act_fn: Option<String>,
    /// Must be null.
    pub timestep_post_act: Option<String>,
    /// `default` only.
    pub attention_type: String,
    /// Must be null.
    pub cross_attention_norm: Option<String>,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            only_cross_attention: PerBlock::All(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::All(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 1280,
            transformer_layers_per_block: PerBlock::All(1),
            attention_head_dim: PerBlock::All(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            time_embedding_dim: None,
            time_embedding_type: "positional".into(),
            resnet_time_scale_shift: "default".into(),
            class_embed_type: None,
            num_class_embeds: None,
            addition_embed_type: None,
            encoder_hid_dim: None,
            time_cond_proj_dim: None,
            dual_cross_attention: false,
            resnet_skip_time_act: false,
            resnet_out_scale_factor: 1.0,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            attention_type: "default".into(),
            cross_attention_norm: None,
        }
    }
}

/// Whether a block type carries transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Plain,
    CrossAttn,
}

/// A config resolved into per-block values, after validation.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub down_kinds: Vec<BlockKind>,
    pub up_kinds: Vec<BlockKind>,
    pub heads: Vec<usize>,
    pub layers: Vec<usize>,
    pub transformer_layers: Vec<usize>,
    pub time_embed_dim: usize,
}

/// Upper bounds that keep a hostile config from asking for absurd allocations, checked
/// before anything is built. Loading from weights allocates only what the file holds (every
/// tensor's shape is checked against the header first); these bounds matter for models
/// built with random parameters and for activation sizes. Every published SD 1.x/2.x/XL UNet
/// is far inside them (at most 1280 channels, 4 blocks, 10 transformer layers, 128 latents).
/// Channel counts (block outputs, latent channels, text width): SDXL uses 2048 text width.
pub const MAX_CHANNELS: usize = 1 << 13;
/// Down (and up) blocks.
pub const MAX_BLOCKS: usize = 8;
/// ResNet layers and transformer layers per block.
pub const MAX_LAYERS: usize = 32;
/// Kernel size of `conv_in` / `conv_out` (odd; diffusers uses 3).
pub const MAX_KERNEL: usize = 7;
/// Padding of the downsampling convolutions (diffusers uses 0 or 1).
pub const MAX_DOWNSAMPLE_PADDING: usize = 2;
/// Nominal latent size (`sample_size`; 64 for SD 1.5, 128 for SDXL).
pub const MAX_SAMPLE_SIZE: usize = 1024;

impl UNet2DConditionConfig {
    /// Stable Diffusion 1.5, as in
    /// <https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/unet/config.json>.
    pub fn sd15() -> Self {
        Self {
            sample_size: Some(64),
            cross_attention_dim: 768,
            ..Self::default()
        }
    }

    /// Stable Diffusion 2.1 (768 px, v-prediction), as in
    /// <https://huggingface.co/stabilityai/stable-diffusion-2-1/blob/main/unet/config.json>.
    pub fn sd21() -> Self {
        Self {
            sample_size: Some(96),
            cross_attention_dim: 1024,
            attention_head_dim: PerBlock::Each(vec![5, 10, 20, 20]),
            use_linear_projection: true,
            upcast_attention: true,
            ..Self::default()
        }
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config: Self = read_json(path)?;
        config.resolve(path)?;
        Ok(config)
    }

    /// Checks that a model can be built from this config without absurd allocations (the
    /// bounds are the `MAX_*` constants of this module); `path` is what errors name.
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.resolve(path).map(drop)
    }

    /// Validates the config and expands per-block values; `path` is what errors name.
    pub(crate) fn resolve(&self, path: &Path) -> Result<Resolved> {
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
        let groups = self.norm_num_groups;
        for &c in self.block_out_channels.iter().chain([
            &self.in_channels,
            &self.out_channels,
            &self.cross_attention_dim,
        ]) {
            if c == 0 || c > MAX_CHANNELS {
                return Err(Error::config(
                    path,
                    format!("channel count {c} is outside 1..={MAX_CHANNELS}"),
                ));
            }
        }
        if groups == 0 || self.block_out_channels.iter().any(|c| c % groups != 0) {
            return Err(Error::config(
                path,
                format!("norm_num_groups {groups} must divide every block_out_channels entry"),
            ));
        }
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.norm_eps) || !positive(self.mid_block_scale_factor) {
            return Err(Error::config(
                path,
                "norm_eps and mid_block_scale_factor must be positive and finite",
            ));
        }
        for (name, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k % 2 == 0 || k > MAX_KERNEL {
                return Err(Error::config(
                    path,
                    format!("{name} must be odd and at most {MAX_KERNEL}, got {k}"),
                ));
            }
        }
        if self.downsample_padding > MAX_DOWNSAMPLE_PADDING {
            return Err(Error::config(
                path,
                format!(
                    "downsample_padding {} is above {MAX_DOWNSAMPLE_PADDING}",
                    self.downsample_padding
                ),
            ));
        }
        if let Some(size) = self.sample_size.filter(|&s| s == 0 || s > MAX_SAMPLE_SIZE) {
            return Err(Error::config(
                path,
                format!("sample_size {size} is outside 1..={MAX_SAMPLE_SIZE}"),
            ));
        }
        // The sinusoidal embedding divides by `half - freq_shift`: zero or negative gives
        // infinite frequencies and NaN embeddings.
        if self.freq_shift >= self.block_out_channels[0] / 2 {
            return Err(Error::config(
                path,
                format!(
                    "freq_shift {} must be below half of block_out_channels[0]",
                    self.freq_shift
                ),
            ));
        }
        let kind = |name: &str, plain: &str, cross: &str| -> Result<BlockKind> {
            match name {
                n if n == plain => Ok(BlockKind::Plain),
                n if n == cross => Ok(BlockKind::CrossAttn),
                other => Err(Error::unsupported(
                    path,
                    "block type",
                    other,
                    &format!("`{plain}` or `{cross}`"),
                )),
            }
        };
        let down_kinds = self
            .down_block_types
            .iter()
            .map(|t| kind(t, "DownBlock2D", "CrossAttnDownBlock2D"))
            .collect::<Result<Vec<_>>>()?;
        let up_kinds = self
            .up_block_types
            .iter()
            .map(|t| kind(t, "UpBlock2D", "CrossAttnUpBlock2D"))
            .collect::<Result<Vec<_>>>()?;
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .expand(blocks, "attention_head_dim", path)?;
        let layers = self
            .layers_per_block
            .expand(blocks, "layers_per_block", path)?;
        let transformer_layers = self.transformer_layers_per_block.expand(
            blocks,
            "transformer_layers_per_block",
            path,
        )?;
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if h == 0 || c % h != 0 {
                return Err(Error::config(
                    path,
                    format!("block {i}: {h} attention heads do not divide {c} channels"),
                ));
            }
        }
        if layers
            .iter()
            .chain(&transformer_layers)
            .any(|&n| n == 0 || n > MAX_LAYERS)
        {
            return Err(Error::config(
                path,
                format!("layers per block must be within 1..={MAX_LAYERS}"),
            ));
        }
        let time_embed_dim = self
            .time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4);
        if time_embed_dim == 0
            || time_embed_dim > 4 * MAX_CHANNELS
            || !self.block_out_channels[0].is_multiple_of(2)
        {
            return Err(Error::config(
                path,
                "time embedding width must be positive and block_out_channels[0] even",
            ));
        }
        Ok(Resolved {
            down_kinds,
            up_kinds,
            heads,
            layers,
            transformer_layers,
            time_embed_dim,
        })
    }

    fn check_supported(&self, path: &Path) -> Result<()> {
        let none = |field: &str, value: &Option<String>| match value {
            None => Ok(()),
            Some(v) => Err(Error::unsupported(path, field, v, "null")),
        };
        none("class_embed_type", &self.class_embed_type)?;
        none("addition_embed_type", &self.addition_embed_type)?;
        none("time_embedding_act_fn", &self.time_embedding_act_fn)?;
        none("timestep_post_act", &self.timestep_post_act)?;
        none("cross_attention_norm", &self.cross_attention_norm)?;
        for (field, value) in [
            ("num_class_embeds", self.num_class_embeds),
            ("encoder_hid_dim", self.encoder_hid_dim),
            ("time_cond_proj_dim", self.time_cond_proj_dim),
        ] {
            if let Some(v) = value {
                return Err(Error::unsupported(path, field, v, "null"));
            }
        }
        let exact = |field: &str, value: &str, expected: &str| {
            if value == expected {
                Ok(())
            } else {
                Err(Error::unsupported(
                    path,
                    field,
                    value,
                    &format!("`{expected}`"),
                ))
            }
        };
        exact("act_fn", &self.act_fn, "silu")?;
        exact(
            "time_embedding_type",
            &self.time_embedding_type,
            "positional",
        )?;
        exact(
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
            "default",
        )?;
        exact("attention_type", &self.attention_type, "default")?;
        exact(
            "mid_block_type",
            self.mid_block_type.as_deref().unwrap_or("null"),
            "UNetMidBlock2DCrossAttn",
        )?;
        let only_cross = match &self.only_cross_attention {
            PerBlock::All(v) => *v,
            PerBlock::Each(v) => v.iter().any(|b| *b),
        };
        for (field, set) in [
            ("only_cross_attention", only_cross),
            ("dual_cross_attention", self.dual_cross_attention),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
        ] {
            if set {
                return Err(Error::unsupported(path, field, true, "false"));
            }
        }
        if self.resnet_out_scale_factor != 1.0 {
            return Err(Error::unsupported(
                path,
                "resnet_out_scale_factor",
                self.resnet_out_scale_factor,
                "1.0",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(path, "dropout must be in [0, 1)"));
        }
        Ok(())
    }
}

/// The path named by errors about configs built in code.
pub(crate) fn memory_path() -> PathBuf {
    PathBuf::from("<memory>")
}
