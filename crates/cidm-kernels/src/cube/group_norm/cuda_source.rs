//! The group-norm kernels' CUDA C++, one source per kernel and per layout and activation
//! its launches can ask for (see `cube/cuda_source.rs`).

use burn::tensor::DType;
use cubecl::prelude::*;
use cubecl::wgpu::WgpuRuntime;

use super::kernel::{
    group_norm_apply_kernel::GroupNormApplyKernel as Apply,
    group_norm_channel_sums_kernel::GroupNormChannelSumsKernel as ChannelSums,
    group_norm_coefficients_kernel::GroupNormCoefficientsKernel as Coefficients,
    group_norm_input_grad_kernel::GroupNormInputGradKernel as InputGrad,
    group_norm_param_grads_kernel::GroupNormParamGradsKernel as ParamGrads,
    group_norm_partial_sums_kernel::GroupNormPartialSumsKernel as PartialSums,
    group_norm_stats_kernel::GroupNormStatsKernel as Stats, REDUCE_UNITS,
};
use crate::cube::cuda_source::{cube_of, element_cube, tensor as t, to_cuda, Settings};
use crate::cuda_source::{CudaSourceError, KernelSource};

/// Both values of a comptime flag.
const FLAGS: [bool; 2] = [false, true];

/// `flags` named, as a kernel's settings.
fn named<const N: usize>(names: [&'static str; N], flags: [bool; N]) -> Settings {
    names
        .into_iter()
        .zip(flags)
        .map(|(name, flag)| (name, flag.to_string()))
        .collect()
}

/// The seven group-norm kernels on `dtype` tensors: x (and the output's gradient) channels
/// first or last, with or without the fused SiLU, the output always channels last (as
/// `launch.rs` writes it). The constructors take the kernels' parameters in order: `t()` a
/// tensor, `()` a scalar, then the comptime values and the dtype.
#[rustfmt::skip]
pub(crate) fn group_norm_sources(
    client: &ComputeClient<WgpuRuntime>,
    dtype: DType,
) -> Result<Vec<KernelSource>, CudaSourceError> {
    type W = WgpuRuntime;
    let (r, el, c) = (|| cube_of(REDUCE_UNITS), element_cube, || client.clone());
    let e = || StorageType::from(dtype);
    let mut sources = Vec::new();
    for x_last in FLAGS {
        let settings = || named(["x_last"], [x_last]);
        let kernel = PartialSums::<W>::new(
            r(), c(), t(), t(), (), (), (), (), REDUCE_UNITS, x_last, e(),
        );
        sources.push(to_cuda("group_norm_partial_sums", settings(), kernel)?);
        let kernel = Stats::<W>::new(
            el(), c(), t(), t(), t(), t(), (), (), (), (), (), (), x_last, e(),
        );
        sources.push(to_cuda("group_norm_stats", settings(), kernel)?);
        for silu in FLAGS {
            let kernel = Apply::<W>::new(
                el(), c(), t(), t(), t(), t(), t(), t(), (), (), (), silu, x_last, true, e(),
            );
            let settings = named(["silu", "x_last"], [silu, x_last]);
            sources.push(to_cuda("group_norm_apply", settings, kernel)?);
            for grad_last in FLAGS {
                let flags = [silu, x_last, grad_last];
                let settings = || named(["silu", "x_last", "grad_last"], flags);
                let kernel = ChannelSums::<W>::new(
                    r(), c(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), REDUCE_UNITS,
                    silu, x_last, grad_last, e(),
                );
                sources.push(to_cuda("group_norm_channel_sums", settings(), kernel)?);
                let kernel = InputGrad::<W>::new(
                    el(), c(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), (), silu,
                    x_last, grad_last, e(),
                );
                sources.push(to_cuda("group_norm_input_grad", settings(), kernel)?);
            }
        }
    }
    let kernel = Coefficients::<W>::new(el(), c(), t(), t(), t(), t(), (), (), (), e());
    sources.push(to_cuda("group_norm_coefficients", Vec::new(), kernel)?);
    let kernel = ParamGrads::<W>::new(el(), c(), t(), t(), t(), t(), (), e());
    sources.push(to_cuda("group_norm_param_grads", Vec::new(), kernel)?);
    Ok(sources)
}
