//! DPM-Solver++ multistep sampling (diffusers `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"`, `solver_type = "midpoint"`): first order or the second
//! order "2M" solver, which reuses the previous step's clean-sample prediction.

use burn::tensor::{backend::Backend, Tensor};

use super::config::{FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{
    check_inference_steps, checked_timesteps, np_arange, np_linspace, NoiseSchedule,
};
use super::{check_same_shape, past_end, Scheduler};
use crate::error::{Error, Result};

/// Below this many steps, `lower_order_final` makes the last step first order (diffusers'
/// threshold).
const LOWER_ORDER_FINAL_BELOW: usize = 15;

/// DPM-Solver++ (1 or 2M) with diffusers 0.42 semantics: its own timestep spacing (default
/// `"linspace"`), sigmas taken at those timesteps plus a final `"zero"` or `"sigma_min"`,
/// `lower_order_final` / `euler_at_final`, and the three prediction types. Karras, exponential,
/// beta, Lu and flow sigmas, thresholding, SDE variants and third order are refused by
/// [`SchedulerConfig`].
///
/// The scheduler holds the previous step's clean-sample prediction, so a new one is needed per
/// generation (or per batch of generations run in lockstep).
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler<B: Backend> {
    prediction_type: PredictionType,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigmas_type: FinalSigmasType,
    timesteps: Vec<usize>,
    /// `sqrt((1 - a) / a)` at each timestep, then the final sigma; float32 as in diffusers.
    sigmas: Vec<f32>,
    step_index: usize,
    /// diffusers' `lower_order_nums`: steps taken so far, capped at `solver_order`.
    lower_order_nums: usize,
    /// The clean-sample prediction of the previous step (diffusers `model_outputs[-2]`).
    previous_prediction: Option<Tensor<B, 4>>,
}

impl<B: Backend> DpmSolverMultistepScheduler<B> {
    /// A scheduler ready to run `num_inference_steps` steps from the noisiest timestep.
    ///
    /// Errors: the config's, [`Error::InvalidInput`] when `num_inference_steps` is 0 or above
    /// `num_train_timesteps`, or when diffusers' spacing gives a timestep outside training or a
    /// repeated first timestep (diffusers would then start at its second occurrence and run
    /// off the end of its sigmas).
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config)?;
        let timesteps = dpm_timesteps(config, num_inference_steps)?;
        let alphas_cumprod = schedule.alphas_cumprod();
        let final_sigma = match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => sigma_of(alphas_cumprod[0]),
        };
        let sigmas = timesteps
            .iter()
            .map(|&t| sigma_of(alphas_cumprod[t]))
            .chain([final_sigma])
            .collect();
        Ok(Self {
            prediction_type: config.prediction_type,
            solver_order: config.solver_order,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_sigmas_type: config.final_sigmas_type,
            timesteps,
            sigmas,
            step_index: 0,
            lower_order_nums: 0,
            previous_prediction: None,
        })
    }

    /// The clean sample implied by the model output at the current step (diffusers
    /// `convert_model_output` for DPM-Solver++).
    fn predict_clean(&self, model_output: Tensor<B, 4>, sample: Tensor<B, 4>) -> Tensor<B, 4> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[self.step_index]);
        match self.prediction_type {
            PredictionType::Epsilon => sample.sub(model_output.mul_scalar(sigma)).div_scalar(alpha),
            PredictionType::VPrediction => {
                sample.mul_scalar(alpha).sub(model_output.mul_scalar(sigma))
            }
            PredictionType::Sample => model_output,
        }
    }

    /// `(sigma_t / sigma_s, alpha_t * (exp(-h) - 1), h)` for the step from the current sigma
    /// `s` to the next `t`, with `h = lambda_t - lambda_s` the log-SNR step.
    fn step_coefficients(&self) -> (f64, f64, f64) {
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[self.step_index]);
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[self.step_index + 1]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        (sigma_t / sigma_s, alpha_t * ((-h).exp() - 1.0), h)
    }

    /// First-order DPM-Solver++ (equivalent to DDIM) from clean-sample prediction `m0`.
    fn first_order(&self, m0: Tensor<B, 4>, sample: Tensor<B, 4>) -> Tensor<B, 4> {
        let (ratio, coeff, _) = self.step_coefficients();
        sample.mul_scalar(ratio).sub(m0.mul_scalar(coeff))
    }

    /// Second-order multistep DPM-Solver++ (midpoint) from the current prediction `m0` and the
    /// previous step's `m1`.
    fn second_order(
        &self,
        m0: Tensor<B, 4>,
        m1: Tensor<B, 4>,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let (ratio, coeff, h) = self.step_coefficients();
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[self.step_index]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[self.step_index - 1]);
        let r0 = (lambda(alpha_s0, sigma_s0) - lambda(alpha_s1, sigma_s1)) / h;
        let d1 = m0.clone().sub(m1).mul_scalar(1.0 / r0);
        sample
            .mul_scalar(ratio)
            .sub(m0.mul_scalar(coeff))
            .sub(d1.mul_scalar(0.5 * coeff))
    }
}

