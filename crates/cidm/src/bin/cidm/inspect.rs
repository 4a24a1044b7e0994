//! `cidm inspect`: load a model directory's UNet, check it, describe it, time steps.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use cidm::backend::{self, Selected};
use cidm::diffusion::{Conditioning, ModelDir, UNet2DConditionModel};

/// Load the UNet of a diffusers model directory, check it against its config, describe it
/// and time denoising steps on random latents.
#[derive(clap::Args)]
pub struct Args {
    /// A diffusers model directory (with model_index.json and unet/).
    #[arg(long)]
    model: PathBuf,
    /// Weights variant to load, e.g. `fp16` for diffusion_pytorch_model.fp16.safetensors.
    #[arg(long)]
    variant: Option<String>,
    /// UNet steps to time (batch 2, as classifier-free guidance runs); 0 only loads.
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// Latent height and width for the timed steps (default: the config's sample_size).
    #[arg(long)]
    latent_size: Option<usize>,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = backend::device();
    let start = Instant::now();
    let dir = ModelDir::open(&args.model)?;
    let unet =
        UNet2DConditionModel::<Selected>::from_model_dir(&dir, args.variant.as_deref(), &device)?;
    let config = unet.config();
    println!("model      {}", args.model.display());
    println!(
        "backend    {}{}",
        backend::NAME,
        if backend::HALF_PRECISION {
            " (f16)"
        } else {
            ""
        }
    );
    println!("loaded in  {:.2} s", start.elapsed().as_secs_f64());
    println!("parameters {:.2} M", unet.num_params() as f64 / 1e6);
    println!(
        "blocks     {:?} channels, heads {:?}",
        config.block_out_channels, config.attention_head_dim
    );
    println!(
        "cross-attention layers {} (text width {})",
        unet.cross_attention_layers(),
        config.cross_attention_dim
    );
    let size = args.latent_size.or(config.sample_size).unwrap_or(64);
    let sample = Tensor::random(
        [2, config.in_channels, size, size],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let context = Tensor::random(
        [2, 77, config.cross_attention_dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let cond = Conditioning::shared(context);
    let timesteps = Tensor::from_floats([999.0, 999.0], &device);
    for step in 0..args.steps {
        let start = Instant::now();
        let out = unet.forward(sample.clone(), timesteps.clone(), &cond)?;
        let mean: f32 = out.abs().mean().into_scalar().elem();
        println!(
            "step {step}    {:.1} ms on {size}x{size} latents, batch 2 (mean |eps| {mean:.4})",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
