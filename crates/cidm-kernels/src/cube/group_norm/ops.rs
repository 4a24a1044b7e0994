//! [`GroupNormOps`] on the group-norm kernels, for burn-cubecl's
//! `CubeBackend` directly and under burn-fusion (as a custom operation of the fusion stream).

use burn::tensor::{ops::FloatTensor, DType, Shape};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{Fusion, FusionBackend};

use super::launch;
use crate::autodiff_node::NormGrads;
use crate::cube::fusion_op::register_custom;
use crate::fused_ops::group_norm::{GroupNormOps, GroupNormParams};

impl<R, F, I, BT> GroupNormOps for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
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
        affine: bool,
    ) -> NormGrads<FloatTensor<Self>> {
        launch::backward(x, gamma, beta, mean, rstd, grad_out, params, affine)
    }
}

impl<B: FusionBackend + GroupNormOps> GroupNormOps for Fusion<B> {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let stats = (Shape::new([x.shape[0], params.groups]), DType::F32);
        let outputs = [(x.shape.clone(), x.dtype), stats.clone(), stats];
        let [out, mean, rstd] = register_custom::<B, _, 3, 3>(
            "cidm_group_norm_forward",
            [x, gamma, beta],
            outputs,
            params,
            |[x, gamma, beta], params| {
                let (out, mean, rstd) = B::group_norm_forward(x, gamma, beta, params);
                [out, mean, rstd]
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
        affine: bool,
    ) -> NormGrads<FloatTensor<Self>> {
        // The gradients are shaped like x, gamma and beta. The inputs are moved into the
        // operation (a clone kept alive would mark them read-only in the stream).
        let [grad_x, grad_gamma, grad_beta] =
            [&x, &gamma, &beta].map(|input| (input.shape.clone(), input.dtype));
        let inputs = [x, gamma, beta, mean, rstd, grad_out];
        // One operation per set of outputs: the stream's operations have fixed outputs.
        if !affine {
            let [dx] = register_custom::<B, _, 6, 1>(
                "cidm_group_norm_input_grad",
                inputs,
                [grad_x],
                params,
                |[x, gamma, beta, mean, rstd, grad_out], params| {
                    let (dx, _) =
                        B::group_norm_backward(x, gamma, beta, mean, rstd, grad_out, params, false);
                    [dx]
                },
            );
            return (dx, None);
        }
        let [dx, dgamma, dbeta] = register_custom::<B, _, 6, 3>(
            "cidm_group_norm_backward",
            inputs,
            [grad_x, grad_gamma, grad_beta],
            params,
            |[x, gamma, beta, mean, rstd, grad_out], params| {
                let (dx, affine) =
                    B::group_norm_backward(x, gamma, beta, mean, rstd, grad_out, params, true);
                let [dgamma, dbeta] = affine.expect("asked for the affine gradients");
                [dx, dgamma, dbeta]
            },
        );
        (dx, Some([dgamma, dbeta]))
    }
}
