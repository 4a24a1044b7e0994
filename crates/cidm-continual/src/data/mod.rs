//! A task's training data: the image folder with captions and the cached VAE posteriors.

mod images;
mod latent_cache;

pub use images::{read_image_folder, Crop, TrainingImage, IMAGE_EXTENSIONS};
pub use latent_cache::{CachedLatent, LatentCache};
