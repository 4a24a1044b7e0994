//! [`FlashOps`]: the kernels as operations of a burn backend, for burn-cubecl's
//! `CubeBackend` directly and under burn-fusion (as a custom operation of the fusion stream).

use burn::tensor::{backend::Backend, ops::FloatTensor, DType, Shape};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{Fusion, FusionBackend};

use super::{launch, tuned};
use crate::cube::fusion_op::register_custom;

/// A backend that runs the flash-attention kernels on its float tensors.
pub(crate) trait FlashOps: Backend {
    /// Whether `device` can run the kernels on `dtype` tensors with `head_dim` columns.
    fn flash_supported(device: &Self::Device, dtype: DType, head_dim: usize) -> bool;

    /// `(output, logsumexp)` of `softmax(q k^T * scale) v` (see `launch::forward`).
    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `softmax(q k^T * scale) v` alone, for a forward that no backward follows (see
    /// `tuned::forward`).
    fn flash_inference(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// `(dq, dk, dv)` (see `launch::backward`).
    #[allow(clippy::too_many_arguments)]
    fn flash_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl<R, F, I, BT> FlashOps for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn flash_supported(device: &Self::Device, dtype: DType, head_dim: usize) -> bool {
        launch::device_supports::<R>(device, dtype, head_dim)
    }

    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        launch::forward(q, k, v, scale)
    }

    fn flash_inference(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        tuned::forward(q, k, v, scale)
    }

    fn flash_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        launch::backward(q, k, v, out, lse, grad_out, scale)
    }
}

impl<B: FusionBackend + FlashOps> FlashOps for Fusion<B> {
    fn flash_supported(device: &Self::Device, dtype: DType, head_dim: usize) -> bool {
        B::flash_supported(device, dtype, head_dim)
    }

    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dims = q.shape.clone();
        let lse = Shape::new([dims[0], dims[1], dims[2]]);
        let outputs = [(dims, q.dtype), (lse, DType::F32)];
        let [out, lse] = register_custom::<B, _, 3, 2>(
            "cidm_flash_attention_forward",
            [q, k, v],
            outputs,
            scale,
            |[q, k, v], scale| {
                let (out, lse) = B::flash_forward(q, k, v, scale);
                [out, lse]
            },
        );
        (out, lse)
    }

    fn flash_inference(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let outputs = [(q.shape.clone(), q.dtype)];
        let [out] = register_custom::<B, _, 3, 1>(
            "cidm_flash_attention_inference",
            [q, k, v],
            outputs,
            scale,
            |[q, k, v], scale| [B::flash_inference(q, k, v, scale)],
        );
        out
    }

    fn flash_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let outputs = [&q, &k, &v].map(|input| (input.shape.clone(), input.dtype));
        let [dq, dk, dv] = register_custom::<B, _, 6, 3>(
            "cidm_flash_attention_backward",
            [q, k, v, out, lse, grad_out],
            outputs,
            scale,
            |[q, k, v, out, lse, grad_out], scale| {
                let (dq, dk, dv) = B::flash_backward(q, k, v, out, lse, grad_out, scale);
                [dq, dk, dv]
            },
        );
        (dq, dk, dv)
    }
}
