//! Writes this crate's kernels as CUDA C++ (as CubeCL's CUDA runtime would compile them) into
//! a folder, one file per kernel, variant and dtype, named after them:
//! `<kernel>[.<setting>-<value>...].<dtype>.cu`, e.g.
//! `flash_forward.head_dim-40.units_per_row-1.tile_rows-64.f16.cu`, and a manifest,
//! `kernels.tsv`. Needs no GPU, only a wgpu adapter (lavapipe suffices);
//! `tools/kernel_registers.sh` runs it and reads the registers and spills of each file off
//! NVIDIA's compiler.
//!
//! `cargo run -p cidm-kernels --features cuda-source --example cuda_sources -- --out DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::DType;
use cidm_kernels::cuda_source::{attention_cuda_sources, fused_op_cuda_sources, KernelSource};
use clap::{Parser, ValueEnum};

#[derive(Parser)]
struct Args {
    /// Folder to write the `.cu` files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Which kernels: the attention's (at each of `--head-dims`), and the fused ops' (GroupNorm,
    /// LayerNorm, GEGLU, split sums; every variant).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["attention", "fused-ops"])]
    kernels: Vec<Family>,
    /// Head widths of the attention: SD 1.5's 40, 80 and 160, and 64 (SD 2.x, SDXL).
    #[arg(long, value_delimiter = ',', default_values_t = [40, 64, 80, 160])]
    head_dims: Vec<usize>,
    /// Dtypes of the kernels' tensors: f16, bf16 or f32.
    #[arg(long, value_delimiter = ',', default_values = ["f16", "f32"])]
    dtypes: Vec<String>,
}

/// A family of kernels.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Family {
    Attention,
    FusedOps,
}

fn dtype(name: &str) -> Result<DType, String> {
    match name {
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        "f32" => Ok(DType::F32),
        other => Err(format!("unknown dtype {other:?} (f16, bf16 or f32)")),
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the sources and `kernels.tsv`: one line per file with its kernel, dtype, settings
/// (`name=value`, space-separated), entry point, units per cube and shared memory in bytes.
fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out)?;
    let mut manifest =
        String::from("file\tkernel\tdtype\tsettings\tentry_point\tcube_units\tshared_bytes\n");
    for name in &args.dtypes {
        let dtype = dtype(name)?;
        let mut kernels = Vec::new();
        if args.kernels.contains(&Family::Attention) {
            for &head_dim in &args.head_dims {
                kernels.extend(attention_cuda_sources(head_dim, dtype)?);
            }
        }
        if args.kernels.contains(&Family::FusedOps) {
            kernels.extend(fused_op_cuda_sources(dtype)?);
        }
        for kernel in kernels {
            let file = file_name(&kernel, name);
            std::fs::write(args.out.join(&file), &kernel.source)?;
            let settings: Vec<String> = kernel
                .settings
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            manifest.push_str(&format!(
                "{file}\t{}\t{name}\t{}\t{}\t{}\t{}\n",
                kernel.name,
                settings.join(" "),
                kernel.entry_point,
                kernel.cube_units,
                kernel.shared_memory_bytes
            ));
        }
    }
    std::fs::write(args.out.join("kernels.tsv"), manifest)?;
    Ok(())
}

/// `<kernel>[.<setting>-<value>...].<dtype>.cu`.
fn file_name(kernel: &KernelSource, dtype: &str) -> String {
    let mut name = kernel.name.clone();
    for (key, value) in &kernel.settings {
        name.push_str(&format!(".{key}-{value}"));
    }
    format!("{name}.{dtype}.cu")
}
