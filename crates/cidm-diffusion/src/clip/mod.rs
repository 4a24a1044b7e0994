//! The CLIP text encoder and tokenizer of Stable Diffusion, one file per transformers module;
//! and the full CLIP model (vision encoder, projections, image processor) that the paper's
//! image and text alignment metrics use.
//!
//! Two extension points serve continual customization (layer-wise concept tokens, METHOD.md
//! section 2): [`CLIPTextModel::embed_tokens`] and [`CLIPTextModel::forward_embeds`] split the
//! forward pass where per-layer concept rows are substituted, and
//! [`CLIPTokenizer::add_tokens`] with [`CLIPTextModel::add_token_embeddings`] gives concept
//! words their own ids and rows.

pub mod clip_model;
pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod image_processor;
pub mod model;
pub mod resample;
pub mod tokenizer;
mod tokenizer_files;
pub mod vision;
pub mod vision_config;

pub use clip_model::{CLIPConfig, CLIPModel};
pub use config::{Activation, CLIPTextConfig};
pub use embeddings::CLIPTextEmbeddings;
pub use encoder::{CLIPAttention, CLIPEncoderLayer, CLIPMLP};
pub use image_processor::{composite_on_white, CLIPImageProcessor};
pub use model::CLIPTextModel;
pub use tokenizer::{CLIPTokenizer, TokenizedPrompt, CLIP_SPLIT};
pub use vision::CLIPVisionModel;
pub use vision_config::CLIPVisionConfig;
