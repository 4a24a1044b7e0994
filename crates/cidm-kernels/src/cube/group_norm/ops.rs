//! [`GroupNormOps`]: the group-norm kernels as operations of a burn backend, for burn-cubecl's
//! `CubeBackend` directly and under burn-fusion (as a custom operation of the fusion stream).

use core::marker::PhantomData;

use burn::tensor::{backend::Backend, ops::FloatTensor, DType, Shape};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{stream::Operation, Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer};

use super::{launch, GroupNormParams};
use crate::cube::fusion_op::register_custom;

/// A backend that runs the group-norm kernels on its float tensors.
pub(crate) trait GroupNormOps: Backend {
    /// Whether `device` can run the kernels on `dtype` tensors.
    fn group_norm_supported(device: &Self::Device, dtype: DType) -> bool;

    /// `(output, mean, rstd)` of x `[batch, channels, spatial]` (see `launch::forward`).
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `(dx, dgamma, dbeta)` (see `launch::backward`).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl<R, F, I, BT> GroupNormOps for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn group_norm_supported(device: &Self::Device, dtype: DType) -> bool {
        launch::device_supports::<R>(device, dtype)
    }

    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        launch::forward(x, gamma, beta, params)
    }

    fn group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        launch::backward(x, gamma, beta, mean, rstd, grad_out, params)
    }
}

/// The forward as a fusion-stream operation: inputs `[x, gamma, beta]`, outputs
/// `[out, mean, rstd]`.
#[derive(Clone, Debug)]
struct ForwardOp<B> {
    desc: CustomOpIr,
    params: GroupNormParams,
    backend: PhantomData<B>,
}

impl<B: FusionBackend + GroupNormOps> Operation<B::FusionRuntime> for ForwardOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([x, gamma, beta], [out, mean, rstd]) = self.desc.as_fixed();
        let (result, mean_value, rstd_value) = B::group_norm_forward(
            handles.get_float_tensor::<B>(x),
            handles.get_float_tensor::<B>(gamma),
            handles.get_float_tensor::<B>(beta),
            self.params,
        );
        handles.register_float_tensor::<B>(&out.id, result);
        handles.register_float_tensor::<B>(&mean.id, mean_value);
        handles.register_float_tensor::<B>(&rstd.id, rstd_value);
    }
}

/// The backward as a fusion-stream operation: inputs `[x, gamma, beta, mean, rstd,
/// grad_out]`, outputs `[dx, dgamma, dbeta]`.
#[derive(Clone, Debug)]
struct BackwardOp<B> {
    desc: CustomOpIr,
    params: GroupNormParams,
    backend: PhantomData<B>,
}

impl<B: FusionBackend + GroupNormOps> Operation<B::FusionRuntime> for BackwardOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([x, gamma, beta, mean, rstd, grad_out], [dx, dgamma, dbeta]) = self.desc.as_fixed();
        let (grad_x, grad_gamma, grad_beta) = B::group_norm_backward(
            handles.get_float_tensor::<B>(x),
            handles.get_float_tensor::<B>(gamma),
            handles.get_float_tensor::<B>(beta),
            handles.get_float_tensor::<B>(mean),
            handles.get_float_tensor::<B>(rstd),
            handles.get_float_tensor::<B>(grad_out),
            self.params,
        );
        handles.register_float_tensor::<B>(&dx.id, grad_x);
        handles.register_float_tensor::<B>(&dgamma.id, grad_gamma);
        handles.register_float_tensor::<B>(&dbeta.id, grad_beta);
    }
}

impl<B: FusionBackend + GroupNormOps> GroupNormOps for Fusion<B> {
    fn group_norm_supported(device: &Self::Device, dtype: DType) -> bool {
        B::group_norm_supported(device, dtype)
    }

    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let stats = (Shape::new([x.shape[0], params.groups]), DType::F32);
        let outputs = [(x.shape.clone(), x.dtype), stats.clone(), stats];
        let [out, mean, rstd] = register_custom::<B, _, _, _>(
            "cidm_group_norm_forward",
            [x, gamma, beta],
            outputs,
            |desc| ForwardOp::<B> {
                desc,
                params,
                backend: PhantomData,
            },
        );
        (out, mean, rstd)
    }

    fn group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let outputs = [&x, &gamma, &beta].map(|input| (input.shape.clone(), input.dtype));
        let [dx, dgamma, dbeta] = register_custom::<B, _, _, _>(
            "cidm_group_norm_backward",
            [x, gamma, beta, mean, rstd, grad_out],
            outputs,
            |desc| BackwardOp::<B> {
                desc,
                params,
                backend: PhantomData,
            },
        );
        (dx, dgamma, dbeta)
    }
}
