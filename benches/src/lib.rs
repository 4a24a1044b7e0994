//! Shared setup for the criterion benchmarks: small but structurally complete UNet configs.

use cidm_diffusion::unet::{PerBlock, UNet2DConditionConfig};

/// A small SD 1.5-shaped UNet (three cross-attention down blocks and a plain one, two ResNets
/// per block, 16 cross-attention layers) at 1/10 of SD 1.5's widths: big enough that
/// convolutions and attention dominate like in the real model, small enough for a 2-core CPU.
pub fn small_unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig {
        block_out_channels: vec![32, 64, 128, 128],
        attention_head_dim: PerBlock::All(4),
        cross_attention_dim: 64,
        norm_num_groups: 8,
        sample_size: Some(32),
        ..UNet2DConditionConfig::sd15()
    }
}
