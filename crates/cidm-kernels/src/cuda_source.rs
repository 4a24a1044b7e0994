//! The CUDA C++ of this crate's kernels, generated on a machine without a GPU (feature
//! `cuda-source`), so that NVIDIA's compiler can check that it takes every kernel and report
//! their register use and spills before any GPU runs them: `tools/kernel_registers.sh`
//! compiles every source with NVRTC and `ptxas -v` for a chosen architecture (see
//! `docs/performance.md`, "Registers per thread"). [`attention_cuda_sources`] gives the
//! attention kernels for one head width, [`fused_op_cuda_sources`] the others (GroupNorm,
//! LayerNorm, GEGLU and the sum of split partial results) in every variant their launches
//! use.
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
    /// Which kernel, e.g. `flash_forward` or `group_norm_apply`.
    pub name: String,
    /// The compile-time settings this variant was built with, named, in the order of the
    /// kernel's parameters: for the attention `head_dim`, `units_per_row` (units of a cube
    /// that share one row; the cube has 64 rows of them) and `tile_rows` (rows of the other
    /// side per shared-memory tile); for the group norm's kernels the layouts (`x_last`,
    /// `grad_last`: channels last) and `silu`; for the layer norm's row kernels `units`.
    pub settings: Vec<(&'static str, String)>,
    /// The `extern "C" __global__` function the source defines.
    pub entry_point: String,
    /// Units (threads) of a cube (block).
    pub cube_units: usize,
    /// Shared memory the kernel asks for at launch, in bytes (CUDA grants 48 KiB without
    /// opting in).
    pub shared_memory_bytes: usize,
    /// The whole translation unit.
    pub source: String,
}

impl KernelSource {
    /// The value of the setting `name`, if the kernel has it.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why the CUDA sources could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CudaSourceError {
    /// A head width the kernels do not take.
    #[error("head width {0} is outside the kernels' 1..={MAX_HEAD_DIM}")]
    HeadDim(usize),
    /// A dtype the kernels do not take.
    #[error("the kernels take f16, bf16 or f32 tensors, not {0:?}")]
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
    check_dtype(dtype)?;
    let client = wgpu_client()?;
    crate::cube::attention_cuda_sources(&client, head_dim, dtype)
}

/// The kernels of GroupNorm, LayerNorm and GEGLU and the one that adds up split partial
/// results (the attention's dK/dV and the layer norm's weight gradients end with it) on
/// `dtype` tensors, as CUDA C++: every variant of layout, activation and cube size their
/// launches can ask for.
pub fn fused_op_cuda_sources(dtype: DType) -> Result<Vec<KernelSource>, CudaSourceError> {
    check_dtype(dtype)?;
    let client = wgpu_client()?;
    crate::cube::fused_op_cuda_sources(&client, dtype)
}

/// The dtypes the kernels take: f16, bf16 and f32.
fn check_dtype(dtype: DType) -> Result<(), CudaSourceError> {
    match dtype {
        DType::F16 | DType::BF16 | DType::F32 => Ok(()),
        other => Err(CudaSourceError::DType(other)),
    }
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
