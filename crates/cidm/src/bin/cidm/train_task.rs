//! `cidm train-task`: learn one concept task and add it to a task store.

use std::path::PathBuf;

use cidm::backend::{self, Training};
use cidm::continual::{
    train_task, Crop, Method, TaskTrainingConfig, TaskWords, TrainEvent, TrainTaskRequest,
    DEFAULT_PROMPT,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Train a concept task on a base model and add its learner to a task store.
///
/// The store is created if missing and stays locked while training. With `--checkpoint-every`
/// the run can be interrupted and continued with `--resume`.
#[derive(clap::Args)]
pub struct Args {
    /// The base model: a diffusers directory.
    #[arg(long)]
    model: PathBuf,
    /// The task store (a directory; created if missing).
    #[arg(long)]
    store: PathBuf,
    /// The training images (png/jpg), each with an optional `.txt` caption beside it.
    #[arg(long)]
    images: PathBuf,
    /// A concept word, e.g. `<dog1>` (repeat for several words in one task).
    #[arg(long = "concept", required = true)]
    concepts: Vec<String>,
    /// The class word of each concept word, e.g. `dog` (one per --concept).
    #[arg(long = "class", required = true)]
    classes: Vec<String>,
    /// Caption of images without a `.txt`; `{concept}` and `{class}` are replaced.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    /// cidm, r1-only, r2-only, finetune or lora-m.
    #[arg(long, default_value = "cidm")]
    method: Method,
    /// A JSON training config (every field optional); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Optimizer steps [default 800].
    #[arg(long)]
    steps: Option<usize>,
    /// LoRA learning rate [default 1e-4].
    #[arg(long)]
    lr: Option<f64>,
    /// Concept-token learning rate [default 1e-3].
    #[arg(long)]
    token_lr: Option<f64>,
    /// LoRA rank [default 4]; alpha follows the rank (scale 1).
    #[arg(long)]
    rank: Option<usize>,
    /// Images per step [default 2].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of every random draw [default 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Training size in pixels [default: the model's].
    #[arg(long)]
    resolution: Option<usize>,
    /// Use random crops instead of centre crops.
    #[arg(long)]
    random_crop: bool,
    /// Checkpoint every N steps, 0 for never [default 100].
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Continue an interrupted training of the same task from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Weights variant of the base model, e.g. `fp16`.
    #[arg(long)]
    variant: Option<String>,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config: TaskTrainingConfig = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => TaskTrainingConfig::default(),
    };
    config.method = args.method;
    if let Some(v) = args.steps {
        config.steps = v;
    }
    if let Some(v) = args.lr {
        config.optimizer.learning_rate = v;
    }
    if let Some(v) = args.token_lr {
        config.token_learning_rate = v;
    }
    if let Some(rank) = args.rank {
        config.lora.rank = rank;
        config.lora.alpha = rank as f64;
    }
    if let Some(v) = args.batch_size {
        config.batch_size = v;
    }
    if let Some(v) = args.seed {
        config.seed = v;
    }
    if args.resolution.is_some() {
        config.resolution = args.resolution;
    }
    if args.random_crop {
        config.crop = Crop::Random;
    }
    if let Some(v) = args.checkpoint_every {
        config.checkpoint_every = v;
    }
    let request = TrainTaskRequest {
        model: args.model,
        variant: args.variant,
        store: args.store,
        images: args.images,
        prompt: Some(args.prompt),
        words: TaskWords {
            words: args.concepts,
            classes: args.classes,
        },
        config,
        resume: args.resume,
    };
    tracing::info!(backend = backend::NAME, method = %request.config.method, "training");
    let bar = ProgressBar::hidden();
    let manifest = train_task::<Training>(&request, &backend::device(), |event| match event {
        TrainEvent::Started { task, done, total } => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}",
                )
                .expect("the progress template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("task {task}"));
        }
        TrainEvent::Step(report) => {
            bar.set_position(report.step as u64);
            bar.set_message(format!(
                "loss {:.4} reg {:.4}",
                report.loss, report.regularizer
            ));
        }
    })?;
    bar.finish();
    println!(
        "task {} ({}) added to {}; final loss {}",
        manifest.index,
        manifest.words.join(", "),
        request.store.display(),
        manifest
            .final_loss
            .map(|l| format!("{l:.4}"))
            .unwrap_or_else(|| "-".into())
    );
    Ok(())
}
