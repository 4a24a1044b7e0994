//! The layer-norm kernels and their burn integration.

#[cfg(feature = "cuda-source")]
mod cuda_source;
mod kernel;
mod launch;
mod ops;

#[cfg(feature = "cuda-source")]
pub(crate) use cuda_source::layer_norm_sources;

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor};

use crate::fused_ops::layer_norm::{self as autodiff, LayerNormParams};

use super::dispatch::{run_fused, CubeKernel, CubeOps};
use super::host::check_dtype;
use crate::LayerNormUnfused;

/// The fused norm on `B`: x `[rows, dim]` (shapes and dtypes already checked by the caller).
pub(crate) fn fused<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Result<Tensor<B, 2>, LayerNormUnfused> {
    let dtypes = LayerNormUnfused::DType {
        x: x.dtype(),
        gamma: gamma.dtype(),
        beta: beta.dtype(),
    };
    let params = LayerNormParams::new(epsilon);
    // Quantized tensors: the caller's dtype check normally keeps them from coming here.
    let inputs = [
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    ];
    run_fused::<B, FusedLayerNorm, 3, 2>(inputs, params, dtypes, LayerNormUnfused::Backend)
}

/// The layer norm as a [`CubeKernel`]: inputs `[x, gamma, beta]`.
struct FusedLayerNorm;

impl CubeKernel<3> for FusedLayerNorm {
    type Params = LayerNormParams;
    type Error = LayerNormUnfused;

    /// The forward on a backend without autodiff (the statistics are dropped).
    fn plain<X: CubeOps>(
        [x, gamma, beta]: [FloatTensor<X>; 3],
        params: LayerNormParams,
    ) -> Result<FloatTensor<X>, LayerNormUnfused> {
        check_dtype::<X>(&x).map_err(|dtype| LayerNormUnfused::Device { dtype })?;
        Ok(X::layer_norm_forward(x, gamma, beta, params).0)
    }

    /// The forward on `Autodiff<X>`, with the fused backward as the node's gradient.
    fn autodiff<X: CubeOps>(
        [x, gamma, beta]: [FloatTensor<Autodiff<X>>; 3],
        params: LayerNormParams,
    ) -> Result<FloatTensor<Autodiff<X>>, LayerNormUnfused> {
        check_dtype::<X>(&x.primitive).map_err(|dtype| LayerNormUnfused::Device { dtype })?;
        Ok(autodiff::forward::<X>(x, gamma, beta, params))
    }
}
