//! Stage one: the autoencoder, trained alone on the base-world images with an L1 + squared
//! reconstruction loss (the squared term punishes a wrong colour much more than a soft edge)
//! and a small KL term to the standard normal, then measured: the `scaling_factor` that gives
//! its latents unit variance, and how often the shapes world's detector reads its
//! reconstructions right.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use cidm_diffusion::pipeline::gaussian;
use cidm_diffusion::{to_rgb8, AutoencoderKL};
use cidm_shapes::base_sample;
use cidm_shapes::eval::{text_alignment, Target};
use image::RgbImage;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::PretrainConfig;
use crate::data::{draw_batch, BaseData};
use crate::error::{PretrainError, Result};
use crate::loss_window::LossWindow;

/// What the autoencoder stage produced.
#[derive(Debug)]
pub struct TrainedVae<B: burn::tensor::backend::Backend> {
    /// The autoencoder (built with `scaling_factor` 1; see [`Self::scaling_factor`]).
    pub vae: AutoencoderKL<B>,
    /// `1 / std` of posterior samples over the measuring images.
    pub scaling_factor: f64,
    /// Mean L1 reconstruction error (pixels in [-1, 1]) over the last 50 steps.
    pub final_l1: f32,
    /// Share of reconstructions (posterior samples) of the first 64 images whose first object
    /// the detector reads with the right shape and colour.
    pub reconstruction_rate: f32,
    /// Mean posterior standard deviation over the measuring images.
    pub posterior_std: f32,
}

/// Trains the autoencoder of `config` on `data`, ticking `progress` once per step.
pub fn train_vae<AB: AutodiffBackend>(
    config: &PretrainConfig,
    data: &BaseData,
    device: &AB::Device,
    progress: &ProgressBar,
) -> Result<TrainedVae<AB::InnerBackend>> {
    let stage = &config.vae;
    let mut vae = AutoencoderKL::<AB>::random(&config.vae_config(1.0), device)?;
    let mut optimizer = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x0076_6165);
    let mut recent = LossWindow::new(50);
    progress.set_length(stage.steps as u64);
    for step in 0..stage.steps {
        let indices = draw_batch(&mut rng, data.len(), stage.batch);
        let images = data.images::<AB>(&indices, device);
        let posterior = vae.encode(images.clone())?;
        let noise = gaussian::<AB, 4>(&mut rng, posterior.mean().dims(), device);
        let kl = (posterior.mean().clone().powi_scalar(2) + posterior.logvar().clone().exp()
            - posterior.logvar().clone()
            - 1.0)
            .mean()
            * 0.5;
        let z = posterior.sample(noise)?;
        let reconstruction = vae.decode(z)?;
        let error = reconstruction - images;
        let l1 = error.clone().abs().mean();
        let loss = l1.clone() + error.powi_scalar(2).mean() + kl * stage.kl_weight;
        let l1_value: f32 = l1.into_scalar().elem();
        if !l1_value.is_finite() {
            return Err(PretrainError::NonFiniteLoss {
                stage: "vae",
                step: step + 1,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &vae);
        // Constant rate after a short warm-up, a tenth of it for the last fifth.
        let warm = ((step + 1) as f64 / 100.0).min(1.0);
        let tail = if step * 5 >= stage.steps * 4 {
            0.1
        } else {
            1.0
        };
        vae = optimizer.step(stage.learning_rate * warm * tail, vae, grads);
        recent.push(l1_value);
        if (step + 1) % 50 == 0 {
            let mean = recent.mean();
            progress.set_message(format!("L1 {mean:.4}"));
            if (step + 1) % 250 == 0 {
                tracing::info!(step = step + 1, l1 = mean, "autoencoder");
            }
        }
        progress.inc(1);
    }
    let vae = vae.valid();
    let (scaling_factor, posterior_std) = measure_scaling(&vae, config, data, &mut rng, device)?;
    let reconstruction_rate = reconstruction_rate(&vae, config, data, &mut rng, device)?;
    Ok(TrainedVae {
        vae,
        scaling_factor,
        final_l1: recent.mean(),
        reconstruction_rate,
        posterior_std,
    })
}

/// The detector's verdict on reconstructions of the first 64 images (at most the data set):
/// the share whose first object keeps its shape and colour.
fn reconstruction_rate<B: burn::tensor::backend::Backend>(
    vae: &AutoencoderKL<B>,
    config: &PretrainConfig,
    data: &BaseData,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<f32> {
    let indices: Vec<usize> = (0..64.min(data.len())).collect();
    let images = data.images::<B>(&indices, device);
    let posterior = vae.encode(images)?;
    let noise = gaussian::<B, 4>(rng, posterior.mean().dims(), device);
    let decoded = to_rgb8(vae.decode(posterior.sample(noise)?)?)?;
    let mut right = 0;
    for (&i, image) in indices.iter().zip(decoded) {
        let item = base_sample(&config.world, config.seed, i as u64)?.items[0];
        let image = RgbImage::from_raw(image.width as u32, image.height as u32, image.pixels)
            .ok_or_else(|| PretrainError::InvalidConfig("decoded image size".into()))?;
        let target = Target {
            shape: item.shape,
            colour: Some(item.colour),
            position: None,
        };
        right += usize::from(text_alignment(&image, &target).aligned);
    }
    Ok(right as f32 / indices.len() as f32)
}

/// `1 / std` of posterior samples of the first `config.vae.scaling_images` images (at most
/// the data set), as Stable Diffusion's `scaling_factor` was chosen, and the mean posterior
/// standard deviation.
fn measure_scaling<B: burn::tensor::backend::Backend>(
    vae: &AutoencoderKL<B>,
    config: &PretrainConfig,
    data: &BaseData,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<(f64, f32)> {
    let count = config.vae.scaling_images.min(data.len());
    let (mut sum, mut sum_sq, mut n, mut std_sum) = (0.0f64, 0.0f64, 0usize, 0.0f64);
    for start in (0..count).step_by(256) {
        let indices: Vec<usize> = (start..(start + 256).min(count)).collect();
        let images = data.images::<B>(&indices, device);
        let posterior = vae.encode(images)?;
        let std: f32 = posterior.std().sum().into_scalar().elem();
        std_sum += f64::from(std);
        let noise = gaussian::<B, 4>(rng, posterior.mean().dims(), device);
        let z = posterior.sample(noise)?;
        let values = z
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| PretrainError::InvalidConfig(format!("latents: {e:?}")))?;
        n += values.len();
        for v in values {
            sum += f64::from(v);
            sum_sq += f64::from(v) * f64::from(v);
        }
    }
    let mean = sum / n as f64;
    let std = (sum_sq / n as f64 - mean * mean).max(1e-12).sqrt();
    Ok((1.0 / std, (std_sum / n as f64) as f32))
}
