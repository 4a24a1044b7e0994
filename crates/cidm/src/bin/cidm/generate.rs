//! `cidm generate`: text to image with a diffusers Stable Diffusion directory.

use std::path::PathBuf;
use std::time::Instant;

use cidm::backend::{self, Selected};
use cidm::diffusion::pipeline::{read_latents, write_latents};
use cidm::diffusion::{GenerationRequest, Sampler, StableDiffusion};
use cidm::images::{numbered, save_png};
use indicatif::{ProgressBar, ProgressStyle};

/// Generate images from a prompt with a diffusers Stable Diffusion directory.
#[derive(clap::Args)]
pub struct Args {
    /// A diffusers model directory (model_index.json, tokenizer/, text_encoder/, unet/, vae/,
    /// scheduler/).
    #[arg(long)]
    model: PathBuf,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// What to steer away from (classifier-free guidance's unconditional prompt).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Images to generate from the prompt, in one batch.
    #[arg(long, default_value_t = 1)]
    num_images: usize,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Guidance scale (1 turns guidance off).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampler: `ddim` or `dpm++` (DPM-Solver++ 2M).
    #[arg(long, default_value = "dpm++", value_parser = parse_sampler)]
    scheduler: Sampler,
    /// Image width in pixels (a multiple of 8 for Stable Diffusion).
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Image height in pixels.
    #[arg(long, default_value_t = 512)]
    height: usize,
    /// Text-encoder layers to skip from the end (diffusers' clip_skip).
    #[arg(long, default_value_t = 0)]
    clip_skip: usize,
    /// Weights variant, e.g. `fp16`.
    #[arg(long)]
    variant: Option<String>,
    /// Initial latents from a safetensors file (tensor `latents`) instead of seeded noise.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Also write the final latents to this safetensors file.
    #[arg(long)]
    output_latents: Option<PathBuf>,
    /// The PNG to write; with several images, `NAME-0.png`, `NAME-1.png`, ...
    #[arg(long)]
    out: PathBuf,
}

fn parse_sampler(name: &str) -> Result<Sampler, String> {
    match name {
        "ddim" => Ok(Sampler::Ddim),
        "dpm++" | "dpm" => Ok(Sampler::DpmPlusPlus),
        other => Err(format!("unknown scheduler `{other}`: use ddim or dpm++")),
    }
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = backend::device();
    let request = GenerationRequest {
        prompts: vec![args.prompt.clone(); args.num_images],
        negative_prompts: vec![args.negative_prompt.clone(); args.num_images],
        width: args.width,
        height: args.height,
        steps: args.steps,
        guidance_scale: args.guidance,
        seed: args.seed,
        sampler: args.scheduler,
        clip_skip: args.clip_skip,
    };
    let start = Instant::now();
    let sd =
        StableDiffusion::<Selected>::from_model_dir(&args.model, args.variant.as_deref(), &device)?;
    let [h, w] = request.validate(sd.vae_scale_factor())?;
    tracing::info!(
        backend = backend::NAME,
        seconds = start.elapsed().as_secs_f64(),
        "model loaded"
    );
    let initial = match &args.latents {
        Some(path) => {
            let shape = [args.num_images, sd.unet.config().in_channels, h, w];
            Some(read_latents::<Selected>(path, shape, &device)?)
        }
        None => None,
    };
    let bar = ProgressBar::new(args.steps as u64).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}",
        )
        .expect("the progress template is valid")
        .progress_chars("=> "),
    );
    bar.set_message("denoising");
    let latents = sd.generate_latents(&request, initial, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish();
    if let Some(path) = &args.output_latents {
        write_latents(path, latents.clone())?;
        println!("wrote {}", path.display());
    }
    let images = sd.decode(latents)?;
    for (i, image) in images.iter().enumerate() {
        let path = numbered(&args.out, i, images.len());
        save_png(image, &path)?;
        println!("wrote {}", path.display());
    }
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
