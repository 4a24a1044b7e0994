//! The training noise schedule every scheduler shares, and the numpy-exact grids the schedulers
//! build their inference timesteps from.
//!
//! # Precision
//!
//! diffusers keeps `betas`, `alphas = 1 - betas` and `alphas_cumprod` as float32 tensors, and
//! torch's CPU `cumprod` accumulates float32 in double precision. [`NoiseSchedule`] computes
//! every beta in f64, rounds it to f32, forms `1 - beta` in f32, and accumulates the product in
//! f64, rounding each `alphas_cumprod` entry to f32: the rounding points are diffusers'. The one
//! remaining difference is that `torch.linspace` evaluates in float32 arithmetic while the betas
//! here are the correctly rounded f64 values, so some betas differ by one f32 ulp; measured
//! against diffusers 0.42, `alphas_cumprod` agrees to a relative 4e-7 for the linear and
//! scaled-linear schedules and exactly for `squaredcos_cap_v2` (computed in f64 by both).

use super::config::{BetaSchedule, SchedulerConfig};
use crate::error::{Error, Result};

/// Cumulative products of `1 - beta` over the training timesteps (diffusers `alphas_cumprod`):
/// the fraction of signal variance left in a sample noised to each timestep.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// Builds the schedule of a config (after [`SchedulerConfig::validate`]).
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        config.validate()?;
        let mut product = 1.0f64;
        let alphas_cumprod = betas(config)
            .into_iter()
            .map(|beta| {
                product *= f64::from(1.0f32 - beta);
                product as f32
            })
            .collect();
        Ok(Self { alphas_cumprod })
    }

    /// `alphas_cumprod`, one float32 value per training timestep, as diffusers stores it.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `alphas_cumprod[t]`, or [`Error::InvalidInput`] for a timestep outside training.
    pub fn alpha_cumprod(&self, t: usize) -> Result<f32> {
        self.alphas_cumprod.get(t).copied().ok_or_else(|| {
            Error::InvalidInput(format!(
                "timestep {t} is outside the {} training timesteps",
                self.num_train_timesteps()
            ))
        })
    }
}

/// `(sqrt(a), sqrt(1 - a))` for an `alphas_cumprod` value `a`: the scales of signal and noise
/// in a noised sample. `1 - a` is rounded to f32 first, as diffusers forms it on float32
/// tensors; the square roots are taken in f64.
pub(crate) fn signal_noise_scales(alpha_cumprod: f32) -> (f64, f64) {
    (
        f64::from(alpha_cumprod).sqrt(),
        f64::from(1.0f32 - alpha_cumprod).sqrt(),
    )
}

/// The betas diffusers builds for a config, rounded to f32.
fn betas(config: &SchedulerConfig) -> Vec<f32> {
    let n = config.num_train_timesteps;
    match config.beta_schedule {
        BetaSchedule::Linear => torch_linspace(config.beta_start, config.beta_end, n)
            .map(|beta| beta as f32)
            .collect(),
        BetaSchedule::ScaledLinear => {
            torch_linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                .map(|root| {
                    let root = root as f32;
                    root * root
                })
                .collect()
        }
        BetaSchedule::SquaredcosCapV2 => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    }
}

/// `torch.linspace(start, end, steps)` in f64: the first half counted up from `start`, the
/// second half down from `end`, as torch does.
fn torch_linspace(start: f64, end: f64, steps: usize) -> impl Iterator<Item = f64> {
    let step = if steps > 1 {
        (end - start) / (steps - 1) as f64
    } else {
        0.0
    };
    (0..steps).map(move |i| {
        if i < steps / 2 {
            start + step * i as f64
        } else {
            end - step * (steps - 1 - i) as f64
        }
    })
}

/// `np.linspace(start, stop, num)`: `i * step + start`, with the last value exactly `stop`.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = values.last_mut() {
        *last = stop;
    }
    values
}

/// `np.arange(start, stop, step)` for floats: `ceil((stop - start) / step)` values; the second
/// is `start + step`, and later ones are `start + i * delta` with `delta` re-derived from the
/// first two, as numpy's fill does (this decides how some `.5` values round).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// Checks the timesteps a spacing rule produced: diffusers would index out of its schedule
/// with a negative timestep or one past training, so these are errors here.
pub(crate) fn checked_timesteps(raw: Vec<i64>, num_train_timesteps: usize) -> Result<Vec<usize>> {
    raw.iter()
        .map(|&t| {
            usize::try_from(t)
                .ok()
                .filter(|&t| t < num_train_timesteps)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "this step count and spacing give timestep {t} (as in diffusers), outside \
                         0..{num_train_timesteps}; choose another number of steps"
                    ))
                })
        })
        .collect()
}

/// Checks `0 < num_inference_steps <= num_train_timesteps`, as diffusers' `set_timesteps`.
pub(crate) fn check_inference_steps(num_inference_steps: usize, num_train: usize) -> Result<()> {
    if num_inference_steps == 0 || num_inference_steps > num_train {
        return Err(Error::InvalidInput(format!(
            "num_inference_steps = {num_inference_steps} must be in 1..={num_train} \
             (num_train_timesteps)"
        )));
    }
    Ok(())
}