/// The timesteps diffusers' `DPMSolverMultistepScheduler.set_timesteps` produces (with the
/// default `lambda_min_clipped`, so the last timestep is `num_train_timesteps`), noisiest first.
fn dpm_timesteps(config: &SchedulerConfig, steps: usize) -> Result<Vec<usize>> {
    let train = config.num_train_timesteps;
    check_inference_steps(steps, train)?;
    let raw: Vec<i64> = match config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace) {
        TimestepSpacing::Linspace => np_linspace(0.0, (train - 1) as f64, steps + 1)
            .into_iter()
            .skip(1)
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = train / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(train as f64, 0.0, -(train as f64 / steps as f64))
            .into_iter()
            .map(|t| t.round_ties_even() as i64 - 1)
            .collect(),
    };
    let timesteps = checked_timesteps(raw, train)?;
    match timesteps.split_first() {
        Some((first, rest)) if rest.contains(first) => Err(Error::InvalidInput(format!(
            "{steps} steps with this spacing repeat the first timestep {first}, which diffusers \
             cannot run; choose fewer steps"
        ))),
        _ => Ok(timesteps),
    }
}

/// `((1 - a) / a) ** 0.5` in float32, as diffusers computes its sigmas.
fn sigma_of(alpha_cumprod: f32) -> f32 {
    ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
}

/// `(alpha_t, sigma_t) = (1 / sqrt(sigma^2 + 1), sigma * alpha_t)`: the signal and noise scales
/// of the variance-preserving process at noise level `sigma`.
fn alpha_sigma(sigma: f32) -> (f64, f64) {
    let sigma = f64::from(sigma);
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// The log signal-to-noise ratio `ln(alpha) - ln(sigma)`; infinite at `sigma = 0`, which makes
/// `exp(-h) = 0` and the step land on the clean prediction.
fn lambda(alpha: f64, sigma: f64) -> f64 {
    alpha.ln() - sigma.ln()
}

impl<B: Backend> Scheduler<B> for DpmSolverMultistepScheduler<B> {
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
        let steps = self.timesteps.len();
        if self.step_index >= steps {
            return Err(past_end(steps));
        }
        check_same_shape("model_output", &model_output, "sample", &sample)?;
        let few_steps = self.lower_order_final && steps < LOWER_ORDER_FINAL_BELOW;
        let last_is_first_order =
            self.euler_at_final || few_steps || self.final_sigmas_type == FinalSigmasType::Zero;
        let first_order = self.solver_order == 1
            || self.lower_order_nums < 1
            || (self.step_index == steps - 1 && last_is_first_order);

        let m0 = self.predict_clean(model_output, sample.clone());
        let previous = self.previous_prediction.replace(m0.clone());
        let prev_sample = match previous {
            Some(m1) if !first_order => self.second_order(m0, m1, sample),
            _ => self.first_order(m0, sample),
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        self.step_index += 1;
        Ok(prev_sample)
    }
}
