//! DDIM sampling (diffusers `DDIMScheduler`) with `eta = 0`: deterministic steps from a model's
//! prediction to the sample at the previous timestep.

use burn::tensor::{backend::Backend, Tensor};

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{
    check_inference_steps, checked_timesteps, np_arange, np_linspace, signal_noise_scales,
    NoiseSchedule,
};
use super::{check_same_shape, past_end, Scheduler};
use crate::error::Result;

/// DDIM with diffusers 0.42 semantics: `set_timesteps` spacing (with diffusers' rounding and
/// `steps_offset`), `step` with `eta = 0`, the three prediction types, `clip_sample`, and
/// `set_alpha_to_one` for the last step. Thresholding and `rescale_betas_zero_snr` are refused
/// by [`SchedulerConfig`].
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    /// The clamp bound for the predicted clean sample, when `clip_sample` is set.
    clip: Option<f64>,
    /// `alphas_cumprod` used for the step that goes past timestep 0.
    final_alpha_cumprod: f32,
    /// diffusers steps back by `num_train_timesteps / num_inference_steps` (integer division)
    /// whatever the spacing, and so does this.
    step_ratio: usize,
    timesteps: Vec<usize>,
    step_index: usize,
}

impl DdimScheduler {
    /// A scheduler ready to run `num_inference_steps` steps from the noisiest timestep.
    ///
    /// Errors: the config's, [`crate::Error::InvalidInput`] when `num_inference_steps` is 0 or
    /// above `num_train_timesteps`, or when diffusers' spacing would give a timestep outside
    /// training (`"leading"` with `steps_offset` and as many steps as training timesteps;
    /// `"trailing"` for the step counts where numpy's `arange` yields one extra step, -1).
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config)?;
        let timesteps = ddim_timesteps(config, num_inference_steps)?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        Ok(Self {
            schedule,
            prediction_type: config.prediction_type,
            clip: config.clip_sample.then_some(config.clip_sample_range),
            final_alpha_cumprod,
            step_ratio: config.num_train_timesteps / num_inference_steps,
            timesteps,
            step_index: 0,
        })
    }
}

/// The timesteps diffusers' `DDIMScheduler.set_timesteps` produces, noisiest first.
fn ddim_timesteps(config: &SchedulerConfig, steps: usize) -> Result<Vec<usize>> {
    let train = config.num_train_timesteps;
    check_inference_steps(steps, train)?;
    let raw: Vec<i64> = match config.timestep_spacing.unwrap_or(TimestepSpacing::Leading) {
        TimestepSpacing::Linspace => np_linspace(0.0, (train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(train as f64, 0.0, -(train as f64 / steps as f64))
            .into_iter()
            .map(|t| t.round_ties_even() as i64 - 1)
            .collect(),
    };
    checked_timesteps(raw, train)
}

impl<B: Backend> Scheduler<B> for DdimScheduler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn step_index(&self) -> usize {
        self.step_index
    }

    fn step(&mut self, model_output: Tensor<B, 4>, sample: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let t = *self
            .timesteps
            .get(self.step_index)
            .ok_or_else(|| past_end(self.timesteps.len()))?;
        check_same_shape("model_output", &model_output, "sample", &sample)?;
        let (signal, noise) = signal_noise_scales(self.schedule.alpha_cumprod(t)?);
        let alpha_prev = match t.checked_sub(self.step_ratio) {
            Some(prev) => self.schedule.alpha_cumprod(prev)?,
            None => self.final_alpha_cumprod,
        };
        let (signal_prev, noise_prev) = signal_noise_scales(alpha_prev);

        let (clean, epsilon) = match self.prediction_type {
            PredictionType::Epsilon => (
                sample
                    .sub(model_output.clone().mul_scalar(noise))
                    .div_scalar(signal),
                model_output,
            ),
            PredictionType::Sample => (
                model_output.clone(),
                sample
                    .sub(model_output.mul_scalar(signal))
                    .div_scalar(noise),
            ),
            PredictionType::VPrediction => (
                sample
                    .clone()
                    .mul_scalar(signal)
                    .sub(model_output.clone().mul_scalar(noise)),
                model_output
                    .mul_scalar(signal)
                    .add(sample.mul_scalar(noise)),
            ),
        };
        let clean = match self.clip {
            Some(range) => clean.clamp(-range, range),
            None => clean,
        };
        self.step_index += 1;
        Ok(clean
            .mul_scalar(signal_prev)
            .add(epsilon.mul_scalar(noise_prev)))
    }
}
