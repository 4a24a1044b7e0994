//! The denoising loop with classifier-free guidance, over any [`Conditioning`]: the text
//! pipeline passes one shared embedding, the continual crates pass layer-wise embeddings and
//! bank gates through the same loop.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

use crate::conditioning::Conditioning;
use crate::error::{Error, Result};
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
/// # Shapes
/// - latents: `[batch, in_channels, h, w]` -> `[batch, out_channels, h, w]`
pub fn sample<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    latents: Tensor<B, 4>,
    conditioning: &Conditioning<B>,
    settings: &SamplingSettings,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor<B, 4>> {
    let mut scheduler = settings
        .kind
        .build::<B>(settings.scheduler, settings.steps)?;
    let guided = settings.guidance_scale > 1.0;
    let device = latents.device();
    let mut latents = latents * scheduler.init_noise_sigma();
    let timesteps = scheduler.timesteps().to_vec();
    for (i, &t) in timesteps.iter().enumerate() {
        let input = if guided {
            Tensor::cat(vec![latents.clone(), latents.clone()], 0)
        } else {
            latents.clone()
        };
        let t = Tensor::<B, 1>::from_floats([t as f32], &device);
        let noise = unet.forward(input, t, conditioning)?;
        let noise = if guided {
            apply_guidance(noise, settings.guidance_scale)
        } else {
            noise
        };
        latents = scheduler.step(noise, latents)?;
        on_step(i + 1, timesteps.len());
    }
    let finite: bool = latents.clone().is_finite().all().into_scalar().elem();
    if !finite {
        return Err(Error::InvalidInput(
            "sampling produced non-finite latents (NaN or infinity); try f32 or fewer steps".into(),
        ));
    }
    Ok(latents)
}
