//! Noise schedulers with diffusers 0.42 semantics.
//!
//! - [`SchedulerConfig`] reads a diffusers `scheduler/scheduler_config.json` and refuses the
//!   options not implemented here with a typed error;
//! - [`NoiseSchedule`] is the shared `alphas_cumprod`, with diffusers' float32 rounding points;
//! - [`DdpmNoiser`] noises latents for training (`add_noise`, `get_velocity`, the target);
//! - [`DdimScheduler`] and [`DpmSolverMultistepScheduler`] sample, behind the [`Scheduler`]
//!   trait; [`SchedulerKind::build`] picks one at run time.
//!
//! Scalar coefficients are computed on the host in f64 from the float32 schedule and applied
//! to burn tensors, so the tensors stay on their device. Neither scheduler scales the model
//! input (diffusers' `scale_model_input` is the identity for both) and both start from unit
//! Gaussian noise ([`Scheduler::init_noise_sigma`] is 1).
//!
//! A sampling loop:
//!
//! ```ignore
//! let mut scheduler = SchedulerKind::DpmSolverMultistep.build::<B>(&config, 25)?;
//! let mut latents = noise.mul_scalar(scheduler.init_noise_sigma());
//! for t in scheduler.timesteps().to_vec() {
//!     let t = Tensor::from_floats([t as f32], &device);
//!     let model_output = unet.forward(latents.clone(), t, &conditioning)?;
//!     latents = scheduler.step(model_output, latents)?;
//! }
//! ```

mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod schedule;

use burn::tensor::{backend::Backend, Tensor};

pub use config::{BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::DdimScheduler;
pub use ddpm::DdpmNoiser;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use schedule::NoiseSchedule;

use crate::error::{Error, Result};

/// A sampler that walks a fixed list of timesteps, noisiest first, one [`Scheduler::step`] per
/// model evaluation. The position in the list is kept inside (like diffusers' `step_index`), so
/// `step` takes no timestep: call the model at `timesteps()[step_index()]`.
pub trait Scheduler<B: Backend> {
    /// The timesteps to evaluate the model at, in order.
    fn timesteps(&self) -> &[usize];

    /// The standard deviation of the initial noise: multiply unit Gaussian noise by it.
    fn init_noise_sigma(&self) -> f64;

    /// How many steps have been taken: the index in [`Scheduler::timesteps`] of the next one.
    fn step_index(&self) -> usize;

    /// Advances the sample from the current timestep to the next (or to the clean sample after
    /// the last), given the model's output at the current timestep.
    ///
    /// Errors: [`Error::InvalidInput`] when all steps have been taken or the shapes differ.
    ///
    /// # Shapes
    /// - `model_output`, `sample`: `[batch, channels, height, width]`
    /// - returns `[batch, channels, height, width]`
    fn step(&mut self, model_output: Tensor<B, 4>, sample: Tensor<B, 4>) -> Result<Tensor<B, 4>>;
}

/// The samplers a pipeline can choose at run time (e.g. from a command-line flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// [`DdimScheduler`].
    Ddim,
    /// [`DpmSolverMultistepScheduler`].
    DpmSolverMultistep,
}

impl SchedulerKind {
    /// Builds this kind of scheduler for `num_inference_steps` steps.
    pub fn build<B: Backend>(
        self,
        config: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> Result<Box<dyn Scheduler<B>>> {
        Ok(match self {
            Self::Ddim => Box::new(DdimScheduler::new(config, num_inference_steps)?),
            Self::DpmSolverMultistep => Box::new(DpmSolverMultistepScheduler::<B>::new(
                config,
                num_inference_steps,
            )?),
        })
    }
}

/// The error for a `step` after the last timestep.
fn past_end(steps: usize) -> Error {
    Error::InvalidInput(format!(
        "all {steps} scheduler steps have been taken; build a new scheduler to sample again"
    ))
}

/// [`Error::InvalidInput`] unless two tensors have the same shape.
fn check_same_shape<B: Backend>(
    name: &str,
    tensor: &Tensor<B, 4>,
    reference_name: &str,
    reference: &Tensor<B, 4>,
) -> Result<()> {
    let (dims, expected) = (tensor.dims(), reference.dims());
    if dims != expected {
        return Err(Error::InvalidInput(format!(
            "{name} has shape {dims:?}, {reference_name} has {expected:?}"
        )));
    }
    Ok(())
}
