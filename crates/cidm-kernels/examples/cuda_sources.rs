//! Writes the attention kernels' CUDA C++ (as CubeCL's CUDA runtime would compile them) into
//! a folder, one file per kernel, head width and dtype: `<kernel>_<width>_<dtype>.cu`.
//! Needs no GPU, only a wgpu adapter (lavapipe suffices); `tools/kernel_registers.sh` runs it
//! and reads the registers and spills of each file off NVIDIA's compiler.
//!
//! `cargo run -p cidm-kernels --features cuda-source --example cuda_sources -- --out DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::DType;
use cidm_kernels::cuda_source::attention_cuda_sources;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Folder to write the `.cu` files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Head widths: SD 1.5's 40, 80 and 160, and 64 (SD 2.x, SDXL).
    #[arg(long, value_delimiter = ',', default_values_t = [40, 64, 80, 160])]
    head_dims: Vec<usize>,
    /// Dtypes of the attention's inputs: f16, bf16 or f32.
    #[arg(long, value_delimiter = ',', default_values = ["f16", "f32"])]
    dtypes: Vec<String>,
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

/// Writes the sources and `kernels.tsv`: one line per file with its kernel, head width,
/// dtype, entry point, units per row, tile rows and shared memory in bytes.
fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out)?;
    let mut manifest = String::from(
        "file\tkernel\thead_dim\tdtype\tentry_point\tunits_per_row\ttile_rows\tshared_bytes\n",
    );
    for name in &args.dtypes {
        let dtype = dtype(name)?;
        for &head_dim in &args.head_dims {
            for kernel in attention_cuda_sources(head_dim, dtype)? {
                let file = format!("{}_{head_dim}_{name}.cu", kernel.name);
                std::fs::write(args.out.join(&file), &kernel.source)?;
                manifest.push_str(&format!(
                    "{file}\t{}\t{head_dim}\t{name}\t{}\t{}\t{}\t{}\n",
                    kernel.name,
                    kernel.entry_point,
                    kernel.units_per_row,
                    kernel.tile_rows,
                    kernel.shared_memory_bytes
                ));
            }
        }
    }
    std::fs::write(args.out.join("kernels.tsv"), manifest)?;
    Ok(())
}
