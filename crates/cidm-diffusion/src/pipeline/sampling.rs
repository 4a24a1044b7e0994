//! The denoising loop with classifier-free guidance, over any [`Conditioning`]: the text
//! pipeline passes one shared embedding, the continual crates pass layer-wise embeddings and
//! bank gates through the same loop.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

use crate::conditioning::Conditioning;
use crate::error::{Error, Result, SamplingStage};
use crate::schedulers::{SchedulerConfig, SchedulerKind};
use crate::unet::UNet2DConditionModel;

/// One sampling run's settings.
#[derive(Debug, Clone)]
pub struct SamplingSettings<'a> {
    /// The scheduler's training config (`scheduler/scheduler_config.json`).
    pub scheduler: &'a SchedulerConfig,
    /// Which sampler runs it.
    pub kind: SchedulerKind,
    /// Denoising steps.
    pub steps: usize,
    /// Guidance scale; above 1 the conditioning batch is `[unconditional; conditional]`.
    pub guidance_scale: f64,
}

/// `uncond + scale * (cond - uncond)` for a batch laid out `[uncond; cond]`.
///
/// # Shapes
/// - noise: `[2 * batch, c, h, w]` -> `[batch, c, h, w]`
pub fn apply_guidance<B: Backend>(noise: Tensor<B, 4>, scale: f64) -> Tensor<B, 4> {
    let batch = noise.dims()[0] / 2;
    let uncond = noise.clone().narrow(0, 0, batch);
    let cond = noise.narrow(0, batch, batch);
    uncond.clone() + (cond - uncond) * scale
}

/// Denoises `latents` from pure noise to a clean latent. With guidance, `conditioning` holds
/// twice the latent batch, unconditional first, and every step runs both halves in one UNet
/// call. `on_step(done, total)` is called after each step (progress bars).
///
/// This is [`sample_with`] with the plain guided prediction; its NaN checks apply.
///
/// # Shapes
/// - latents: `[batch, in_channels, h, w]` -> `[batch, out_channels, h, w]`
pub fn sample<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    latents: Tensor<B, 4>,
    conditioning: &Conditioning<B>,
    settings: &SamplingSettings,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor<B, 4>> {
    let guidance = settings.guidance_scale;
    let mut predict = |latents: Tensor<B, 4>, t: Tensor<B, 1>| -> Result<Tensor<B, 4>> {
        if guidance > 1.0 {
            let input = Tensor::cat(vec![latents.clone(), latents], 0);
            Ok(apply_guidance(
                unet.forward(input, t, conditioning)?,
                guidance,
            ))
        } else {
            unet.forward(latents, t, conditioning)
        }
    };
    sample_with(unet, latents, settings, &mut predict, on_step)
}

/// The sampling loop over any noise prediction: `predict(latents, t)` returns the (guided,
/// composed, ...) noise estimate for the current latents at timestep `t`, and the scheduler
/// steps with it. Plain guidance ([`sample`]) and regional composition both run through this
/// one loop, so both get the same checks.
///
/// Every step ends with one reduction on the device (are all latents finite?), read back as
/// one boolean: a NaN or infinity fails the run at the step where it first appears with
/// [`Error::NonFiniteSample`], which names the step, its timestep, whether the prediction or
/// the scheduler's update produced it, and the first parameter of `unet` that is not finite if
/// there is one. The extra checks that locate it run only after a failure.
///
/// # Shapes
/// - latents: `[batch, in_channels, h, w]`; `predict` returns the same shape.
pub fn sample_with<B: Backend, E: From<Error>>(
    unet: &UNet2DConditionModel<B>,
    latents: Tensor<B, 4>,
    settings: &SamplingSettings,
    predict: &mut dyn FnMut(Tensor<B, 4>, Tensor<B, 1>) -> std::result::Result<Tensor<B, 4>, E>,
    on_step: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Tensor<B, 4>, E> {
    let mut scheduler = settings
        .kind
        .build::<B>(settings.scheduler, settings.steps)?;
    if !all_finite(latents.clone()) {
        return Err(Error::InvalidInput("the initial latents hold NaN or infinity".into()).into());
    }
    let device = latents.device();
    let mut latents = latents * scheduler.init_noise_sigma();
    let timesteps = scheduler.timesteps().to_vec();
    for (i, &timestep) in timesteps.iter().enumerate() {
        let t = Tensor::<B, 1>::from_floats([timestep as f32], &device);
        let noise = predict(latents.clone(), t)?;
        if noise.dims() != latents.dims() {
            return Err(Error::InvalidInput(format!(
                "the noise prediction has shape {:?}, the latents {:?}",
                noise.dims(),
                latents.dims()
            ))
            .into());
        }
        latents = scheduler.step(noise.clone(), latents)?;
        if !all_finite(latents.clone()) {
            let stage = if all_finite(noise) {
                SamplingStage::SchedulerStep
            } else {
                SamplingStage::NoisePrediction
            };
            let error = Error::NonFiniteSample {
                step: i + 1,
                steps: timesteps.len(),
                timestep,
                stage,
                layer: first_non_finite_parameter(unet),
            };
            tracing::error!("{error}");
            return Err(error.into());
        }
        on_step(i + 1, timesteps.len());
    }
    Ok(latents)
}

/// Whether every element is finite: one reduction on the device, one boolean read back.
fn all_finite<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> bool {
    tensor.is_finite().all().into_scalar().elem()
}

/// The dotted module path of the first float parameter of `module` (in declaration order)
/// holding NaN or infinity: one reduction per parameter, for diagnosis after a failure only.
pub fn first_non_finite_parameter<B: Backend, M: Module<B>>(module: &M) -> Option<String> {
    struct Finder {
        path: Vec<String>,
        found: Option<String>,
    }
    impl<B: Backend> ModuleVisitor<B> for Finder {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.found.is_none() && !all_finite(param.val()) {
                self.found = Some(self.path.join("."));
            }
        }
    }
    let mut finder = Finder {
        path: Vec::new(),
        found: None,
    };
    module.visit(&mut finder);
    finder.found
}
