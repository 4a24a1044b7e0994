//! `cidm store`: list, remove and export the tasks of a task store.

use std::path::PathBuf;

use cidm::backend::{self, Selected};
use cidm::continual::{BaseFingerprint, TaskStore};

/// List, remove or export the tasks of a task store.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List the tasks in training order.
    List {
        /// The task store.
        #[arg(long)]
        store: PathBuf,
    },
    /// Remove one task (its files and its share of CIDM's common subspace).
    Remove {
        /// The task store.
        #[arg(long)]
        store: PathBuf,
        /// The task's number, as `list` shows it.
        #[arg(long)]
        task: usize,
    },
    /// Export one task as a PEFT / diffusers LoRA file plus its token embeddings.
    Export {
        /// The task store.
        #[arg(long)]
        store: PathBuf,
        /// The task's number, as `list` shows it.
        #[arg(long)]
        task: usize,
        /// The folder to write to.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = backend::device();
    match args.action {
        Action::List { store } => {
            let store = TaskStore::open(&store)?;
            println!(
                "method {}, base model {}, {} task(s)",
                store.method(),
                store.manifest().base,
                store.tasks().len()
            );
            for entry in store.tasks() {
                let m = store.task_manifest(entry.index)?;
                println!(
                    "task {:>3}  {:<24} classes {:<16} rank {} steps {} final loss {}",
                    m.index,
                    m.words.join(" "),
                    m.classes.join(" "),
                    m.lora.rank,
                    m.steps,
                    m.final_loss
                        .map(|l| format!("{l:.4}"))
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        Action::Remove { store, task } => {
            let read = TaskStore::open(&store)?;
            let base: BaseFingerprint = read.manifest().base.clone();
            let method = read.method();
            drop(read);
            let mut writer = TaskStore::open_for_writing(&store, &base, method)?;
            writer.remove_task::<Selected>(task, &device)?;
            println!("removed task {task} from {}", store.display());
        }
        Action::Export { store, task, out } => {
            let store = TaskStore::open(&store)?;
            for path in store.export_task::<Selected>(task, &out, &device)? {
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
