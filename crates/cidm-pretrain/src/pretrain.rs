//! The whole pretraining run: render the base world, train the autoencoder, encode the
//! dataset, train the text encoder and UNet jointly, write the diffusers directory and a
//! record of the run (`pretrain.json`).

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use cidm_diffusion::io::write_atomic;
use cidm_diffusion::CLIPTokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::config::PretrainConfig;
use crate::data::BaseData;
use crate::denoiser_training::{train_denoiser, LatentSet};
use crate::error::Result;
use crate::model_dir::write_model_dir;
use crate::vae_training::train_vae;

/// File name of the run record written beside the model.
pub const RECORD_FILE: &str = "pretrain.json";

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainRecord {
    /// The config the run used.
    pub config: PretrainConfig,
    /// The backend it ran on.
    pub backend: String,
    /// The autoencoder's latent scaling factor.
    pub scaling_factor: f64,
    /// Mean L1 reconstruction error at the end of the autoencoder stage.
    pub vae_l1: f32,
    /// Share of autoencoder reconstructions the detector reads right.
    pub vae_reconstruction_rate: f32,
    /// Mean posterior standard deviation of the autoencoder (unscaled latents).
    pub vae_posterior_std: f32,
    /// Mean denoising loss at the end of the denoiser stage.
    pub denoiser_loss: f32,
    /// Seconds per stage: rendering, autoencoder, encoding, denoiser.
    pub seconds: [f64; 4],
}

fn bar(message: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{bar:40}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(0).with_style(style).with_prefix(message)
}

/// Runs the whole recipe on backend `AB` and writes the model to `out` (with `tokenizer` the
/// folder of CLIP tokenizer files to ship); returns the run record, also written as
/// `out/pretrain.json`.
pub fn pretrain<AB: AutodiffBackend>(
    config: &PretrainConfig,
    tokenizer: &Path,
    out: &Path,
    backend: &str,
    device: &AB::Device,
) -> Result<PretrainRecord> {
    config.validate()?;
    AB::seed(device, config.seed);
    let clip_tokenizer = CLIPTokenizer::from_folder(tokenizer)?;

    let mut seconds = [0.0; 4];
    let clock = Instant::now();
    let progress = bar("render");
    let data = BaseData::render(config, &clip_tokenizer, &progress)?;
    progress.finish();
    seconds[0] = clock.elapsed().as_secs_f64();
    tracing::info!(
        images = data.len(),
        seconds = seconds[0],
        "rendered the base world"
    );

    let clock = Instant::now();
    let progress = bar("vae");
    let vae = train_vae::<AB>(config, &data, device, &progress)?;
    progress.finish();
    seconds[1] = clock.elapsed().as_secs_f64();
    tracing::info!(
        l1 = vae.final_l1,
        reconstruction_rate = vae.reconstruction_rate,
        posterior_std = vae.posterior_std,
        scaling_factor = vae.scaling_factor,
        seconds = seconds[1],
        "trained the autoencoder"
    );

    let clock = Instant::now();
    let progress = bar("encode");
    let latents = LatentSet::encode(&vae.vae, &data, device, &progress)?;
    progress.finish();
    seconds[2] = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let progress = bar("denoiser");
    let trained = train_denoiser::<AB>(
        config,
        &data,
        &latents,
        vae.scaling_factor,
        device,
        &progress,
    )?;
    progress.finish();
    seconds[3] = clock.elapsed().as_secs_f64();
    tracing::info!(
        loss = trained.final_loss,
        seconds = seconds[3],
        "trained the text encoder and UNet"
    );

    write_model_dir(
        out,
        &trained.denoiser.text_encoder,
        &trained.denoiser.unet,
        &vae.vae,
        vae.scaling_factor,
        tokenizer,
    )?;
    let record = PretrainRecord {
        config: config.clone(),
        backend: backend.to_string(),
        scaling_factor: vae.scaling_factor,
        vae_l1: vae.final_l1,
        vae_reconstruction_rate: vae.reconstruction_rate,
        vae_posterior_std: vae.posterior_std,
        denoiser_loss: trained.final_loss,
        seconds,
    };
    let mut text = serde_json::to_string_pretty(&record)?;
    text.push('\n');
    write_atomic(&out.join(RECORD_FILE), text.as_bytes())?;
    Ok(record)
}
