//! Training one adapter on burn's autodiff backend with the denoising objective
//! `E ||target - unet'(z_t | c, t)||^2` (METHOD.md section 1).
//!
//! The base model is frozen (`Module::no_grad`) before the adapter is attached, so the adapter's
//! factors are the only parameters with gradients: the optimizer state and the weight decay
//! touch nothing else. The optimizer is burn's AdamW (decoupled weight decay, as PyTorch's);
//! gradients are clipped by their global L2 norm over all factors, as PyTorch's
//! `clip_grad_norm_` in diffusers' training scripts does (burn's own clipping is per tensor).

use burn::module::{Module, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use cidm_diffusion::precision::to_param_dtype;
use cidm_diffusion::schedulers::DdpmNoiser;
use cidm_diffusion::totals::{add_all, mean_all, sum_all};
use cidm_diffusion::{Conditioning, UNet2DConditionModel};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::adapter::{attached_banks, bank_param_ids, LoraAdapter};
use crate::config::LoraConfig;
use crate::error::{LoraError, Result};
use crate::optimizer_state::{adam_moments, load_adam_moments, AdamMoments};

/// Optimizer settings. Defaults are CIDM's released ones where it states them (AdamW, weight
/// decay 0.01, LoRA learning rate 1e-4) and PyTorch's otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraTrainingConfig {
    /// Learning rate (default 1e-4).
    pub learning_rate: f64,
    /// Decoupled weight decay of AdamW (default 0.01).
    pub weight_decay: f32,
    /// First-moment decay (default 0.9).
    pub beta_1: f32,
    /// Second-moment decay (default 0.999).
    pub beta_2: f32,
    /// Denominator epsilon (default 1e-8, PyTorch's).
    pub epsilon: f32,
    /// Largest global L2 norm of the gradients of all factors; larger gradients are scaled
    /// down to it (default 1.0, diffusers' `max_grad_norm`). `None` disables clipping.
    pub max_grad_norm: Option<f32>,
}

impl Default for LoraTrainingConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-4,
            weight_decay: 0.01,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            max_grad_norm: Some(1.0),
        }
    }
}

impl LoraTrainingConfig {
    /// Rejects non-positive or non-finite rates, betas outside `[0, 1)` and non-positive
    /// clipping norms.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, value: f64| {
            Err(LoraError::InvalidConfig(format!(
                "training: {what} = {value}"
            )))
        };
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", self.learning_rate);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay.into());
        }
        for (name, beta) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(name, beta.into());
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad("epsilon", self.epsilon.into());
        }
        match self.max_grad_norm {
            Some(norm) if !(norm.is_finite() && norm > 0.0) => bad("max_grad_norm", norm.into()),
            _ => Ok(()),
        }
    }
}

/// One training batch: noisy latents, their timesteps, the conditioning and the regression
/// target (the noise, for epsilon prediction).
#[derive(Debug, Clone)]
pub struct DenoisingBatch<B: Backend> {
    /// `z_t`, `[batch, channels, height, width]`.
    pub noisy_latents: Tensor<B, 4>,
    /// Training timesteps `[batch]` (0..1000).
    pub timesteps: Tensor<B, 1>,
    /// Text conditioning (shared or per layer).
    pub conditioning: Conditioning<B>,
    /// What the UNet should predict, same shape as `noisy_latents`.
    pub target: Tensor<B, 4>,
}

impl<B: Backend> DenoisingBatch<B> {
    /// Noises clean `latents` with `noise` at `timesteps` (DDPM `add_noise`) and takes the
    /// target of the noiser's prediction type.
    ///
    /// # Shapes
    /// - latents, noise: `[batch, channels, height, width]`
    /// - timesteps: `batch` values below the schedule's length
    pub fn from_clean_latents(
        noiser: &DdpmNoiser,
        latents: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
        conditioning: Conditioning<B>,
    ) -> Result<Self> {
        let device = latents.device();
        let noisy_latents = noiser.add_noise(latents.clone(), noise.clone(), timesteps)?;
        let target = noiser.training_target(latents, noise, timesteps)?;
        let steps: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        Ok(Self {
            noisy_latents,
            timesteps: Tensor::from_floats(steps.as_slice(), &device),
            conditioning,
            target,
        })
    }
}

/// What one optimizer step saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean squared error of the batch before the update.
    pub loss: f32,
    /// The extra loss term of [`LoraTrainer::step_with`] before the update (0 without one).
    pub regularizer: f32,
    /// Global L2 norm of the factors' gradients before clipping.
    pub grad_norm: f32,
}

/// Trains one adapter attached to a frozen UNet. Owns the model for the duration of training
/// (burn's optimizers consume and return it); [`LoraTrainer::adapter`] reads the factors out.
pub struct LoraTrainer<B: AutodiffBackend> {
    unet: UNet2DConditionModel<B>,
    lora: LoraConfig,
    config: LoraTrainingConfig,
    optimizer: OptimizerAdaptor<AdamW, UNet2DConditionModel<B>, B>,
    trainable: Vec<ParamId>,
}

