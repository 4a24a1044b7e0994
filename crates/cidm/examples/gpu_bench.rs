//! Issue 8's GPU benchmark, our side: times the five workloads of a CIDM generation and
//! training stack, and attention, GroupNorm, LayerNorm, GEGLU, the convolution and the linear
//! layers alone at the UNet's shapes (fused kernels against the plain paths, checked against
//! each other; the last two on the CPU only), on the backend the `cidm`
//! features select (`cuda`, `cuda,f16`, `wgpu`, or the default CPU backend), for SD 1.5's
//! UNet config with random weights (`--config sd15`) or a tiny one that runs in seconds on a
//! CPU (`--config tiny`).
//!
//! It prints one line per measurement (format in `gpu_bench/report.rs`) on stdout, logs on
//! stderr, and writes the records as JSON with `--json`. `gpu_bench profile` instead
//! compares a CubeCL kernel profile of one workload with the reference's torch.profiler
//! profile of it, part by part (`gpu_bench/profile.rs`). `tools/gpu_bench_reference.py` times
//! the same work with PyTorch and diffusers, and `tools/gpu_bench.sh` runs both and prints the
//! ratios; docs/performance.md explains how to build and run them on a GPU machine.
//!
//!     cargo run --release --example gpu_bench -p cidm -- --config tiny --reps 3
//!     cargo build --release --example gpu_bench -p cidm --features cuda,f16

#[path = "gpu_bench/attention.rs"]
mod attention;
#[path = "gpu_bench/check.rs"]
mod check;
#[path = "gpu_bench/conv.rs"]
mod conv;
#[path = "gpu_bench/error.rs"]
mod error;
#[path = "gpu_bench/failed_tasks.rs"]
mod failed_tasks;
#[path = "gpu_bench/fused_op.rs"]
mod fused_op;
#[path = "gpu_bench/geglu.rs"]
mod geglu;
#[path = "gpu_bench/group_norm.rs"]
mod group_norm;
#[path = "gpu_bench/layer_norm.rs"]
mod layer_norm;
#[path = "gpu_bench/linear.rs"]
mod linear;
#[path = "gpu_bench/memory.rs"]
mod memory;

#[path = "gpu_bench/profile.rs"]
mod profile;
#[path = "gpu_bench/report.rs"]
mod report;
#[path = "gpu_bench/setup.rs"]
mod setup;
#[path = "gpu_bench/timing.rs"]
mod timing;
#[path = "gpu_bench/workloads.rs"]
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use cidm::backend;
use error::{guarded, BenchError, Result};
use failed_tasks::FailedTasks;
use report::{Measured, Record};
use setup::{ConfigName, Setup};
use timing::Timing;
use workloads::{EwaModel, Reps};

/// The workloads, in the order they run (training first: its memory reading is a
/// high-water mark of the process, so nothing else may have run before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// One LoRA training step, batch 1, with peak memory.
    Train,
    /// One UNet step with guidance, batch 2.
    Step,
    /// A whole DPM-Solver++ sampling run with guidance, batch 1.
    Sample,
    /// EWA's per-prompt weights and gates over 10 tasks.
    EwaWeights,
    /// EWA's per-prompt work plus one gated guided UNet step.
    Ewa,
    /// One regional step with 2 regions (a UNet call of 4 samples).
    Regional,
    /// Attention alone at the UNet's shapes, fused kernel against plain path, forward and
    /// forward plus backward, each fused result checked against the plain one.
    Attention,
    /// GroupNorm plus SiLU alone at the ResNet blocks' shapes, the same way.
    GroupNorm,
    /// LayerNorm alone at the transformer blocks' shapes, the same way.
    LayerNorm,
    /// GEGLU alone at the feed-forward blocks' shapes, the same way.
    Geglu,
    /// The ResNet blocks' 3x3 convolution alone at each level, the same way (Flex only: the
    /// CPU convolution).
    Conv,
    /// The transformer blocks' linear layers alone at each transformer input, the same way
    /// (Flex only: the CPU linear layer).
    Linear,
}

/// Command line: the benchmark's options, or a subcommand.
#[derive(Debug, Parser)]
#[command(
    about = "Times CIDM's UNet step, LoRA step, sampling, EWA and regional step",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compares a CubeCL kernel profile of one workload with the reference's torch.profiler
    /// profile of the same workload, part by part (attention, conv, matmul, ...), and lists
    /// the largest kernels and operators of each (see `gpu_bench/profile.rs`).
    Profile {
        /// Workload name for the output lines, e.g. `unet_step_cfg_b2`.
        #[arg(long)]
        workload: String,
        /// Float type for the output lines (`f16` or `f32`).
        #[arg(long)]
        dtype: String,
        /// CubeCL's profiling log of our run (its last kernel table is read).
        #[arg(long)]
        cidm: PathBuf,
        /// The reference's profile JSON (`gpu_bench_reference.py --profile-dir`).
        #[arg(long)]
        torch: PathBuf,
        /// Largest kernels and operators listed per side.
        #[arg(long, default_value_t = 12)]
        top: usize,
    },
}

