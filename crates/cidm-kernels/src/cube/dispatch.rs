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

use super::attention::FlashOps;
use super::host::DeviceDtypes;
use crate::fused_ops::{geglu::GegluOps, group_norm::GroupNormOps, layer_norm::LayerNormOps};

/// The backends the kernels run on: every kernel's operations, implemented for burn-cubecl's
/// `CubeBackend` and for `Fusion` over it.
pub(crate) trait CubeOps:
    DeviceDtypes + FlashOps + GegluOps + GroupNormOps + LayerNormOps
{
}

impl<X: DeviceDtypes + FlashOps + GegluOps + GroupNormOps + LayerNormOps> CubeOps for X {}

/// One fused operation with `N` float inputs and one float output, as run on a concrete
/// backend with and without autodiff; [`dispatch`] finds the backend.
pub(crate) trait CubeKernel<const N: usize> {
    /// The operation's scalar settings.
    type Params: Copy;
    /// Why a concrete backend's device cannot run it.
    type Error;

    /// The operation on a backend without autodiff.
    fn plain<X: CubeOps>(
        inputs: [FloatTensor<X>; N],
        params: Self::Params,
    ) -> Result<FloatTensor<X>, Self::Error>;

    /// The operation as one node of `Autodiff<X>`'s graph, its backward fused too.
    fn autodiff<X: CubeOps>(
        inputs: [FloatTensor<Autodiff<X>>; N],
        params: Self::Params,
    ) -> Result<FloatTensor<Autodiff<X>>, Self::Error>;
}

/// The float primitive of `tensor`; `None` for a quantized tensor, which no kernel takes.
pub(crate) fn float_primitive<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
) -> Option<FloatTensor<B>> {
    match tensor.into_primitive() {
        TensorPrimitive::Float(primitive) => Some(primitive),
        TensorPrimitive::QFloat(_) => None,
    }
}

/// `K` on `B` from its inputs' primitives, its output as a tensor: `quantized` when an input
/// is quantized, `backend` when `B` is none of the candidate backends, else the kernel's
/// result.
pub(crate) fn run_fused<B: Backend, K: CubeKernel<N>, const N: usize, const D: usize>(
    inputs: [TensorPrimitive<B>; N],
    params: K::Params,
    quantized: K::Error,
    backend: K::Error,
) -> Result<Tensor<B, D>, K::Error> {
    let mut floats = Vec::with_capacity(N);
    for input in inputs {
        match input {
            TensorPrimitive::Float(primitive) => floats.push(primitive),
            TensorPrimitive::QFloat(_) => return Err(quantized),
        }
    }
    dispatch::<B, K, N>(&floats, params)
        .unwrap_or(Err(backend))
        .map(|out| Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// Whether `tensor` is on one of the candidate backends of [`dispatch`]: the identity as a
/// kernel, dispatched, so that the answer comes from the same list of backends.
pub(crate) fn on_cube_backend<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> bool {
    float_primitive(tensor.clone())
        .is_some_and(|primitive| dispatch::<B, Identity, 1>(&[primitive], ()).is_some())
}

/// The identity as a [`CubeKernel`], for [`on_cube_backend`].
struct Identity;

impl CubeKernel<1> for Identity {
    type Params = ();
    type Error = ();

    fn plain<X: CubeOps>([x]: [FloatTensor<X>; 1], _: ()) -> Result<FloatTensor<X>, ()> {
        Ok(x)
    }

    fn autodiff<X: CubeOps>(
        [x]: [FloatTensor<Autodiff<X>>; 1],
        _: (),
    ) -> Result<FloatTensor<Autodiff<X>>, ()> {
        Ok(x)
    }
}

/// `K` on `B`: `None` when `B` is none of the candidate backends (or `inputs` are not `N`),
/// else the kernel's result (an error when the device cannot run it). The inputs stay the
/// caller's: the kernel gets clones of them (reference-counted handles), so the caller can
/// fall back on its plain path.
pub(crate) fn dispatch<B: Backend, K: CubeKernel<N>, const N: usize>(
    inputs: &[FloatTensor<B>],
    params: K::Params,
) -> Option<Result<FloatTensor<B>, K::Error>> {
    macro_rules! try_backend {
        ($backend:ty, $runner:expr) => {
            if let Some(result) =
                try_on::<B, $backend, N, K::Params, K::Error>(inputs, params, $runner)
            {
                return Some(result);
            }
        };
    }
    macro_rules! candidates {
        (@autodiff $plain:ident, $float:ty) => {
            try_backend!(Autodiff<$plain<$float>>, K::autodiff::<$plain<$float>>);
            try_backend!(
                Autodiff<Fusion<$plain<$float>>>,
                K::autodiff::<Fusion<$plain<$float>>>
            );
        };
        ($runtime:ty, $bool:ty) => {
            type Plain<F> = CubeBackend<$runtime, F, i32, $bool>;
            try_backend!(Plain<f32>, K::plain::<Plain<f32>>);
            try_backend!(Fusion<Plain<f32>>, K::plain::<Fusion<Plain<f32>>>);
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
    None
}

/// A kernel on a concrete backend `X`, as [`CubeKernel::plain`] or [`CubeKernel::autodiff`].
type Runner<X, const N: usize, P, E> = fn([FloatTensor<X>; N], P) -> Result<FloatTensor<X>, E>;

/// `None` when `B`'s float tensors are not `X`'s (or there are not `N`); else the result of
/// `run` on clones of them, cast back to `B`'s type.
fn try_on<B: Backend, X: Backend, const N: usize, P, E>(
    inputs: &[FloatTensor<B>],
    params: P,
    run: Runner<X, N, P, E>,
) -> Option<Result<FloatTensor<B>, E>> {
    let mut cast = Vec::with_capacity(N);
    for input in inputs {
        cast.push(
            (input as &dyn Any)
                .downcast_ref::<FloatTensor<X>>()?
                .clone(),
        );
    }
    let cast: [FloatTensor<X>; N] = cast.try_into().ok()?;
    match run(cast, params) {
        Ok(out) => {
            let out: Box<dyn Any> = Box::new(out);
            out.downcast::<FloatTensor<B>>().ok().map(|out| Ok(*out))
        }
        Err(error) => Some(Err(error)),
    }
}
