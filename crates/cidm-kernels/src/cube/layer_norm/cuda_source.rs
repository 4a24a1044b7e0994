//! The layer-norm kernels' CUDA C++, the row kernels at every cube size their launches pick
//! (see `cube/cuda_source.rs`).

use burn::tensor::DType;
use cubecl::prelude::*;
use cubecl::wgpu::WgpuRuntime;

use super::kernel::{
    layer_norm_forward_kernel::LayerNormForwardKernel as Forward,
    layer_norm_input_grad_kernel::LayerNormInputGradKernel as InputGrad,
    layer_norm_param_partials_kernel::LayerNormParamPartialsKernel as ParamPartials,
};
use super::launch::{COLUMN_UNITS, MAX_ROW_UNITS, MIN_ROW_UNITS};
use crate::cube::cuda_source::{cube_of, tensor as t, to_cuda};
use crate::cuda_source::{CudaSourceError, KernelSource};

/// The three layer-norm kernels on `dtype` tensors: the forward and the input's gradient with
/// 32, 64, 128 and 256 units per row, and the weights' partial sums. The constructors take
/// the kernels' parameters in order: `t()` a tensor, `()` a scalar, then the comptime values
/// and the dtype.
#[rustfmt::skip]
pub(crate) fn layer_norm_sources(
    client: &ComputeClient<WgpuRuntime>,
    dtype: DType,
) -> Result<Vec<KernelSource>, CudaSourceError> {
    type W = WgpuRuntime;
    let c = || client.clone();
    let e = || StorageType::from(dtype);
    let mut sources = Vec::new();
    let mut units = MIN_ROW_UNITS;
    while units <= MAX_ROW_UNITS {
        let cube = cube_of(units);
        let settings = || vec![("units", units.to_string())];
        let kernel = Forward::<W>::new(
            cube.clone(), c(), t(), t(), t(), t(), t(), t(), (), (), units, e(),
        );
        sources.push(to_cuda("layer_norm_forward", settings(), kernel)?);
        let kernel = InputGrad::<W>::new(
            cube.clone(), c(), t(), t(), t(), t(), t(), t(), (), units, e(),
        );
        sources.push(to_cuda("layer_norm_input_grad", settings(), kernel)?);
        units *= 2;
    }
    let kernel = ParamPartials::<W>::new(
        cube_of(COLUMN_UNITS as usize), c(), t(), t(), t(), t(), t(), t(), (), (), e(),
    );
    sources.push(to_cuda("layer_norm_param_partials", Vec::new(), kernel)?);
    Ok(sources)
}
