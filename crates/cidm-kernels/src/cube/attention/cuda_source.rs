//! The CUDA C++ that CubeCL's CUDA runtime would compile for the attention kernels, built
//! without a GPU: the kernels are defined against a wgpu client (any adapter, lavapipe too)
//! and handed to the CUDA dialect of CubeCL's C++ compiler with the options its CUDA runtime
//! uses on sm_70 and newer, in the checked mode that `launch` runs in. Used to read the
//! kernels' register use and spills off NVIDIA's own compiler (`tools/kernel_registers.sh`).

use burn::tensor::DType;
use cubecl::prelude::*;
use cubecl::wgpu::WgpuRuntime;
use cubecl_cpp::cuda::{mma::CudaWmmaCompiler, CudaDialect};
use cubecl_cpp::shared::{CompilationOptions, CppCompiler, CppSupportedFeatures};

use super::backward_kernel::{flash_backward_dkdv_kernel, flash_backward_dq_kernel};
use super::forward_kernel::flash_forward_kernel;
use super::launch::{Kernel, Limits, Plan, MAX_SHARED_BYTES};
use crate::cuda_source::{CudaSourceError, KernelSource};

/// Threads per block on every CUDA device.
const CUDA_MAX_UNITS: usize = 1024;

/// CubeCL's CUDA compiler, with the matrix-instruction back end its CUDA runtime uses by
/// default.
type CudaCompiler = CppCompiler<CudaDialect<CudaWmmaCompiler>>;

/// The attention kernels for `head_dim` on `dtype` tensors, each as `launch.rs` launches it
/// on a CUDA device: its [`Plan`] for [`MAX_SHARED_BYTES`] of shared memory (every CUDA
/// device grants that much), [`CUDA_MAX_UNITS`] and the limit of held values in force
/// ([`crate::HELD_VALUES_VAR`]), the dK/dV kernel writing f32 partial sums (its form whenever
/// the query rows are split; one range writes `dtype`).
pub(crate) fn attention_sources(
    client: &ComputeClient<WgpuRuntime>,
    head_dim: usize,
    dtype: DType,
) -> Result<Vec<KernelSource>, CudaSourceError> {
    let limits = Limits {
        shared: MAX_SHARED_BYTES,
        max_units: CUDA_MAX_UNITS,
        held_values: crate::attention_held_values(),
    };
    let plan =
        |kernel| Plan::new(kernel, head_dim, limits).ok_or(CudaSourceError::HeadDim(head_dim));
    let (forward, dq, dkdv) = (
        plan(Kernel::Forward)?,
        plan(Kernel::BackwardDq)?,
        plan(Kernel::BackwardDkdv)?,
    );
    let settings = |plan: Plan| KernelSettings::default().cube_dim(plan.cube_dim());
    let t = || TensorCompilationArg { inplace: None };
    let forward_kernel = flash_forward_kernel::FlashForwardKernel::<WgpuRuntime>::new(
        settings(forward),
        client.clone(),
        t(),
        t(),
        t(),
        t(),
        t(),
        (),
        (),
        (),
        head_dim,
        forward.groups,
        forward.tile,
        dtype.into(),
    );
    let dq_kernel = flash_backward_dq_kernel::FlashBackwardDqKernel::<WgpuRuntime>::new(
        settings(dq),
        client.clone(),
        t(),
        t(),
        t(),
        t(),
        t(),
        t(),
        t(),
        t(),
        (),
        (),
        (),
        head_dim,
        dq.groups,
        dq.tile,
        dtype.into(),
    );
    let dkdv_kernel = flash_backward_dkdv_kernel::FlashBackwardDkdvKernel::<WgpuRuntime>::new(
        settings(dkdv),
        client.clone(),
        t(),
        t(),
        t(),
        t(),
        t(),
        t(),
        t(),
        t(),
        (),
        (),
        (),
        (),
        head_dim,
        dkdv.groups,
        dkdv.tile,
        [dtype.into(), DType::F32.into()],
    );
    Ok(vec![
        to_cuda("flash_forward", forward, forward_kernel)?,
        to_cuda("flash_backward_dq", dq, dq_kernel)?,
        to_cuda("flash_backward_dkdv", dkdv, dkdv_kernel)?,
    ])
}

/// `kernel` compiled to CUDA C++ in checked mode. Of the options CubeCL's CUDA runtime sets
/// from the device, only fast math and grid constants (sm_70 on) reach these kernels: the
/// others (clusters, `elect_sync`, fast tanh) concern instructions they do not use.
fn to_cuda<K: CubeKernel>(
    name: &str,
    plan: Plan,
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
    Ok(KernelSource {
        name: name.to_string(),
        entry_point: compiled.entrypoint_name,
        units_per_row: plan.groups,
        tile_rows: plan.tile,
        shared_memory_bytes: compiled
            .repr
            .map_or(0, |kernel| kernel.shared_memory_size()),
        source: compiled.source,
    })
}
