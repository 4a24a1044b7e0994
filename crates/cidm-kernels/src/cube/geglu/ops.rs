//! [`GegluOps`] on the GEGLU kernels, for burn-cubecl's
//! `CubeBackend` directly and under burn-fusion (as a custom operation of the fusion stream).

use burn::tensor::ops::FloatTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{Fusion, FusionBackend};

use super::launch;
use crate::cube::fusion_op::register_custom;
use crate::fused_ops::geglu::GegluOps;

impl<R, F, I, BT> GegluOps for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn geglu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        launch::forward(x)
    }

    fn geglu_backward(x: FloatTensor<Self>, grad_out: FloatTensor<Self>) -> FloatTensor<Self> {
        launch::backward(x, grad_out)
    }
}

impl<B: FusionBackend + GegluOps> GegluOps for Fusion<B> {
    fn geglu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let mut shape = x.shape.clone();
        shape[1] /= 2;
        let outputs = [(shape, x.dtype)];
        let [out] =
            register_custom::<B, _, 1, 1>("cidm_geglu_forward", [x], outputs, (), |[x], ()| {
                [B::geglu_forward(x)]
            });
        out
    }

    fn geglu_backward(x: FloatTensor<Self>, grad_out: FloatTensor<Self>) -> FloatTensor<Self> {
        let outputs = [(x.shape.clone(), x.dtype)];
        let [grad_x] = register_custom::<B, _, 2, 1>(
            "cidm_geglu_backward",
            [x, grad_out],
            outputs,
            (),
            |[x, grad_out], ()| [B::geglu_backward(x, grad_out)],
        );
        grad_x
    }
}
