//! Stage two: the CLIP text encoder and the UNet, trained jointly on the frozen autoencoder's
//! latents with the denoising objective `E ||eps - unet(z_t | text(c), t)||^2` (epsilon
//! prediction, SD 1.5's scaled-linear DDPM schedule), with caption dropout so that
//! classifier-free guidance has an unconditional model.

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::schedulers::{DdpmNoiser, SchedulerConfig};
use cidm_diffusion::{AutoencoderKL, CLIPTextModel, Conditioning, UNet2DConditionModel};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::PretrainConfig;
use crate::data::{draw_batch, BaseData};
use crate::error::{PretrainError, Result};
use crate::loss_window::LossWindow;
use crate::model_dir::scheduler_config;
use cidm_diffusion::pipeline::gaussian;

/// The two networks trained together, as one module so one optimizer steps both.
#[derive(Module, Debug)]
pub struct Denoiser<B: Backend> {
    /// The text encoder.
    pub text_encoder: CLIPTextModel<B>,
    /// The noise predictor.
    pub unet: UNet2DConditionModel<B>,
}

/// The posterior of every training image, computed once with the frozen autoencoder: each
/// step samples fresh latents from it, as SD training encodes every batch anew.
#[derive(Debug, Clone)]
pub struct LatentSet {
    /// Latent shape of one image `[channels, h, w]`.
    pub shape: [usize; 3],
    /// Posterior means, row-major per image.
    pub mean: Vec<f32>,
    /// Posterior standard deviations, row-major per image.
    pub std: Vec<f32>,
}

impl LatentSet {
    /// Encodes all of `data` with `vae`, `chunk` images at a time, ticking `progress` once
    /// per image.
    pub fn encode<B: Backend>(
        vae: &AutoencoderKL<B>,
        data: &BaseData,
        device: &B::Device,
        progress: &ProgressBar,
    ) -> Result<Self> {
        const CHUNK: usize = 256;
        let read = |t: Tensor<B, 4>| {
            t.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| PretrainError::InvalidConfig(format!("latents: {e:?}")))
        };
        let (mut mean, mut std, mut shape) = (Vec::new(), Vec::new(), [0; 3]);
        progress.set_length(data.len() as u64);
        for start in (0..data.len()).step_by(CHUNK) {
            let indices: Vec<usize> = (start..(start + CHUNK).min(data.len())).collect();
            let images = data.images::<B>(&indices, device);
            let posterior = vae.encode(images)?;
            let [_, c, h, w] = posterior.mean().dims();
            shape = [c, h, w];
            mean.extend(read(posterior.mean().clone())?);
            std.extend(read(posterior.std())?);
            progress.inc(indices.len() as u64);
        }
        Ok(Self { shape, mean, std })
    }

    /// Scaled latents of images `indices` sampled from their posteriors with `rng`.
    fn sample(&self, indices: &[usize], scaling: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let n: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            for k in i * n..(i + 1) * n {
                let eps: f32 = rng.sample(rand_distr::StandardNormal);
                out.push((self.mean[k] + self.std[k] * eps) * scaling as f32);
            }
        }
        out
    }
}

/// What the denoiser stage produced.
#[derive(Debug)]
pub struct TrainedDenoiser<B: Backend> {
    /// The trained text encoder and UNet.
    pub denoiser: Denoiser<B>,
    /// Mean denoising loss over the last 100 steps.
    pub final_loss: f32,
}

/// Trains a fresh text encoder and UNet of `config` on `latents` (scaled by `scaling`) and
/// the captions of `data`, ticking `progress` once per step.
pub fn train_denoiser<AB: AutodiffBackend>(
    config: &PretrainConfig,
    data: &BaseData,
    latents: &LatentSet,
    scaling: f64,
    device: &AB::Device,
    progress: &ProgressBar,
) -> Result<TrainedDenoiser<AB::InnerBackend>> {
    let stage = &config.denoiser;
    let mut model = Denoiser::<AB> {
        text_encoder: CLIPTextModel::random(&config.clip_config(), device)?,
        unet: UNet2DConditionModel::random(&config.unet_config(), device)?,
    };
    let schedule: SchedulerConfig = serde_json::from_value(scheduler_config())?;
    let noiser = DdpmNoiser::new(&schedule)?;
    let train_steps = noiser.schedule().num_train_timesteps();
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(stage.max_grad_norm)))
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x756e_6574);
    let [c, h, w] = latents.shape;
    let mut recent = LossWindow::new(100);
    progress.set_length(stage.steps as u64);
    for step in 0..stage.steps {
        let indices = draw_batch(&mut rng, data.len(), stage.batch);
        let clean = Tensor::<AB, 4>::from_data(
            TensorData::new(
                latents.sample(&indices, scaling, &mut rng),
                [stage.batch, c, h, w],
            ),
            device,
        );
        let noise = gaussian::<AB, 4>(&mut rng, [stage.batch, c, h, w], device);
        let timesteps: Vec<usize> = (0..stage.batch)
            .map(|_| rng.random_range(0..train_steps))
            .collect();
        let ids: Vec<&[u32]> = indices
            .iter()
            .map(|&i| {
                if rng.random::<f32>() < stage.caption_dropout {
                    data.empty_ids.as_slice()
                } else {
                    data.ids[i].as_slice()
                }
            })
            .collect();
        let noisy = noiser.add_noise(clean, noise.clone(), &timesteps)?;
        let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        let t = Tensor::<AB, 1>::from_floats(t.as_slice(), device);
        let text = model.text_encoder.forward(&ids, 0)?;
        let prediction = model.unet.forward(noisy, t, &Conditioning::shared(text))?;
        let loss = (prediction - noise).powi_scalar(2).mean();
        let value: f32 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(PretrainError::NonFiniteLoss {
                stage: "denoiser",
                step: step + 1,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(stage.learning_rate_at(step), model, grads);
        recent.push(value);
        if (step + 1) % 25 == 0 {
            let mean = recent.mean();
            progress.set_message(format!("loss {mean:.4}"));
            if (step + 1) % 250 == 0 {
                tracing::info!(step = step + 1, loss = mean, "denoiser");
            }
        }
        progress.inc(1);
    }
    Ok(TrainedDenoiser {
        denoiser: model.valid(),
        final_loss: recent.mean(),
    })
}
