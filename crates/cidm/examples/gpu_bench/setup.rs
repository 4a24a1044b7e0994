//! What is measured on: the UNet config (`sd15`, or `tiny` for a CPU), the latent and text
//! sizes, and the inputs shared by the workloads. Weights are random: speed does not depend
//! on their values, and the real checkpoint is 3.4 GB the benchmark machine need not have.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use clap::ValueEnum;

use cidm::diffusion::schedulers::{BetaSchedule, SchedulerConfig};
use cidm::diffusion::unet::{PerBlock, UNet2DConditionConfig};

use crate::error::{BenchError, Result};

/// Text tokens of every prompt (CLIP's context length).
pub const TOKENS: usize = 77;
/// Classifier-free guidance scale of every guided workload.
pub const GUIDANCE: f64 = 7.5;
/// The timestep of the single-step workloads (mid-schedule).
pub const TIMESTEP: f32 = 500.0;

/// The UNet configurations the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigName {
    /// Stable Diffusion 1.5's UNet (`UNet2DConditionConfig::sd15()`): 64x64 latents (512x512
    /// images), 768-wide text.
    Sd15,
    /// SD 1.5's block structure (16 cross-attention layers) at widths 32/32/64/64, 16x16
    /// latents and 32-wide text: seconds per workload on a CPU, for checking the program.
    Tiny,
}

impl ConfigName {
    /// The UNet config of this name.
    pub fn unet(self) -> UNet2DConditionConfig {
        match self {
            Self::Sd15 => UNet2DConditionConfig::sd15(),
            Self::Tiny => UNet2DConditionConfig {
                block_out_channels: vec![32, 32, 64, 64],
                attention_head_dim: PerBlock::All(4),
                cross_attention_dim: 32,
                norm_num_groups: 8,
                sample_size: Some(16),
                ..UNet2DConditionConfig::sd15()
            },
        }
    }
}

/// The sizes every workload is built from.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The UNet config.
    pub unet: UNet2DConditionConfig,
    /// Latent height and width.
    pub latent: usize,
    /// Text width (the config's cross-attention dim).
    pub text_dim: usize,
}

impl Setup {
    /// The sizes of `name`'s config; errors when the config has no sample size.
    pub fn new(name: ConfigName) -> Result<Self> {
        let unet = name.unet();
        let latent = unet.sample_size.ok_or_else(|| {
            BenchError::InvalidArgument("the UNet config has no sample_size".into())
        })?;
        Ok(Self {
            text_dim: unet.cross_attention_dim,
            unet,
            latent,
        })
    }

    /// Standard-normal latents `[batch, 4, latent, latent]`.
    pub fn latents<B: Backend>(&self, batch: usize, device: &B::Device) -> Tensor<B, 4> {
        let channels = self.unet.in_channels;
        Tensor::random(
            [batch, channels, self.latent, self.latent],
            Distribution::Normal(0.0, 1.0),
            device,
        )
    }

    /// Standard-normal text embeddings `[batch, 77, text_dim]`.
    pub fn text<B: Backend>(&self, batch: usize, device: &B::Device) -> Tensor<B, 3> {
        Tensor::random(
            [batch, TOKENS, self.text_dim],
            Distribution::Normal(0.0, 1.0),
            device,
        )
    }

    /// The single-step workloads' timestep `[1]`.
    pub fn timestep<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_floats([TIMESTEP], device)
    }
}

/// Stable Diffusion 1.5's scheduler config (its `scheduler/scheduler_config.json`: scaled
/// linear betas 0.00085..0.012, `steps_offset` 1), which the DPM-Solver++ sampler runs on.
pub fn sd15_scheduler() -> SchedulerConfig {
    SchedulerConfig {
        beta_start: 0.00085,
        beta_end: 0.012,
        beta_schedule: BetaSchedule::ScaledLinear,
        steps_offset: 1,
        set_alpha_to_one: false,
        clip_sample: false,
        ..SchedulerConfig::default()
    }
}

/// Syncs `B` on `device`: every timed repetition ends here.
pub fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| BenchError::Sync(format!("{e:?}")))
}
