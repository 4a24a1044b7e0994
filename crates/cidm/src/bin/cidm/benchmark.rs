//! `cidm benchmark`: the paper's protocol on a task list (TOML), e.g. the CIFC benchmark on a
//! user's Stable Diffusion.

use std::path::PathBuf;

use cidm::backend::{self, Selected};
use cidm::benchmark::{
    run_benchmark, write_report, BenchmarkPlan, ClipConceptEvaluator, ConceptEvaluator,
};

use crate::progress::{benchmark_bar, show};

/// Train every task of a plan in order with each method, generate every concept after the
/// last task (and after each task with `forgetting = true`), and write the report.
#[derive(clap::Args)]
pub struct Args {
    /// The plan: model, methods, training and sampling settings, tasks (TOML).
    plan: PathBuf,
    /// The report folder.
    #[arg(long)]
    out: PathBuf,
    /// A transformers `CLIPModel` directory (e.g. openai/clip-vit-base-patch32, the paper's)
    /// to score the generations with; without it, images are generated but not scored.
    #[arg(long)]
    clip: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let plan = BenchmarkPlan::from_toml_file(&args.plan)?;
    let clip = match &args.clip {
        Some(dir) => Some(ClipConceptEvaluator::<Selected>::from_dir(
            dir,
            &backend::device(),
        )?),
        None => None,
    };
    let evaluator = clip.as_ref().map(|c| c as &dyn ConceptEvaluator);
    let bar = benchmark_bar();
    let results = run_benchmark(&plan, &args.out, evaluator, &mut |e| show(&bar, e))?;
    bar.finish_and_clear();
    for path in write_report(&plan, &results, &args.out)? {
        println!("wrote {}", path.display());
    }
    println!("done in {:.0} s", results.seconds);
    Ok(())
}
