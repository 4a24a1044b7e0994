//! [`FlashOps`]: the kernels as operations of a burn backend, for burn-cubecl's
//! `CubeBackend` directly and under burn-fusion (as a custom operation of the fusion stream).

use core::marker::PhantomData;

use burn::tensor::{backend::Backend, ops::FloatTensor, DType, Shape};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{stream::Operation, Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer};

use super::launch;
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

/// The forward as a fusion-stream operation: inputs `[q, k, v]`, outputs `[out, lse]`.
#[derive(Clone, Debug)]
struct ForwardOp<B> {
    desc: CustomOpIr,
    scale: f32,
    backend: PhantomData<B>,
}

impl<B: FusionBackend + FlashOps> Operation<B::FusionRuntime> for ForwardOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([q, k, v], [out, lse]) = self.desc.as_fixed();
        let (q, k, v) = (
            handles.get_float_tensor::<B>(q),
            handles.get_float_tensor::<B>(k),
            handles.get_float_tensor::<B>(v),
        );
        let (result, logsumexp) = B::flash_forward(q, k, v, self.scale);
        handles.register_float_tensor::<B>(&out.id, result);
        handles.register_float_tensor::<B>(&lse.id, logsumexp);
    }
}

/// The backward as a fusion-stream operation: inputs `[q, k, v, out, lse, grad_out]`,
/// outputs `[dq, dk, dv]`.
#[derive(Clone, Debug)]
struct BackwardOp<B> {
    desc: CustomOpIr,
    scale: f32,
    backend: PhantomData<B>,
}

impl<B: FusionBackend + FlashOps> Operation<B::FusionRuntime> for BackwardOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([q, k, v, out, lse, grad_out], [dq, dk, dv]) = self.desc.as_fixed();
        let (grad_q, grad_k, grad_v) = B::flash_backward(
            handles.get_float_tensor::<B>(q),
            handles.get_float_tensor::<B>(k),
            handles.get_float_tensor::<B>(v),
            handles.get_float_tensor::<B>(out),
            handles.get_float_tensor::<B>(lse),
            handles.get_float_tensor::<B>(grad_out),
            self.scale,
        );
        handles.register_float_tensor::<B>(&dq.id, grad_q);
        handles.register_float_tensor::<B>(&dk.id, grad_k);
        handles.register_float_tensor::<B>(&dv.id, grad_v);
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
        let [out, lse] = register_custom::<B, _, _, _>(
            "cidm_flash_attention_forward",
            [q, k, v],
            outputs,
            |desc| ForwardOp::<B> {
                desc,
                scale,
                backend: PhantomData,
            },
        );
        (out, lse)
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
        let [dq, dk, dv] = register_custom::<B, _, _, _>(
            "cidm_flash_attention_backward",
            [q, k, v, out, lse, grad_out],
            outputs,
            |desc| BackwardOp::<B> {
                desc,
                scale,
                backend: PhantomData,
            },
        );
        (dq, dk, dv)
    }
}
