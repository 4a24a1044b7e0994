//! The GEGLU kernels' CUDA C++ (see `cube/cuda_source.rs`).

use burn::tensor::DType;
use cubecl::prelude::*;
use cubecl::wgpu::WgpuRuntime;

use super::kernel::{geglu_backward_kernel, geglu_forward_kernel};
use crate::cube::cuda_source::{element_cube, tensor as t, to_cuda};
use crate::cuda_source::{CudaSourceError, KernelSource};

/// The GEGLU forward and backward on `dtype` tensors.
pub(crate) fn geglu_sources(
    client: &ComputeClient<WgpuRuntime>,
    dtype: DType,
) -> Result<Vec<KernelSource>, CudaSourceError> {
    let forward = geglu_forward_kernel::GegluForwardKernel::<WgpuRuntime>::new(
        element_cube(),
        client.clone(),
        t(),
        t(),
        (),
        dtype.into(),
    );
    let backward = geglu_backward_kernel::GegluBackwardKernel::<WgpuRuntime>::new(
        element_cube(),
        client.clone(),
        t(),
        t(),
        t(),
        (),
        dtype.into(),
    );
    Ok(vec![
        to_cuda("geglu_forward", Vec::new(), forward)?,
        to_cuda("geglu_backward", Vec::new(), backward)?,
    ])
}
