//! The base-world training set held in memory: images as normalised pixels and captions as
//! CLIP token ids, plus seeded batch sampling.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::CLIPTokenizer;
use cidm_shapes::base_sample;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::PretrainConfig;
use crate::error::Result;

/// The prefix some captions get (see [`PretrainConfig::photo_prefix`]).
pub const PHOTO_PREFIX: &str = "a photo of ";

/// Rendered images and tokenized captions.
#[derive(Debug, Clone)]
pub struct BaseData {
    /// Image side in pixels.
    pub size: usize,
    /// Pixels, `[images, 3, size, size]` row-major, in `[-1, 1]`.
    pub pixels: Vec<f32>,
    /// The caption of each image (with its prefix when it got one).
    pub captions: Vec<String>,
    /// The captions' token ids, 77 each.
    pub ids: Vec<Vec<u32>>,
    /// The empty prompt's token ids (caption dropout).
    pub empty_ids: Vec<u32>,
}

impl BaseData {
    /// Renders the first `config.images` base-world images of `config.seed`; a caption gets
    /// [`PHOTO_PREFIX`] with probability `config.photo_prefix` (its own seeded draw).
    pub fn render(
        config: &PretrainConfig,
        tokenizer: &CLIPTokenizer,
        progress: &ProgressBar,
    ) -> Result<Self> {
        let size = config.world.size as usize;
        let plane = size * size;
        let mut pixels = Vec::with_capacity(config.images * 3 * plane);
        let mut captions = Vec::with_capacity(config.images);
        let mut prefix_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x0070_686f_746f);
        progress.set_length(config.images as u64);
        for i in 0..config.images {
            let sample = base_sample(&config.world, config.seed, i as u64)?;
            let image = sample.render(&config.world)?;
            for c in 0..3 {
                pixels.extend(image.pixels().map(|p| f32::from(p.0[c]) / 127.5 - 1.0));
            }
            let caption = if prefix_rng.random::<f32>() < config.photo_prefix {
                format!("{PHOTO_PREFIX}{}", sample.caption)
            } else {
                sample.caption
            };
            captions.push(caption);
            progress.inc(1);
        }
        let ids = tokenizer
            .encode_batch(&captions)?
            .into_iter()
            .map(|t| t.ids)
            .collect();
        let empty_ids = tokenizer.encode("")?.ids;
        Ok(Self {
            size,
            pixels,
            captions,
            ids,
            empty_ids,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Images `indices` as one batch on `device`, `[indices.len(), 3, size, size]`.
    pub fn images<B: Backend>(&self, indices: &[usize], device: &B::Device) -> Tensor<B, 4> {
        let n = 3 * self.size * self.size;
        let pixels: Vec<f32> = indices
            .iter()
            .flat_map(|&i| &self.pixels[i * n..(i + 1) * n])
            .copied()
            .collect();
        Tensor::from_data(
            TensorData::new(pixels, [indices.len(), 3, self.size, self.size]),
            device,
        )
    }
}

/// `batch` indices drawn uniformly from `0..len`.
pub fn draw_batch(rng: &mut ChaCha8Rng, len: usize, batch: usize) -> Vec<usize> {
    (0..batch).map(|_| rng.random_range(0..len)).collect()
}