impl<B: AutodiffBackend> LoraTrainer<B> {
    /// Freezes every parameter of `unet`, attaches `adapter` (its factors become the only
    /// trainable parameters) and sets up AdamW.
    pub fn new(
        unet: UNet2DConditionModel<B>,
        adapter: &LoraAdapter<B>,
        config: LoraTrainingConfig,
    ) -> Result<Self> {
        config.validate()?;
        adapter.check_fits(&unet)?;
        let mut unet = unet.no_grad();
        adapter.attach(&mut unet)?;
        let optimizer = AdamWConfig::new()
            .with_beta_1(config.beta_1)
            .with_beta_2(config.beta_2)
            .with_epsilon(config.epsilon)
            .with_weight_decay(config.weight_decay)
            .init();
        let trainable = bank_param_ids(&unet);
        Ok(Self {
            unet,
            lora: adapter.config().clone(),
            config,
            optimizer,
            trainable,
        })
    }

    /// One AdamW step on the batch's mean squared error. Bad batch shapes are reported before
    /// anything changes.
    pub fn step(&mut self, batch: &DenoisingBatch<B>) -> Result<StepReport> {
        self.step_with(batch, |_| Ok(None))
            .map(|(report, _)| report)
    }

    /// One AdamW step on the batch's mean squared error plus an extra term that `extra`
    /// builds from the model (e.g. a regularizer on the attached factors, read with
    /// [`crate::attached_banks`]). Returns the report and the gradients of everything that is
    /// not part of the model (e.g. concept token embeddings that produced the batch's
    /// conditioning), for the caller's own optimizer.
    ///
    /// A NaN or infinite loss, or gradient norm, is [`LoraError::NonFiniteLoss`] and changes
    /// nothing: neither the factors nor the optimizer state.
    pub fn step_with(
        &mut self,
        batch: &DenoisingBatch<B>,
        extra: impl FnOnce(&UNet2DConditionModel<B>) -> Result<Option<Tensor<B, 1>>>,
    ) -> Result<(StepReport, B::Gradients)> {
        let prediction = self.unet.forward(
            batch.noisy_latents.clone(),
            batch.timesteps.clone(),
            &batch.conditioning,
        )?;
        if prediction.dims() != batch.target.dims() {
            return Err(LoraError::InvalidInput(format!(
                "target has shape {:?}, the UNet predicts {:?}",
                batch.target.dims(),
                prediction.dims()
            )));
        }
        // In f32 whatever the model's dtype, as diffusers' `F.mse_loss(pred.float(),
        // target.float())`: an f16 mean of squares over a batch loses the loss's digits.
        let error = to_param_dtype(prediction) - to_param_dtype(batch.target.clone());
        let denoise = mean_all(error.powi_scalar(2));
        let extra = extra(&self.unet)?;
        let has_extra = extra.is_some();
        let (loss, values) = match extra {
            Some(term) => {
                let values = Tensor::cat(vec![denoise.clone(), term.clone()], 0);
                (denoise + term, values)
            }
            None => (denoise.clone(), denoise.clone()),
        };
        let mut gradients = loss.backward();
        let mut grads = GradientsParams::from_module(&mut gradients, &self.unet);
        // One read per step, once the backward pass is queued: the loss terms and the
        // gradient norm together. Reading the loss before the backward (to skip it on a NaN)
        // made the host wait for the forward pass before it could queue the backward, leaving
        // the device idle in between; the optimizer step below still comes after the check.
        let mut read = vec![values.inner()];
        read.extend(global_norm::<B>(&grads, &self.trainable).map(to_param_dtype));
        let read = Tensor::cat(read, 0)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| LoraError::InvalidInput(format!("reading the loss: {e:?}")))?;
        let denoise_value = read[0];
        let regularizer = if has_extra { read[1] } else { 0.0 };
        let grad_norm = read.get(1 + usize::from(has_extra)).copied().unwrap_or(0.0);
        if !(denoise_value.is_finite() && regularizer.is_finite() && grad_norm.is_finite()) {
            return Err(LoraError::NonFiniteLoss {
                denoise: denoise_value,
                regularizer,
                grad_norm,
            });
        }
        if let Some(max_norm) = self.config.max_grad_norm {
            clip_to_norm::<B>(&mut grads, &self.trainable, grad_norm, max_norm);
        }
        self.unet = self
            .optimizer
            .step(self.config.learning_rate, self.unet.clone(), grads);
        Ok((
            StepReport {
                loss: denoise_value,
                regularizer,
                grad_norm,
            },
            gradients,
        ))
    }

    /// AdamW's state of every factor, keyed `<module path>.down` / `<module path>.up`, so that
    /// a checkpoint can be restored into a trainer whose parameters have new ids. Factors that
    /// have not been stepped yet have no entry.
    pub fn optimizer_state(&self) -> BTreeMap<String, AdamMoments> {
        adam_moments::<B, _, 2>(&self.optimizer, &self.named_factor_ids())
    }

    /// Restores a state read by [`Self::optimizer_state`]; errors on a name that is not one of
    /// this trainer's factors or a moment whose shape differs from its factor's.
    pub fn load_optimizer_state(&mut self, state: &BTreeMap<String, AdamMoments>) -> Result<()> {
        let names = self.named_factor_ids();
        let shapes: BTreeMap<String, Vec<usize>> = attached_banks(&self.unet)
            .into_iter()
            .flat_map(|(site, bank)| {
                [
                    (format!("{}.down", site.path), bank.down.dims().to_vec()),
                    (format!("{}.up", site.path), bank.up.dims().to_vec()),
                ]
            })
            .collect();
        let optimizer = std::mem::replace(
            &mut self.optimizer,
            AdamWConfig::new().init::<B, UNet2DConditionModel<B>>(),
        );
        let device = self.device();
        let (optimizer, result) =
            load_adam_moments::<B, _, 2>(optimizer, &names, &shapes, state, &device);
        self.optimizer = optimizer;
        result
    }

    fn named_factor_ids(&self) -> Vec<(ParamId, String)> {
        attached_banks(&self.unet)
            .into_iter()
            .flat_map(|(site, bank)| {
                [
                    (bank.down.id, format!("{}.down", site.path)),
                    (bank.up.id, format!("{}.up", site.path)),
                ]
            })
            .collect()
    }

    fn device(&self) -> B::Device {
        attached_banks(&self.unet)
            .first()
            .map(|(_, bank)| bank.down.device())
            .unwrap_or_default()
    }

    /// The model with the adapter attached, as trained so far.
    pub fn unet(&self) -> &UNet2DConditionModel<B> {
        &self.unet
    }

    /// The adapter as trained so far (factors detached from the autodiff graph).
    pub fn adapter(&self) -> Result<LoraAdapter<B>> {
        LoraAdapter::extract(self.lora.clone(), &self.unet)
    }

    /// Ends training, giving the model back with the trained adapter attached.
    pub fn into_unet(self) -> UNet2DConditionModel<B> {
        self.unet
    }
}

