//! `cidm generate`: text to image with a diffusers Stable Diffusion directory, optionally with
//! every task of a task store (elastic weight aggregation) and regions.

use std::path::PathBuf;
use std::time::Instant;

use cidm::backend::{self, Selected};
use cidm::concept_model::{Aggregation, ConceptModel};
use cidm::continual::TaskStore;
use cidm::diffusion::pipeline::{read_latents, write_latents};
use cidm::diffusion::vae::Rgb8Image;
use cidm::diffusion::{GenerationRequest, Sampler, StableDiffusion};
use cidm::ewa::EwaVariant;
use cidm::images::{numbered, save_png};
use cidm::regions::{parse_regions, RegionalConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// Generate images from a prompt with a diffusers Stable Diffusion directory.
#[derive(clap::Args)]
pub struct Args {
    /// A diffusers model directory (model_index.json, tokenizer/, text_encoder/, unet/, vae/,
    /// scheduler/).
    #[arg(long)]
    model: PathBuf,
    /// A task store (`cidm train-task --store`): every stored task's LoRA and concept words
    /// are used, combined as the store's method calls for.
    #[arg(long)]
    store: Option<PathBuf>,
    /// What to draw; with a store it may name concept words, e.g. "a <dog1> dog".
    #[arg(long)]
    prompt: String,
    /// A region, `PROMPT@x0,y0,x1,y1` with a box in [0, 1] (x right, y down), e.g.
    /// `"a <dog1> dog@0,0,0.5,1"`; repeat for several. Needs `--store`.
    #[arg(long = "region")]
    regions: Vec<String>,
    /// Weight of the global estimate inside the boxes (the paper's alpha).
    #[arg(long, default_value_t = 0.1)]
    region_alpha: f64,
    /// How stored tasks are weighted: `code` (released code's EWA), `paper` (eq. 3 literally)
    /// or `off` (equal weights, LoRA-M). Default: `code`, or `off` for a `lora-m` store; a
    /// `finetune` store uses its last LoRA and takes none.
    #[arg(long)]
    ewa: Option<EwaVariant>,
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
    /// Text-encoder layers to skip from the end (diffusers' clip_skip). Default 0, or what the
    /// store's tokens were trained with.
    #[arg(long)]
    clip_skip: Option<usize>,
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
    if args.store.is_none() && (!args.regions.is_empty() || args.ewa.is_some()) {
        return Err("--region and --ewa need --store (a task store to take concepts from)".into());
    }
    let device = backend::device();
    let mut request = GenerationRequest {
        prompts: vec![args.prompt.clone(); args.num_images],
        negative_prompts: vec![args.negative_prompt.clone(); args.num_images],
        width: args.width,
        height: args.height,
        steps: args.steps,
        guidance_scale: args.guidance,
        seed: args.seed,
        sampler: args.scheduler,
        clip_skip: args.clip_skip.unwrap_or(0),
    };
    let start = Instant::now();
    let model = match &args.store {
        Some(root) => {
            let store = TaskStore::open(root)?;
            let aggregation = Aggregation::for_method(store.method(), args.ewa)?;
            let model = ConceptModel::<Selected>::from_store(
                &args.model,
                args.variant.as_deref(),
                &store,
                aggregation,
                &device,
            )?;
            request.clip_skip = args.clip_skip.unwrap_or(model.clip_skip);
            tracing::info!(
                tasks = store.tasks().len(),
                method = %store.method(),
                aggregation = ?aggregation,
                "task store installed"
            );
            Model::Concepts(Box::new(model))
        }
        None => Model::Base(Box::new(StableDiffusion::<Selected>::from_model_dir(
            &args.model,
            args.variant.as_deref(),
            &device,
        )?)),
    };
    let sd = match &model {
        Model::Base(sd) => sd.as_ref(),
        Model::Concepts(m) => &m.sd,
    };
    let [h, w] = request.validate(sd.vae_scale_factor())?;
    let regions = parse_regions(&args.regions, RegionalConfig::default().max_regions)?;
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
    let total = args.steps
        * if regions.is_empty() {
            1
        } else {
            args.num_images
        };
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}",
        )
        .expect("the progress template is valid")
        .progress_chars("=> "),
    );
    bar.set_message("denoising");
    let mut on_step = |done: usize, _: usize| bar.set_position(done as u64);
    let latents = match &model {
        Model::Base(sd) => sd.generate_latents(&request, initial, &mut on_step)?,
        Model::Concepts(m) if regions.is_empty() => {
            let (latents, weights) = m.generate_latents(&request, initial, &mut on_step)?;
            if let Some(w) = weights.first() {
                tracing::info!(per_task = ?w.mean_per_task(), "EWA weights, mean over layers");
            }
            latents
        }
        Model::Concepts(m) => {
            let config = RegionalConfig {
                alpha: args.region_alpha,
                ..RegionalConfig::default()
            };
            m.generate_regional_latents(&request, &regions, &config, initial, &mut on_step)?
        }
    };
    bar.finish();
    if let Some(path) = &args.output_latents {
        write_latents(path, latents.clone())?;
        println!("wrote {}", path.display());
    }
    let images: Vec<Rgb8Image> = sd.decode(latents)?;
    for (i, image) in images.iter().enumerate() {
        let path = numbered(&args.out, i, images.len());
        save_png(image, &path)?;
        println!("wrote {}", path.display());
    }
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// The base model alone, or with a task store installed.
enum Model {
    Base(Box<StableDiffusion<Selected>>),
    Concepts(Box<ConceptModel<Selected>>),
}
