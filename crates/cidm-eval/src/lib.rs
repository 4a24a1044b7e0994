//! # cidm-eval
//!
//! The paper's evaluation metrics for real models (METHOD.md section 6), with a transformers
//! `CLIPModel` directory (the paper uses OpenAI CLIP ViT-B/32) loaded by the core's CLIP
//! vision and text models:
//! - image alignment (IA): mean CLIP image-embedding cosine between generated and reference
//!   images, x100 ([`metrics::image_alignment`]);
//! - text alignment (TA): CLIPScore `2.5 * max(cos, 0)` between each image and its prompt with
//!   concept words replaced by class words, x100 ([`metrics::text_alignment`],
//!   [`prompts::replace_class_words`]).
//!
//! This is a crate of its own rather than a module of the core because it decodes image files
//! (the `image` crate) and fixes folder and caption conventions, which the model core should
//! not depend on; the CLIP model itself, its loading and its preprocessing live in the core
//! (`cidm_diffusion::clip`) beside the text encoder whose layers they share.

pub mod error;
pub mod images;
pub mod metrics;
pub mod prompts;
pub mod scorer;

pub use error::{EvalError, Result};
pub use images::{image_files, load_image, read_captions};
pub use metrics::{image_alignment, text_alignment, Score, CLIP_SCORE_WEIGHT};
pub use prompts::{replace_class_words, ClassWord};
pub use scorer::ClipScorer;
