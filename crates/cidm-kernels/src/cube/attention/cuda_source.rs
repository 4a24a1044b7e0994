//! The attention kernels' CUDA C++, each defined with the plan `launch.rs` makes on a CUDA
//! device (see `cube/cuda_source.rs`).

use burn::tensor::DType;
use cubecl::prelude::*;
use cubecl::wgpu::WgpuRuntime;

use super::backward_kernel::{flash_backward_dkdv_kernel, flash_backward_dq_kernel};
use super::forward_kernel::flash_forward_kernel;
use super::launch::{Kernel, Limits, Plan, MAX_SHARED_BYTES};
use crate::cube::cuda_source::{tensor, to_cuda, Settings};
use crate::cuda_source::{CudaSourceError, KernelSource};

/// Threads per block on every CUDA device.
const CUDA_MAX_UNITS: usize = 1024;

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
    let cube = |plan: Plan| KernelSettings::default().cube_dim(plan.cube_dim());
    let settings = |plan: Plan| -> Settings {
        vec![
            ("head_dim", head_dim.to_string()),
            ("units_per_row", plan.groups.to_string()),
            ("tile_rows", plan.tile.to_string()),
        ]
    };
    let t = tensor;
    let forward_kernel = flash_forward_kernel::FlashForwardKernel::<WgpuRuntime>::new(
        cube(forward),
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
        cube(dq),
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
        cube(dkdv),
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
        to_cuda("flash_forward", settings(forward), forward_kernel)?,
        to_cuda("flash_backward_dq", settings(dq), dq_kernel)?,
        to_cuda("flash_backward_dkdv", settings(dkdv), dkdv_kernel)?,
    ])
}
