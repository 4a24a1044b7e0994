//! Everything that decides how one task is trained, as one serde type: it is stored in every
//! task's manifest and in checkpoints, so a run can be resumed and reproduced from it.

use cidm_lora::{LoraConfig, LoraTrainingConfig};
use serde::{Deserialize, Serialize};

use crate::config::ContinualConfig;
use crate::data::Crop;
use crate::error::{Error, Result};
use crate::method::Method;

/// One task's training settings. Defaults are CIDM's released hyper-parameters (METHOD.md
/// section 1) where they exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskTrainingConfig {
    /// CIDM, an ablation or a baseline (default CIDM).
    pub method: Method,
    /// Optimizer steps (default 800).
    pub steps: usize,
    /// Images per step (default 2), drawn with replacement.
    pub batch_size: usize,
    /// Seed of everything random: token init, LoRA init, batches, noise, timesteps, crops
    /// (default 0). Step `s` draws from its own stream, so a resumed run sees the same data.
    pub seed: u64,
    /// The LoRA's rank, alpha and targets (default rank 4, alpha 4, cross-attention q/k/v/out).
    /// Its `init_seed` is offset by the task's index so tasks start from different factors.
    pub lora: LoraConfig,
    /// AdamW for the LoRA factors (default lr 1e-4, weight decay 0.01, clipping at norm 1).
    /// Step 2 of CIDM's update (R2's descent) uses the same learning rate.
    pub optimizer: LoraTrainingConfig,
    /// Learning rate of the concept tokens (default 1e-3); same AdamW settings otherwise.
    pub token_learning_rate: f64,
    /// Noise offset: `noise += offset * N(0, 1)` per sample and channel (default 0.01).
    pub noise_offset: f64,
    /// Training size in pixels; `None` (default) takes the UNet's `sample_size` times the
    /// VAE's downsample factor (512 for SD 1.5).
    pub resolution: Option<usize>,
    /// Centre or random crop (default centre).
    pub crop: Crop,
    /// Write a checkpoint every this many steps (default 100; 0 never).
    pub checkpoint_every: usize,
    /// Text-encoder layers skipped from the end (default 0).
    pub clip_skip: usize,
    /// gamma1, gamma2, the R1 form, the R2 variant and the token settings.
    pub continual: ContinualConfig,
}

impl Default for TaskTrainingConfig {
    fn default() -> Self {
        Self {
            method: Method::default(),
            steps: 800,
            batch_size: 2,
            seed: 0,
            lora: LoraConfig::default(),
            optimizer: LoraTrainingConfig::default(),
            token_learning_rate: 1e-3,
            noise_offset: 0.01,
            resolution: None,
            crop: Crop::default(),
            checkpoint_every: 100,
            clip_skip: 0,
            continual: ContinualConfig::default(),
        }
    }
}

impl TaskTrainingConfig {
    /// Checks every field (and the nested configs): zero steps or batch size, non-finite or
    /// negative rates and offsets are errors.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 {
            return Err(Error::InvalidInput(format!(
                "steps ({}) and batch_size ({}) must be at least 1",
                self.steps, self.batch_size
            )));
        }
        if !(self.token_learning_rate.is_finite() && self.token_learning_rate > 0.0) {
            return Err(Error::InvalidInput(format!(
                "token_learning_rate must be finite and > 0, got {}",
                self.token_learning_rate
            )));
        }
        if !(self.noise_offset.is_finite() && self.noise_offset >= 0.0) {
            return Err(Error::InvalidInput(format!(
                "noise_offset must be finite and >= 0, got {}",
                self.noise_offset
            )));
        }
        if self.resolution == Some(0) {
            return Err(Error::InvalidInput("resolution must be > 0".into()));
        }
        self.lora.validate()?;
        self.optimizer.validate()?;
        self.continual.validate()
    }
}