/// The global L2 norm of the gradients of `ids`, as a one-value tensor left on the device
/// (read with the loss, see [`LoraTrainer::step_with`]); `None` when none has a gradient.
fn global_norm<B: AutodiffBackend>(
    grads: &GradientsParams,
    ids: &[ParamId],
) -> Option<Tensor<B::InnerBackend, 1>> {
    // One reduction per gradient and few kernels for the adds (see `totals`); concatenating
    // the sums copied each into place with a kernel of its own, 128 for SD 1.5's
    // cross-attention LoRA.
    let squares = ids
        .iter()
        .filter_map(|id| grads.get::<B::InnerBackend, 2>(*id))
        .map(|g| sum_all(g.powi_scalar(2)));
    add_all(squares).map(Tensor::sqrt)
}

/// Scales the gradients of `ids`, whose global L2 norm is `norm`, so that it is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, capped at
/// 1).
fn clip_to_norm<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    ids: &[ParamId],
    norm: f32,
    max_norm: f32,
) {
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        for id in ids {
            if let Some(g) = grads.remove::<B::InnerBackend, 2>(*id) {
                grads.register(*id, g * coefficient);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type AB = Autodiff<Flex>;

    fn grads(values: &[[f32; 2]; 2]) -> (GradientsParams, Vec<ParamId>) {
        let device = Default::default();
        let mut grads = GradientsParams::new();
        let ids: Vec<ParamId> = values
            .iter()
            .map(|v| {
                let id = ParamId::new();
                grads.register(id, Tensor::<Flex, 2>::from_floats([*v], &device));
                id
            })
            .collect();
        (grads, ids)
    }

    fn values(grads: &GradientsParams, ids: &[ParamId]) -> Vec<f32> {
        ids.iter()
            .flat_map(|id| {
                grads
                    .get::<Flex, 2>(*id)
                    .unwrap()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
            })
            .collect()
    }

    fn norm(grads: &GradientsParams, ids: &[ParamId]) -> f32 {
        global_norm::<AB>(grads, ids).unwrap().into_scalar()
    }

    /// The norm is global over all tensors (3-4-12 gives 13), and clipping scales every
    /// gradient by the same factor.
    #[test]
    fn clipping_uses_the_global_norm() {
        let (mut g, ids) = grads(&[[3.0, 4.0], [12.0, 0.0]]);
        let total = norm(&g, &ids);
        assert!((total - 13.0).abs() < 1e-5);
        clip_to_norm::<AB>(&mut g, &ids, total, 1.3);
        let clipped = values(&g, &ids);
        let expected = [0.3, 0.4, 1.2, 0.0];
        assert!(
            clipped
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-5),
            "{clipped:?}"
        );

        let (mut g, ids) = grads(&[[3.0, 4.0], [12.0, 0.0]]);
        let total = norm(&g, &ids);
        clip_to_norm::<AB>(&mut g, &ids, total, 20.0);
        assert_eq!(values(&g, &ids), [3.0, 4.0, 12.0, 0.0]);
        assert!(global_norm::<AB>(&g, &[]).is_none());
    }
}
