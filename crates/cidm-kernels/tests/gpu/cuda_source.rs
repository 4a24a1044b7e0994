//! The kernels' CUDA C++ (feature `cuda-source`), generated here without a GPU. For every
//! head width SD uses and every dtype, the three attention kernels come out as CUDA entry
//! points for the cube the launch uses, asking for no more shared memory than CUDA grants
//! without opting in (48 KiB, the budget the tiles and exchange buffers are planned for: at
//! width 80 the dQ kernel's take 49152 bytes, all of it); so does every variant of the fused
//! ops' kernels. Registers and spills, and whether NVRTC takes each source, are read off
//! NVIDIA's compiler by `tools/kernel_registers.sh`.
use std::collections::BTreeMap;

use burn::tensor::DType;
use cidm_kernels::cuda_source::{
    attention_cuda_sources, fused_op_cuda_sources, CudaSourceError, KernelSource,
};

/// The dtype's suffix in CubeCL's entry-point names.
const DTYPES: [(DType, &str); 3] = [
    (DType::F16, "f16"),
    (DType::BF16, "bf16"),
    (DType::F32, "f32"),
];

/// `kernel` declares its entry point with the launch bounds of its cube and asks for at most
/// the 48 KiB of shared memory CUDA grants without opting in.
fn assert_entry_and_shared(kernel: &KernelSource) {
    let declaration = format!(
        "__global__ void __launch_bounds__({}){}",
        kernel.cube_units, kernel.entry_point
    );
    assert!(
        kernel.source.contains(&declaration),
        "{} {:?}: no `{declaration}` in the source",
        kernel.name,
        kernel.settings
    );
    assert!(
        kernel.shared_memory_bytes <= 48 * 1024,
        "{} {:?} asks for {} bytes of shared memory",
        kernel.name,
        kernel.settings,
        kernel.shared_memory_bytes
    );
}

#[test]
fn attention_sources_for_every_width_and_dtype() {
    for (dtype, suffix) in DTYPES {
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
                assert_eq!(
                    kernel.setting("head_dim"),
                    Some(head_dim.to_string().as_str())
                );
                // A cube of 64 rows, each of 1, 2 or 4 units, and tiles in shared memory.
                let units: usize = kernel.setting("units_per_row").unwrap().parse().unwrap();
                assert!([1, 2, 4].contains(&units));
                assert_eq!(kernel.cube_units, 64 * units);
                assert!(kernel.shared_memory_bytes > 0);
                assert_entry_and_shared(kernel);
            }
        }
    }
}

#[test]
fn sources_reject_what_the_kernels_do_not_take() {
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
    assert!(matches!(
        fused_op_cuda_sources(DType::I32),
        Err(CudaSourceError::DType(DType::I32))
    ));
}

/// Every variant the fused ops' launches can ask for, once: the group norm's seven kernels
/// with x and the output's gradient channels first or last and SiLU on or off where the
/// kernel reads them (26), the layer norm's row kernels at 32 to 256 units and its weights'
/// partial sums (9), GEGLU's two and the split sums.
#[test]
fn fused_op_sources_cover_every_variant() {
    for (dtype, suffix) in DTYPES {
        let kernels = fused_op_cuda_sources(dtype).unwrap();
        let mut variants: BTreeMap<&str, usize> = BTreeMap::new();
        for kernel in &kernels {
            *variants.entry(kernel.name.as_str()).or_default() += 1;
            assert_eq!(
                kernel.entry_point,
                format!("{}_kernel_e_{suffix}", kernel.name)
            );
            assert_entry_and_shared(kernel);
        }
        let expected = BTreeMap::from([
            ("geglu_backward", 1),
            ("geglu_forward", 1),
            ("group_norm_apply", 4),
            ("group_norm_channel_sums", 8),
            ("group_norm_coefficients", 1),
            ("group_norm_input_grad", 8),
            ("group_norm_param_grads", 1),
            ("group_norm_partial_sums", 2),
            ("group_norm_stats", 2),
            ("layer_norm_forward", 4),
            ("layer_norm_input_grad", 4),
            ("layer_norm_param_partials", 1),
            ("sum_splits", 1),
        ]);
        assert_eq!(variants, expected, "{suffix}");
        // No two variants of a kernel alike.
        let mut seen: Vec<_> = kernels.iter().map(|k| (&k.name, &k.settings)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), kernels.len());
        // The layer norm's cube follows its `units` setting.
        for kernel in kernels.iter().filter(|k| k.name == "layer_norm_forward") {
            let units: usize = kernel.setting("units").unwrap().parse().unwrap();
            assert_eq!(kernel.cube_units, units);
        }
    }
}
