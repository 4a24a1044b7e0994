//! The conditional UNet, one file per diffusers module.

pub mod attention;
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod model;
pub mod resnet;
pub mod transformer_2d;

pub use attention::{Attention, BasicTransformerBlock, FeedForward};
pub use config::{PerBlock, UNet2DConditionConfig};
pub use model::UNet2DConditionModel;
