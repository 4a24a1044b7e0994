//! DDPM forward noising for training: diffusers `DDPMScheduler.add_noise`, `get_velocity`, and
//! the regression target each prediction type trains on.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::check_same_shape;
use super::config::{PredictionType, SchedulerConfig};
use super::schedule::{signal_noise_scales, NoiseSchedule};
use crate::error::{Error, Result};

/// Noises clean latents to chosen training timesteps and gives the training target, with the
/// schedule and prediction type of a [`SchedulerConfig`]. Sampling-side options (spacing,
/// clipping, solver settings) are ignored.
#[derive(Debug, Clone)]
pub struct DdpmNoiser {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
}

impl DdpmNoiser {
    /// Builds the noiser for a config.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        Ok(Self {
            schedule: NoiseSchedule::new(config)?,
            prediction_type: config.prediction_type,
        })
    }

    /// The noise schedule, e.g. to sample timesteps in `0..num_train_timesteps()`.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// `sqrt(a_t) * original + sqrt(1 - a_t) * noise` with `a_t = alphas_cumprod[t]` for each
    /// sample's own timestep (diffusers `add_noise`).
    ///
    /// # Shapes
    /// - `original`, `noise`: `[batch, channels, height, width]`
    /// - `timesteps`: `batch` values, each `< num_train_timesteps`
    /// - returns `[batch, channels, height, width]`
    pub fn add_noise<B: Backend>(
        &self,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        check_same_shape("noise", &noise, "original", &original)?;
        let (signal, noise_scale) = self.scales(timesteps, &original)?;
        Ok(signal.mul(original).add(noise_scale.mul(noise)))
    }

    /// The velocity `sqrt(a_t) * noise - sqrt(1 - a_t) * sample` (diffusers `get_velocity`):
    /// the target of a `v_prediction` model, with `sample` the clean latents.
    ///
    /// # Shapes
    /// - `sample`, `noise`: `[batch, channels, height, width]`
    /// - `timesteps`: `batch` values, each `< num_train_timesteps`
    /// - returns `[batch, channels, height, width]`
    pub fn velocity<B: Backend>(
        &self,
        sample: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        check_same_shape("noise", &noise, "sample", &sample)?;
        let (signal, noise_scale) = self.scales(timesteps, &sample)?;
        Ok(signal.mul(noise).sub(noise_scale.mul(sample)))
    }

    /// What the model should output for `add_noise(original, noise, timesteps)` under the
    /// configured prediction type: `noise` (epsilon), the velocity (v_prediction) or
    /// `original` (sample), as diffusers' training scripts use.
    ///
    /// # Shapes
    /// - `original`, `noise`: `[batch, channels, height, width]`
    /// - `timesteps`: `batch` values, each `< num_train_timesteps`
    /// - returns `[batch, channels, height, width]`
    pub fn training_target<B: Backend>(
        &self,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        check_same_shape("noise", &noise, "original", &original)?;
        match self.prediction_type {
            PredictionType::VPrediction => self.velocity(original, noise, timesteps),
            PredictionType::Epsilon => {
                self.alphas_cumprod(timesteps, original.dims()[0])?;
                Ok(noise)
            }
            PredictionType::Sample => {
                self.alphas_cumprod(timesteps, original.dims()[0])?;
                Ok(original)
            }
        }
    }

    /// `alphas_cumprod` at each sample's timestep; checks that there is one valid timestep per
    /// sample.
    fn alphas_cumprod(&self, timesteps: &[usize], batch: usize) -> Result<Vec<f32>> {
        if timesteps.len() != batch {
            return Err(Error::InvalidInput(format!(
                "{} timesteps for a batch of {batch}: give one per sample",
                timesteps.len()
            )));
        }
        timesteps
            .iter()
            .map(|&t| self.schedule.alpha_cumprod(t))
            .collect()
    }

    /// Per-sample `sqrt(a_t)` and `sqrt(1 - a_t)` as `[batch, 1, 1, 1]` tensors that broadcast
    /// over `like`'s samples.
    fn scales<B: Backend>(
        &self,
        timesteps: &[usize],
        like: &Tensor<B, 4>,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let batch = like.dims()[0];
        let (signal, noise): (Vec<f32>, Vec<f32>) = self
            .alphas_cumprod(timesteps, batch)?
            .into_iter()
            .map(|a| {
                let (signal, noise) = signal_noise_scales(a);
                (signal as f32, noise as f32)
            })
            .unzip();
        let device = like.device();
        let column = |values: Vec<f32>| {
            Tensor::<B, 4>::from_data(TensorData::new(values, [batch, 1, 1, 1]), &device)
        };
        Ok((column(signal), column(noise)))
    }
}
