//! The attention kernels' CUDA C++ (feature `cuda-source`), generated here without a GPU:
//! for every head width SD uses and every dtype, the three kernels come out as CUDA entry
//! points for the cube the launch uses, asking for no more shared memory than CUDA grants
//! without opting in (48 KiB, the budget the tiles and exchange buffers are planned for: at
//! width 80 the dQ kernel's take 49152 bytes, all of it).
//! Registers and spills are read off NVIDIA's compiler by `tools/kernel_registers.sh`.
use burn::tensor::DType;
use cidm_kernels::cuda_source::{attention_cuda_sources, CudaSourceError};

#[test]
fn attention_sources_for_every_width_and_dtype() {
    for (dtype, suffix) in [
        (DType::F16, "f16"),
        (DType::BF16, "bf16"),
        (DType::F32, "f32"),
    ] {
        for head_dim in [40, 64, 80, 160] {
            let kernels = attention_cuda_sources(head_dim, dtype).unwrap();
            let names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
            assert_eq!(
                names,
                ["flash_forward", "flash_backward_dq", "flash_backward_dkdv"]
            );
            for kernel in &kernels {
                // dK/dV writes f32 partial sums (its second dtype).
                let entry = match kernel.name.as_str() {
                    "flash_backward_dkdv" => format!("{}_kernel_e_{suffix}_p_f32", kernel.name),
                    _ => format!("{}_kernel_e_{suffix}", kernel.name),
                };
                assert_eq!(kernel.entry_point, entry);
                // A cube of 64 rows, each of 1, 2 or 4 units.
                assert!([1, 2, 4].contains(&kernel.units_per_row));
                let units = 64 * kernel.units_per_row;
                let declaration = format!("__global__ void __launch_bounds__({units}){entry}");
                assert!(
                    kernel.source.contains(&declaration),
                    "{entry} at width {head_dim}: no `{declaration}` in the source"
                );
                assert!(
                    kernel.shared_memory_bytes > 0 && kernel.shared_memory_bytes <= 48 * 1024,
                    "{entry} at width {head_dim} asks for {} bytes of shared memory",
                    kernel.shared_memory_bytes
                );
            }
        }
    }
}

#[test]
fn attention_sources_reject_what_the_kernels_do_not_take() {
    assert!(matches!(
        attention_cuda_sources(0, DType::F16),
        Err(CudaSourceError::HeadDim(0))
    ));
    assert!(matches!(
        attention_cuda_sources(257, DType::F32),
        Err(CudaSourceError::HeadDim(257))
    ));
    assert!(matches!(
        attention_cuda_sources(40, DType::F64),
        Err(CudaSourceError::DType(DType::F64))
    ));
}
