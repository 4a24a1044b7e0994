//! `cidm demo`: the whole method end to end on the embedded default (the shapes world and the
//! tiny base model in `assets/`), with a report folder to look at.

use std::path::PathBuf;

use cidm::benchmark::{run_benchmark, shapes_demo, write_report, DemoConfig};

use crate::progress::{benchmark_bar, show};

/// Learn six concepts in sequence with CIDM and the baselines on the built-in tiny model,
/// then generate, score and write a report (report.md, image grids, a forgetting plot).
#[derive(clap::Args)]
pub struct Args {
    /// The report folder (stores, images and the report go here).
    #[arg(long, default_value = "demo-report")]
    out: PathBuf,
    /// The base model (default: the tiny model pretrained on the shapes world).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training steps per task.
    #[arg(long)]
    steps: Option<usize>,
    /// Denoising steps of every generation.
    #[arg(long)]
    sampling_steps: Option<usize>,
    /// Images per evaluation prompt.
    #[arg(long)]
    images_per_prompt: Option<usize>,
    /// Skip the evaluation after every task (no forgetting plot; faster).
    #[arg(long)]
    no_forgetting: bool,
    /// All settings as JSON (a `DemoConfig`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &args.config {
        Some(path) => serde_json::from_str(&cidm::diffusion::loading::read_text(path)?)
            .map_err(|e| format!("{}: not a demo config: {e}", path.display()))?,
        None => DemoConfig::default(),
    };
    if let Some(model) = args.model {
        config.model = model;
    }
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    if let Some(steps) = args.sampling_steps {
        config.sampling_steps = steps;
    }
    if let Some(images) = args.images_per_prompt {
        config.images_per_prompt = images;
    }
    if args.no_forgetting {
        config.forgetting = false;
    }
    if !config.model.join("model_index.json").is_file() {
        return Err(format!(
            "{} is not a diffusers model directory (no model_index.json); run from the \
             repository root or pass --model",
            config.model.display()
        )
        .into());
    }
    let bar = benchmark_bar();
    bar.set_message("writing the concept images");
    let (plan, evaluator) = shapes_demo(&config, &args.out.join("data"), &bar)?;
    let results = run_benchmark(&plan, &args.out, Some(&evaluator), &mut |e| show(&bar, e))?;
    bar.finish_and_clear();
    for path in write_report(&plan, &results, &args.out)? {
        println!("wrote {}", path.display());
    }
    println!("done in {:.0} s", results.seconds);
    Ok(())
}
