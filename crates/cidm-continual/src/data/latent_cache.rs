//! The VAE posterior of every training image, computed once: training then samples latents
//! from the cached mean and standard deviation each step (as diffusers' scripts sample
//! `latent_dist` each step) without running the encoder again.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::AutoencoderKL;

use super::images::TrainingImage;
use crate::error::{Error, Result};

/// One image's cached posterior and caption.
#[derive(Debug, Clone)]
pub struct CachedLatent<B: Backend> {
    /// Posterior mean `[1, latent_channels, h, w]` (unscaled).
    pub mean: Tensor<B, 4>,
    /// Posterior standard deviation, same shape.
    pub std: Tensor<B, 4>,
    /// The image's caption.
    pub caption: String,
}

/// The posteriors of a task's images and the VAE's latent scaling.
#[derive(Debug, Clone)]
pub struct LatentCache<B: Backend> {
    /// One entry per image, in folder order.
    pub entries: Vec<CachedLatent<B>>,
    /// Side of the square latent a training sample is cropped to.
    pub latent_size: usize,
    /// The VAE's `scaling_factor`.
    pub scaling_factor: f64,
    /// The VAE's `shift_factor`, if it has one.
    pub shift_factor: Option<f64>,
}

impl<B: Backend> LatentCache<B> {
    /// Encodes each image (one at a time, so memory stays that of one image) with `vae` and
    /// moves the posteriors to `device`. `resolution` is the training size in pixels; every
    /// image must be at least that large on both sides.
    pub fn encode<E: Backend>(
        vae: &AutoencoderKL<E>,
        images: &[TrainingImage],
        resolution: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let factor = vae.config().downsample_factor();
        if resolution == 0 || !resolution.is_multiple_of(factor) {
            return Err(Error::InvalidInput(format!(
                "the training resolution {resolution} is not a positive multiple of the VAE's \
                 downsample factor {factor}"
            )));
        }
        if images.is_empty() {
            return Err(Error::InvalidInput("no training images".into()));
        }
        let vae_device = vae_device(vae);
        let entries = images
            .iter()
            .map(|image| {
                if image.width < resolution || image.height < resolution {
                    return Err(Error::InvalidInput(format!(
                        "{} is {}x{} after resizing, smaller than the resolution {resolution}",
                        image.path.display(),
                        image.width,
                        image.height
                    )));
                }
                let pixels = Tensor::<E, 4>::from_data(
                    TensorData::new(image.pixels.clone(), [1, 3, image.height, image.width]),
                    &vae_device,
                );
                let posterior = vae.encode(pixels)?;
                let moved = |t: Tensor<E, 4>| Tensor::<B, 4>::from_data(t.into_data(), device);
                Ok(CachedLatent {
                    mean: moved(posterior.mean().clone()),
                    std: moved(posterior.std()),
                    caption: image.caption.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            entries,
            latent_size: resolution / factor,
            scaling_factor: vae.config().scaling_factor,
            shift_factor: vae.config().shift_factor,
        })
    }

    /// A scaled latent sample of entry `index`: `(mean + std * noise - shift) * scaling`,
    /// cropped to `latent_size` at `(top, left)` in latent cells.
    ///
    /// # Shapes
    /// - noise: the entry's posterior shape; output `[1, c, latent_size, latent_size]`
    pub fn sample(
        &self,
        index: usize,
        noise: Tensor<B, 4>,
        top: usize,
        left: usize,
    ) -> Result<Tensor<B, 4>> {
        let entry = self.entries.get(index).ok_or_else(|| {
            Error::InvalidInput(format!(
                "no cached latent {index} of {}",
                self.entries.len()
            ))
        })?;
        let [_, c, h, w] = entry.mean.dims();
        let size = self.latent_size;
        if noise.dims() != entry.mean.dims() || top + size > h || left + size > w {
            return Err(Error::InvalidInput(format!(
                "latent sample of {:?} at ({top}, {left}) with noise {:?}",
                entry.mean.dims(),
                noise.dims()
            )));
        }
        let z = (entry.mean.clone() + entry.std.clone() * noise).slice([
            0..1,
            0..c,
            top..top + size,
            left..left + size,
        ]);
        let z = match self.shift_factor {
            Some(shift) => z - shift,
            None => z,
        };
        Ok(z * self.scaling_factor)
    }

    /// The posterior shape `[1, c, h, w]` of entry `index` (the noise [`Self::sample`] needs).
    pub fn shape(&self, index: usize) -> Option<[usize; 4]> {
        self.entries.get(index).map(|e| e.mean.dims())
    }
}

fn vae_device<E: Backend>(vae: &AutoencoderKL<E>) -> E::Device {
    use burn::module::Module;
    vae.devices().into_iter().next().unwrap_or_default()
}
