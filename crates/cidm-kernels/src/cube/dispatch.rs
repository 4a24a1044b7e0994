//! Run-time dispatch from a generic burn backend to the kernels: a backend's float tensor
//! primitive is compared (`std::any`) with those of the concrete backends the features build.
//!
//! Plain burn-cubecl and fusion tensors do not depend on the backend's element types, so one
//! candidate per runtime covers every float type; autodiff tensors do, so `Autodiff` is
//! tried over f32, f16 and bf16 with the integer and bool elements of burn's `Wgpu` (`i32`,
//! `u32`) and `Cuda` (`i32`, `u8`) aliases. Other element choices run unfused.

use std::any::Any;

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor, TensorPrimitive};
use burn_cubecl::CubeBackend;
use burn_fusion::Fusion;
use half::{bf16, f16};

use super::{autodiff, ops::FlashOps};
use crate::{Unfused, UnfusedReason};

/// The fused forward on `B` (shapes and dtypes already checked by the caller).
pub(crate) fn dispatch<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
) -> Result<Tensor<B, 4>, Unfused<B>> {
    let dtypes = (q.dtype(), k.dtype(), v.dtype());
    match (q.into_primitive(), k.into_primitive(), v.into_primitive()) {
        (TensorPrimitive::Float(q), TensorPrimitive::Float(k), TensorPrimitive::Float(v)) => {
            let tensors = [q, k, v];
            match dispatch_primitives::<B>(&tensors, scale) {
                Ok(out) => Ok(Tensor::from_primitive(TensorPrimitive::Float(out))),
                Err(reason) => {
                    let [q, k, v] =
                        tensors.map(|t| Tensor::from_primitive(TensorPrimitive::Float(t)));
                    Err(Unfused { q, k, v, reason })
                }
            }
        }
        // Quantized tensors: the caller's dtype check normally keeps them from coming here.
        (q, k, v) => Err(Unfused {
            q: Tensor::from_primitive(q),
            k: Tensor::from_primitive(k),
            v: Tensor::from_primitive(v),
            reason: UnfusedReason::DType {
                q: dtypes.0,
                k: dtypes.1,
                v: dtypes.2,
            },
        }),
    }
}

/// A signature shared by [`run_plain`] and [`run_autodiff`].
type Runner<X> = fn([FloatTensor<X>; 3], f32) -> Result<FloatTensor<X>, UnfusedReason>;

/// Tries every candidate backend in turn; `Err(Backend)` when `B` is none of them.
fn dispatch_primitives<B: Backend>(
    tensors: &[FloatTensor<B>; 3],
    scale: f32,
) -> Result<FloatTensor<B>, UnfusedReason> {
    macro_rules! try_backend {
        ($backend:ty, $runner:expr) => {
            if let Some(result) = try_on::<B, $backend>(tensors, scale, $runner) {
                return result;
            }
        };
    }
    macro_rules! candidates {
        (@autodiff $plain:ident, $float:ty) => {
            try_backend!(Autodiff<$plain<$float>>, run_autodiff::<$plain<$float>>);
            try_backend!(
                Autodiff<Fusion<$plain<$float>>>,
                run_autodiff::<Fusion<$plain<$float>>>
            );
        };
        ($runtime:ty, $bool:ty) => {
            type Plain<F> = CubeBackend<$runtime, F, i32, $bool>;
            try_backend!(Plain<f32>, run_plain::<Plain<f32>>);
            try_backend!(Fusion<Plain<f32>>, run_plain::<Fusion<Plain<f32>>>);
            candidates!(@autodiff Plain, f32);
            candidates!(@autodiff Plain, f16);
            candidates!(@autodiff Plain, bf16);
        };
    }

    #[cfg(feature = "wgpu")]
    {
        candidates!(cubecl::wgpu::WgpuRuntime, u32);
    }
    #[cfg(feature = "cuda")]
    {
        candidates!(cubecl::cuda::CudaRuntime, u8);
    }
    Err(UnfusedReason::Backend)
}

/// `None` when `B`'s float tensors are not `X`'s; else the result of `run` on them, cast
/// back to `B`'s type. The inputs are cloned (reference-counted handles), not moved, so
/// that they remain the caller's when the kernel does not apply.
fn try_on<B: Backend, X: Backend>(
    tensors: &[FloatTensor<B>; 3],
    scale: f32,
    run: Runner<X>,
) -> Option<Result<FloatTensor<B>, UnfusedReason>> {
    let [q, k, v] = tensors
        .each_ref()
        .map(|t| (t as &dyn Any).downcast_ref::<FloatTensor<X>>().cloned());
    let (Some(q), Some(k), Some(v)) = (q, k, v) else {
        return None;
    };
    Some(run([q, k, v], scale).and_then(|out| {
        let out: Box<dyn Any> = Box::new(out);
        out.downcast::<FloatTensor<B>>()
            .map(|out| *out)
            .map_err(|_| UnfusedReason::Backend)
    }))
}

/// Whether the device of `q` can run the kernel on these tensors.
fn check_device<X: FlashOps>(q: &FloatTensor<X>) -> Result<(), UnfusedReason> {
    use burn::tensor::TensorMetadata;
    let dtype = q.dtype();
    let head_dim = q.shape()[3];
    if X::flash_supported(&X::float_device(q), dtype, head_dim) {
        Ok(())
    } else {
        Err(UnfusedReason::Device { dtype, head_dim })
    }
}

/// The forward on a backend without autodiff (the logsumexp is dropped).
fn run_plain<X: FlashOps>(
    [q, k, v]: [FloatTensor<X>; 3],
    scale: f32,
) -> Result<FloatTensor<X>, UnfusedReason> {
    check_device::<X>(&q)?;
    Ok(X::flash_forward(q, k, v, scale).0)
}

/// The forward on `Autodiff<X>`, with the fused backward as the node's gradient.
fn run_autodiff<X: FlashOps>(
    [q, k, v]: [FloatTensor<Autodiff<X>>; 3],
    scale: f32,
) -> Result<FloatTensor<Autodiff<X>>, UnfusedReason> {
    check_device::<X>(&q.primitive)?;
    Ok(autodiff::forward::<X>(q, k, v, scale))
}
