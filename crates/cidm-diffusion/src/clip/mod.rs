//! The CLIP text encoder and tokenizer of Stable Diffusion, one file per transformers module.
//!
//! Two extension points serve continual customization (layer-wise concept tokens, METHOD.md
//! section 2): [`CLIPTextModel::embed_tokens`] and [`CLIPTextModel::forward_embeds`] split the
//! forward pass where per-layer concept rows are substituted, and
//! [`CLIPTokenizer::add_tokens`] with [`CLIPTextModel::add_token_embeddings`] gives concept
//! words their own ids and rows.

pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod model;
pub mod tokenizer;
mod tokenizer_files;

pub use config::{Activation, CLIPTextConfig};
pub use embeddings::CLIPTextEmbeddings;
pub use encoder::{CLIPAttention, CLIPEncoderLayer, CLIPMLP};
pub use model::CLIPTextModel;
pub use tokenizer::{CLIPTokenizer, TokenizedPrompt, CLIP_SPLIT};
