//! The group-norm kernels and their burn integration.

#[cfg(feature = "cuda-source")]
mod cuda_source;
mod kernel;
mod launch;
mod ops;

#[cfg(feature = "cuda-source")]
pub(crate) use cuda_source::group_norm_sources;

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor};

use crate::fused_ops::group_norm::{self as autodiff, GroupNormParams};

use super::dispatch::{run_fused, CubeKernel, CubeOps};
use super::host::check_dtype;
use crate::{GroupNormOptions, GroupNormUnfused};

/// The fused norm on `B`: x `[batch, channels, ...]` (shapes and dtypes already checked by
/// the caller).
pub(crate) fn fused<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    options: GroupNormOptions,
) -> Result<Tensor<B, D>, GroupNormUnfused> {
    let dtypes = GroupNormUnfused::DType {
        x: x.dtype(),
        gamma: gamma.dtype(),
        beta: beta.dtype(),
    };
    let params = GroupNormParams::from(options);
    // Quantized tensors: the caller's dtype check normally keeps them from coming here.
    let inputs = [
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    ];
    run_fused::<B, FusedGroupNorm, 3, D>(inputs, params, dtypes, GroupNormUnfused::Backend)
}

/// The group norm as a [`CubeKernel`]: inputs `[x, gamma, beta]`.
struct FusedGroupNorm;

impl CubeKernel<3> for FusedGroupNorm {
    type Params = GroupNormParams;
    type Error = GroupNormUnfused;

    /// The forward on a backend without autodiff (the statistics are dropped).
    fn plain<X: CubeOps>(
        [x, gamma, beta]: [FloatTensor<X>; 3],
        params: GroupNormParams,
    ) -> Result<FloatTensor<X>, GroupNormUnfused> {
        check_dtype::<X>(&x).map_err(|dtype| GroupNormUnfused::Device { dtype })?;
        Ok(X::group_norm_forward(x, gamma, beta, params).0)
    }

    /// The forward on `Autodiff<X>`, with the fused backward as the node's gradient.
    fn autodiff<X: CubeOps>(
        [x, gamma, beta]: [FloatTensor<Autodiff<X>>; 3],
        params: GroupNormParams,
    ) -> Result<FloatTensor<Autodiff<X>>, GroupNormUnfused> {
        check_dtype::<X>(&x.primitive).map_err(|dtype| GroupNormUnfused::Device { dtype })?;
        Ok(autodiff::forward::<X>(x, gamma, beta, params))
    }
}
