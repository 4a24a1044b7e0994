//! What the CUDA C++ of every kernel shares (feature `cuda-source`): CubeCL's CUDA compiler
//! with the options its CUDA runtime uses on sm_70 and newer, in the checked mode the launches
//! run in, and the split sums that the attention's and the layer norm's backward end with.
//! Each kernel family's own file (`attention/cuda_source.rs`, ...) defines its kernels with
//! the settings its launches use, against a wgpu client (any adapter, lavapipe too), and hands
//! them to [`to_cuda`]. Used to read registers and spills off NVIDIA's own compiler, and to
//! see that NVRTC takes every kernel, before a GPU runs them (`tools/kernel_registers.sh`).

use burn::tensor::DType;
use cubecl::prelude::*;
use cubecl::wgpu::WgpuRuntime;
use cubecl_cpp::cuda::{mma::CudaWmmaCompiler, CudaDialect};
use cubecl_cpp::shared::{CompilationOptions, CppCompiler, CppSupportedFeatures};

use super::host::ELEMENT_UNITS;
use super::reduce::sum_splits_kernel;
use crate::cuda_source::{CudaSourceError, KernelSource};

/// CubeCL's CUDA compiler, with the matrix-instruction back end its CUDA runtime uses by
/// default.
type CudaCompiler = CppCompiler<CudaDialect<CudaWmmaCompiler>>;

/// A kernel's comptime settings, named, in the order of its parameters.
pub(crate) type Settings = Vec<(&'static str, String)>;

/// The kernel settings of a cube of `units` units in one dimension.
pub(crate) fn cube_of(units: usize) -> KernelSettings {
    KernelSettings::default().cube_dim(CubeDim::new_1d(units as u32))
}

/// [`cube_of`] the units of the kernels with one unit per value, row or block.
pub(crate) fn element_cube() -> KernelSettings {
    cube_of(ELEMENT_UNITS as usize)
}

/// A tensor argument as the launches pass them (never in place).
pub(crate) fn tensor() -> TensorCompilationArg {
    TensorCompilationArg { inplace: None }
}

/// `kernel`, built with `settings`, compiled to CUDA C++ in checked mode. Of the options
/// CubeCL's CUDA runtime sets from the device, only fast math and grid constants (sm_70 on)
/// reach these kernels: the others (clusters, `elect_sync`, fast tanh) concern instructions
/// they do not use.
pub(crate) fn to_cuda<K: CubeKernel>(
    name: &str,
    settings: Settings,
    kernel: K,
) -> Result<KernelSource, CudaSourceError> {
    let options = CompilationOptions {
        warp_size: 32,
        supports_features: CppSupportedFeatures {
            fast_math: true,
            grid_constants: true,
            ..Default::default()
        },
    };
    let task = KernelTask::<CudaCompiler, _>::new(kernel);
    let compiled = cubecl::CubeTask::compile(
        &task,
        &mut Default::default(),
        &options,
        ExecutionMode::Checked,
        AddressType::U32.unsigned_type(),
    )
    .map_err(|err| CudaSourceError::Compile {
        kernel: name.to_string(),
        reason: err.to_string(),
    })?;
    // The compiled kernel's own record of its cube and shared memory.
    let kernel = compiled.repr.ok_or_else(|| CudaSourceError::Compile {
        kernel: name.to_string(),
        reason: "the compiler returned no kernel representation".to_string(),
    })?;
    Ok(KernelSource {
        name: name.to_string(),
        settings,
        entry_point: compiled.entrypoint_name,
        cube_units: kernel.cube_dim.num_elems() as usize,
        shared_memory_bytes: kernel.shared_memory_size(),
        source: compiled.source,
    })
}

/// The kernel that adds up split partial sums into `dtype`, as `host::sum_splits` launches
/// it.
pub(crate) fn sum_splits_source(
    client: &ComputeClient<WgpuRuntime>,
    dtype: DType,
) -> Result<KernelSource, CudaSourceError> {
    let kernel = sum_splits_kernel::SumSplitsKernel::<WgpuRuntime>::new(
        element_cube(),
        client.clone(),
        tensor(),
        tensor(),
        (),
        dtype.into(),
    );
    to_cuda("sum_splits", Vec::new(), kernel)
}

/// The kernels of GroupNorm, LayerNorm and GEGLU and the split sums, on `dtype` tensors,
/// every variant their launches can ask for.
pub(crate) fn fused_op_sources(
    client: &ComputeClient<WgpuRuntime>,
    dtype: DType,
) -> Result<Vec<KernelSource>, CudaSourceError> {
    let mut sources = super::group_norm::group_norm_sources(client, dtype)?;
    sources.extend(super::layer_norm::layer_norm_sources(client, dtype)?);
    sources.extend(super::geglu::geglu_sources(client, dtype)?);
    sources.push(sum_splits_source(client, dtype)?);
    Ok(sources)
}