/// The benchmark's options.
#[derive(Debug, clap::Args)]
struct Args {
    /// UNet configuration (random weights).
    #[arg(long, value_enum, default_value = "sd15")]
    config: ConfigName,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed repetitions of each workload.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Steps of the sampling run.
    #[arg(long, default_value_t = 50)]
    sampling_steps: usize,
    /// Run only these workloads (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Also write the records to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the UNet config as diffusers `config.json` and exit (the reference builds the
    /// same network from it).
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let log_filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(log_filter),
        )
        .with(FailedTasks.with_filter(LevelFilter::WARN))
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Profile {
            workload,
            dtype,
            cidm,
            torch,
            top,
        }) => profile::read(cidm, torch)
            .map(|(cidm, torch)| {
                for line in profile::summary(workload, dtype, &cidm, &torch, *top) {
                    println!("{line}");
                }
                true
            })
            .map_err(|e| e.to_string()),
        // On the CPU the workloads run on the pool's threads, as the `cidm` command line
        // runs its commands (see `cidm_kernels::on_cpu_pool`).
        None => cidm::kernels::on_cpu_pool(|| run(&cli.args).map_err(|e| e.to_string())),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected workloads; `Ok(false)` when one of them failed (its line says why).
fn run(args: &Args) -> Result<bool> {
    let setup = Setup::new(args.config)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&setup.unet)?);
        return Ok(true);
    }
    if args.reps == 0 || args.sampling_steps == 0 {
        return Err(BenchError::InvalidArgument(
            "--reps and --sampling-steps must be at least 1".into(),
        ));
    }
    let reps = Reps {
        warmup: args.warmup,
        reps: args.reps,
    };
    let selected = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let dtype = if backend::HALF_PRECISION {
        "f16"
    } else {
        "f32"
    };
    tracing::info!(config = ?args.config, backend = backend::NAME, dtype, "gpu_bench");

    let mut records = Vec::new();
    let mut emit = |name: String, result: Result<Measured>| {
        let record = Record::new(name, dtype, backend::NAME, result);
        println!("{}", record.line());
        records.push(record);
    };
    let timed = |result: Result<Timing>| result.map(Measured::from);

    if selected(Workload::Train) {
        tracing::info!("LoRA training step");
        emit(
            "lora_train_step_b1".into(),
            guarded(|| workloads::lora_train_step(&setup, reps)).map(|(timing, memory)| Measured {
                memory,
                ..timing.into()
            }),
        );
    }
    let inference = [
        Workload::Step,
        Workload::Sample,
        Workload::EwaWeights,
        Workload::Ewa,
        Workload::Regional,
    ];
    // A shared setup that fails gets a record of its own, so that the reason is among the
    // lines (the error= lines a GPU run is read by), then stops the run.
    let setup_failed = |err: &BenchError| Err(BenchError::Setup(err.to_string()));
    if inference.into_iter().any(selected) {
        let unet = guarded(|| workloads::base_unet(&setup))
            .inspect_err(|err| emit("unet_setup".into(), setup_failed(err)))?;
        if selected(Workload::Step) {
            tracing::info!("UNet step");
            emit(
                "unet_step_cfg_b2".into(),
                timed(guarded(|| workloads::unet_step_cfg(&setup, &unet, reps))),
            );
        }
        if selected(Workload::Sample) {
            tracing::info!(steps = args.sampling_steps, "sampling");
            emit(
                format!("sample_dpmpp{}_cfg_b1", args.sampling_steps),
                timed(guarded(|| {
                    workloads::sampling(&setup, &unet, args.sampling_steps, reps)
                })),
            );
        }
        let ewa_workloads = [Workload::EwaWeights, Workload::Ewa, Workload::Regional];
        if ewa_workloads.into_iter().any(selected) {
            let model = guarded(|| EwaModel::new(&setup, &unet))
                .inspect_err(|err| emit("ewa_setup".into(), setup_failed(err)))?;
            drop(unet);
            if selected(Workload::EwaWeights) {
                tracing::info!("EWA weights");
                emit(
                    "ewa10_weights".into(),
                    timed(guarded(|| workloads::ewa_weights(&model, reps))),
                );
            }
            if selected(Workload::Ewa) {
                tracing::info!("EWA step");
                emit(
                    "ewa10_step_cfg_b2".into(),
                    timed(guarded(|| workloads::ewa_step_cfg(&setup, &model, reps))),
                );
            }
            if selected(Workload::Regional) {
                tracing::info!("regional step");
                emit(
                    "regional2_step_b4".into(),
                    timed(guarded(|| workloads::regional_step(&setup, &model, reps))),
                );
            }
        }
    }

    if selected(Workload::Attention) {
        for shape in attention::shapes(&setup)? {
            tracing::info!(?shape, "attention");
            let name = shape.name();
            let train = name.replacen("attn_", "attn_train_", 1);
            let tuned_calls = cidm::kernels::tuned_attention_calls();
            let tensor_core_calls = cidm::kernels::tensor_core_attention_calls();
            let forward = attention::forward(shape, reps).records(&name);
            // Which the autotune chose at this shape (f16 forward on a GPU with tensor cores).
            tracing::info!(
                record = %name,
                tuned = cidm::kernels::tuned_attention_calls() - tuned_calls,
                tensor_cores = cidm::kernels::tensor_core_attention_calls() - tensor_core_calls,
                "attention forward calls tuned, and of those on tensor cores"
            );
            let backward = attention::forward_backward(shape, reps).records(&train);
            for (name, measured) in forward.into_iter().chain(backward) {
                emit(name, measured);
            }
        }
    }
    if selected(Workload::GroupNorm) {
        for shape in group_norm::shapes(&setup) {
            tracing::info!(?shape, "group norm");
            let name = shape.name();
            let train = name.replacen("gn_", "gn_train_", 1);
            let forward = group_norm::forward(shape, reps).records(&name);
            let backward = group_norm::forward_backward(shape, reps).records(&train);
            for (name, measured) in forward.into_iter().chain(backward) {
                emit(name, measured);
            }
        }
    }

    if selected(Workload::LayerNorm) {
        for shape in layer_norm::shapes(&setup) {
            tracing::info!(?shape, "layer norm");
            let name = shape.name();
            let train = name.replacen("ln_", "ln_train_", 1);
            let forward = layer_norm::forward(shape, reps).records(&name);
            let backward = layer_norm::forward_backward(shape, reps).records(&train);
            for (name, measured) in forward.into_iter().chain(backward) {
                emit(name, measured);
            }
        }
    }

    if selected(Workload::Geglu) {
        for shape in layer_norm::shapes(&setup) {
            tracing::info!(?shape, "GEGLU");
            let name = geglu::name(shape);
            let train = name.replacen("geglu_", "geglu_train_", 1);
            let forward = geglu::forward(shape, reps).records(&name);
            let backward = geglu::forward_backward(shape, reps).records(&train);
            for (name, measured) in forward.into_iter().chain(backward) {
                emit(name, measured);
            }
        }
    }

    if selected(Workload::Conv) && backend::NAME == "flex" {
        for shape in conv::shapes(&setup) {
            tracing::info!(?shape, "convolution");
            let name = shape.name();
            let train = name.replacen("conv_", "conv_train_", 1);
            let forward = conv::forward(shape, reps).records(&name);
            let backward = conv::forward_backward(shape, reps).records(&train);
            for (name, measured) in forward.into_iter().chain(backward) {
                emit(name, measured);
            }
        }
    }

    if selected(Workload::Linear) && backend::NAME == "flex" {
        for shape in linear::shapes(&layer_norm::shapes(&setup)) {
            tracing::info!(?shape, "linear layer");
            let name = shape.name();
            let train = name.replacen("linear_", "linear_train_", 1);
            let forward = linear::forward(shape, reps).records(&name);
            let backward = linear::forward_backward(shape, reps).records(&train);
            for (name, measured) in forward.into_iter().chain(backward) {
                emit(name, measured);
            }
        }
    }

    // A fallback would look like a slow kernel: say which path the kernels' calls took.
    let calls = [
        ("attention", cidm::kernels::dispatch_counts()),
        ("group_norm", cidm::kernels::group_norm_dispatch_counts()),
        ("layer_norm", cidm::kernels::layer_norm_dispatch_counts()),
        ("geglu", cidm::kernels::geglu_dispatch_counts()),
        ("conv", cidm::kernels::conv_dispatch_counts()),
        ("linear", cidm::kernels::linear_dispatch_counts()),
    ];
    for (kernel, counts) in calls {
        tracing::info!(
            fused = counts.fused,
            unfused = counts.unfused,
            "{} calls by path",
            kernel.replace('_', "-")
        );
    }
    // Of the fused attention calls, those that went through the f16 autotune, and of those
    // the ones it gave to cubek's tensor-core attention (on a GPU with tensor cores; see
    // cidm-kernels' `cube/attention/tuned.rs`).
    let tuned_calls = cidm::kernels::tuned_attention_calls();
    let tensor_core_calls = cidm::kernels::tensor_core_attention_calls();
    tracing::info!(calls = tuned_calls, "attention calls tuned");
    tracing::info!(calls = tensor_core_calls, "attention calls on tensor cores");
    tracing::info!(
        values = cidm::kernels::attention_held_values(),
        "attention kernels' limit of held values per thread"
    );
    let all_ok = records.iter().all(|r| r.error.is_none());
    if let Some(path) = &args.json {
        let mut report = serde_json::json!({
            "config": format!("{:?}", args.config).to_lowercase(),
            "backend": backend::NAME,
            "dtype": dtype,
            "warmup": args.warmup,
            "records": records,
        });
        for (kernel, counts) in calls {
            report[format!("{kernel}_calls")] =
                serde_json::json!({ "fused": counts.fused, "unfused": counts.unfused });
        }
        report["attention_tuned_calls"] = serde_json::json!(tuned_calls);
        report["attention_held_values"] = serde_json::json!(cidm::kernels::attention_held_values());
        report["attention_tensor_core_calls"] = serde_json::json!(tensor_core_calls);
        std::fs::write(path, serde_json::to_string_pretty(&report)?).map_err(|source| {
            BenchError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    Ok(all_ok)
}
