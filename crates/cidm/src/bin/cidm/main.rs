//! The `cidm` command-line tool.

mod benchmark;
mod demo;
mod eval;
mod generate;
mod inspect;
mod progress;
mod store;
mod train_task;

use std::process::ExitCode;

use cidm::backend_panic::catch_backend_panic;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cidm",
    version,
    about = "Concept-incremental text-to-image diffusion on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Demo(demo::Args),
    Benchmark(benchmark::Args),
    Generate(generate::Args),
    TrainTask(train_task::Args),
    Store(store::Args),
    Eval(eval::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Benchmarks show one progress bar; per-task log lines would scroll it away.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Benchmark(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| if quiet { "warn" } else { "info" }.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // burn panics where a device runs out of memory or refuses a kernel: reported as an
    // error like the others (after the panic messages), not as a crash.
    // On the CPU the work runs on the pool's threads, not beside them (see `on_cpu_pool`);
    // the error comes back as its message (errors may hold sources that cannot cross
    // threads).
    let result = cidm::kernels::on_cpu_pool(|| {
        let result = catch_backend_panic(|| match cli.command {
            Command::Inspect(args) => inspect::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Benchmark(args) => benchmark::run(args),
            Command::Generate(args) => generate::run(args),
            Command::TrainTask(args) => train_task::run(args),
            Command::Store(args) => store::run(args),
            Command::Eval(args) => eval::run(args),
        });
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(panic) => Err(panic.to_string()),
        }
    });
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
