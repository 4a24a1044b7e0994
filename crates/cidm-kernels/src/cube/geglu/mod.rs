//! The GEGLU kernels and their burn integration.

#[cfg(feature = "cuda-source")]
mod cuda_source;
mod kernel;
mod launch;
mod ops;

#[cfg(feature = "cuda-source")]
pub(crate) use cuda_source::geglu_sources;

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor};

use crate::fused_ops::geglu as autodiff;

use super::dispatch::{run_fused, CubeKernel, CubeOps};
use super::host::check_dtype;
use crate::GegluUnfused;

/// The fused GEGLU on `B`: x `[rows, 2 n]` (shape and dtype already checked by the caller).
pub(crate) fn fused<B: Backend>(x: Tensor<B, 2>) -> Result<Tensor<B, 2>, GegluUnfused> {
    let dtype = GegluUnfused::DType { dtype: x.dtype() };
    // Quantized tensors: the caller's dtype check normally keeps them from coming here.
    run_fused::<B, FusedGeglu, 1, 2>([x.into_primitive()], (), dtype, GegluUnfused::Backend)
}

/// GEGLU as a [`CubeKernel`]: input `[x]`.
struct FusedGeglu;

impl CubeKernel<1> for FusedGeglu {
    type Params = ();
    type Error = GegluUnfused;

    /// The forward on a backend without autodiff.
    fn plain<X: CubeOps>([x]: [FloatTensor<X>; 1], _: ()) -> Result<FloatTensor<X>, GegluUnfused> {
        check_dtype::<X>(&x).map_err(|dtype| GegluUnfused::Device { dtype })?;
        Ok(X::geglu_forward(x))
    }

    /// The forward on `Autodiff<X>`, with the fused backward as the node's gradient.
    fn autodiff<X: CubeOps>(
        [x]: [FloatTensor<Autodiff<X>>; 1],
        _: (),
    ) -> Result<FloatTensor<Autodiff<X>>, GegluUnfused> {
        check_dtype::<X>(&x.primitive).map_err(|dtype| GegluUnfused::Device { dtype })?;
        Ok(autodiff::forward::<X>(x))
    }
}
