//! The flash-attention kernels and their burn integration.
//!
//! Every loop over the head width is unrolled (`#[unroll]`; the width is a compile-time
//! parameter of each kernel). For two reasons: each unit's rows (`Array`s of its part of the
//! head width) are then indexed by constants and can live in registers instead of local memory; and a
//! unit's loop iterations grow with the sequence alone (see the loop limit in the module
//! above). Unrolled, an invocation loops about once per key or query row it walks, plus its
//! tile loads: with a loop per head column, SD 1.5's 4096 keys at width 40 (and 300 query
//! rows at width 160) already went past lavapipe's limit. The price is shader compilation:
//! lavapipe takes minutes for the test suite's kernels the first time (Mesa caches them on
//! disk after that).

mod autodiff;
mod backward_kernel;
#[cfg(feature = "cuda-source")]
mod cuda_source;
mod forward_kernel;
mod launch;
mod ops;
mod tile;
mod tuned;

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor, TensorMetadata, TensorPrimitive};

#[cfg(feature = "cuda-source")]
pub(crate) use cuda_source::attention_sources as cuda_sources;
pub(crate) use ops::FlashOps;

use super::dispatch::{dispatch, float_primitive, CubeKernel, CubeOps};
use crate::{Unfused, UnfusedReason};

/// The fused forward on `B` (shapes and dtypes already checked by the caller).
pub(crate) fn fused<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
) -> Result<Tensor<B, 4>, Unfused<B>> {
    let dtypes = (q.dtype(), k.dtype(), v.dtype());
    let primitives = [&q, &k, &v].map(|t| float_primitive(t.clone()));
    let result = match primitives {
        [Some(q), Some(k), Some(v)] => dispatch::<B, FlashAttention, 3>(&[q, k, v], scale)
            .unwrap_or(Err(UnfusedReason::Backend)),
        // Quantized tensors: the caller's dtype check normally keeps them from coming here.
        _ => Err(UnfusedReason::DType {
            q: dtypes.0,
            k: dtypes.1,
            v: dtypes.2,
        }),
    };
    result
        .map(|out| Tensor::from_primitive(TensorPrimitive::Float(out)))
        .map_err(|reason| Unfused { q, k, v, reason })
}

/// The attention as a [`CubeKernel`]: inputs `[q, k, v]`, the scale as parameter.
struct FlashAttention;

impl CubeKernel<3> for FlashAttention {
    type Params = f32;
    type Error = UnfusedReason;

    /// The forward on a backend without autodiff: no logsumexp, and in f16 tuned against
    /// cubek's tensor-core attention (`tuned.rs`).
    fn plain<X: CubeOps>(
        [q, k, v]: [FloatTensor<X>; 3],
        scale: f32,
    ) -> Result<FloatTensor<X>, UnfusedReason> {
        check_device::<X>(&q)?;
        Ok(X::flash_inference(q, k, v, scale))
    }

    /// The forward on `Autodiff<X>`, with the fused backward as the node's gradient.
    fn autodiff<X: CubeOps>(
        [q, k, v]: [FloatTensor<Autodiff<X>>; 3],
        scale: f32,
    ) -> Result<FloatTensor<Autodiff<X>>, UnfusedReason> {
        check_device::<X>(&q.primitive)?;
        Ok(autodiff::forward::<X>(q, k, v, scale))
    }
}

/// Whether the device of `q` can run the kernel on these tensors.
fn check_device<X: FlashOps>(q: &FloatTensor<X>) -> Result<(), UnfusedReason> {
    let dtype = q.dtype();
    let head_dim = q.shape()[3];
    if X::flash_supported(&X::float_device(q), dtype, head_dim) {
        Ok(())
    } else {
        Err(UnfusedReason::Device { dtype, head_dim })
    }
}
