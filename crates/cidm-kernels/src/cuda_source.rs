//! The CUDA C++ of the attention kernels, generated on a machine without a GPU (feature
//! `cuda-source`), so that NVIDIA's compiler can report their register use and spills
//! before any GPU runs them: `tools/kernel_registers.sh` compiles every source with NVRTC and
//! `ptxas -v` for a chosen architecture (see `docs/performance.md`, "Registers per thread").
//!
//! CubeCL builds a kernel's definition from a client of some runtime (for the device's
//! properties); this module takes a wgpu client, which Mesa's lavapipe provides on any
//! machine, and compiles the definition with CubeCL's CUDA compiler. The kernels use no
//! property of the device that would make the CUDA source differ (no plane size, no matrix
//! instructions).

use burn::tensor::DType;

use crate::MAX_HEAD_DIM;

/// One kernel as CUDA C++, the text CubeCL's CUDA runtime hands to NVRTC.
#[derive(Debug, Clone)]
pub struct KernelSource {
    /// Which kernel: `flash_forward`, `flash_backward_dq` or `flash_backward_dkdv`.
    pub name: String,
    /// The `extern "C" __global__` function the source defines.
    pub entry_point: String,
    /// Units of a cube that share one row (the cube has 64 rows of them).
    pub units_per_row: usize,
    /// Rows of the other side per shared-memory tile.
    pub tile_rows: usize,
    /// Shared memory the kernel asks for at launch, in bytes (CUDA grants 48 KiB without
    /// opting in).
    pub shared_memory_bytes: usize,
    /// The whole translation unit.
    pub source: String,
}

/// Why the CUDA sources could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CudaSourceError {
    /// A head width the kernels do not take.
    #[error("head width {0} is outside the kernels' 1..={MAX_HEAD_DIM}")]
    HeadDim(usize),
    /// A dtype the kernels do not take.
    #[error("the attention kernels take f16, bf16 or f32 tensors, not {0:?}")]
    DType(DType),
    /// No wgpu adapter to define the kernels against (install a Vulkan driver such as Mesa's
    /// lavapipe).
    #[error("no wgpu adapter to define the kernels against: {0}")]
    NoAdapter(String),
    /// CubeCL's CUDA compiler rejected a kernel.
    #[error("CubeCL could not compile {kernel} to CUDA: {reason}")]
    Compile {
        /// Which kernel.
        kernel: String,
        /// CubeCL's message.
        reason: String,
    },
}

/// The attention kernels (forward, dQ, dK/dV) for heads of `head_dim` values on `dtype`
/// tensors, as CUDA C++, each set up as the attention launches it on a CUDA device.
pub fn attention_cuda_sources(
    head_dim: usize,
    dtype: DType,
) -> Result<Vec<KernelSource>, CudaSourceError> {
    if !(1..=MAX_HEAD_DIM).contains(&head_dim) {
        return Err(CudaSourceError::HeadDim(head_dim));
    }
    if !matches!(dtype, DType::F16 | DType::BF16 | DType::F32) {
        return Err(CudaSourceError::DType(dtype));
    }
    let client = wgpu_client()?;
    crate::cube::attention_cuda_sources(&client, head_dim, dtype)
}

/// A client of wgpu's default device. wgpu panics when it finds no adapter; that panic
/// becomes [`CudaSourceError::NoAdapter`].
fn wgpu_client(
) -> Result<cubecl::prelude::ComputeClient<cubecl::wgpu::WgpuRuntime>, CudaSourceError> {
    use cubecl::prelude::Runtime;
    std::panic::catch_unwind(|| cubecl::wgpu::WgpuRuntime::client(&Default::default())).map_err(
        |panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "wgpu panicked".to_string());
            CudaSourceError::NoAdapter(message)
        },
    )
}
