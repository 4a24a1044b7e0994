//! [`LayerNormOps`] on the layer-norm kernels, for burn-cubecl's
//! `CubeBackend` directly and under burn-fusion (as a custom operation of the fusion stream).

use burn::tensor::{ops::FloatTensor, DType, Shape};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{Fusion, FusionBackend};

use super::launch;
use crate::autodiff_node::NormGrads;
use crate::cube::fusion_op::register_custom;
use crate::fused_ops::layer_norm::{LayerNormOps, LayerNormParams};

impl<R, F, I, BT> LayerNormOps for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: LayerNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        launch::forward(x, gamma, beta, params)
    }

    fn layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        affine: bool,
    ) -> NormGrads<FloatTensor<Self>> {
        launch::backward(x, gamma, mean, rstd, grad_out, affine)
    }
}

impl<B: FusionBackend + LayerNormOps> LayerNormOps for Fusion<B> {
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: LayerNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let stats = (Shape::new([x.shape[0]]), DType::F32);
        let outputs = [(x.shape.clone(), x.dtype), stats.clone(), stats];
        let [out, mean, rstd] = register_custom::<B, _, 3, 3>(
            "cidm_layer_norm_forward",
            [x, gamma, beta],
            outputs,
            params,
            |[x, gamma, beta], params| {
                let (out, mean, rstd) = B::layer_norm_forward(x, gamma, beta, params);
                [out, mean, rstd]
            },
        );
        (out, mean, rstd)
    }

    fn layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        affine: bool,
    ) -> NormGrads<FloatTensor<Self>> {
        // The gradients are shaped like x and gamma (beta's like gamma's). The inputs are
        // moved into the operation (a clone kept alive would mark them read-only in the
        // stream).
        let [grad_x, grad_weight] = [&x, &gamma].map(|input| (input.shape.clone(), input.dtype));
        let inputs = [x, gamma, mean, rstd, grad_out];
        // One operation per set of outputs: the stream's operations have fixed outputs.
        if !affine {
            let [dx] = register_custom::<B, _, 5, 1>(
                "cidm_layer_norm_input_grad",
                inputs,
                [grad_x],
                (),
                |[x, gamma, mean, rstd, grad_out], ()| {
                    [B::layer_norm_backward(x, gamma, mean, rstd, grad_out, false).0]
                },
            );
            return (dx, None);
        }
        let [dx, dgamma, dbeta] = register_custom::<B, _, 5, 3>(
            "cidm_layer_norm_backward",
            inputs,
            [grad_x, grad_weight.clone(), grad_weight],
            (),
            |[x, gamma, mean, rstd, grad_out], ()| {
                let (dx, affine) = B::layer_norm_backward(x, gamma, mean, rstd, grad_out, true);
                let [dgamma, dbeta] = affine.expect("asked for the affine gradients");
                [dx, dgamma, dbeta]
            },
        );
        (dx, Some([dgamma, dbeta]))
    }
}
