//! The fused layer norm as one node of burn's autodiff graph, so that its gradient comes from
//! the fused backward kernels rather than from differentiating the plain norm's many ops.
//! The node keeps x, the scale and two f32 statistics per row; the plain norm keeps its
//! centred and normalised copies of x as well.

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::tensor::{backend::Backend, ops::FloatTensor};

use super::{ops::LayerNormOps, LayerNormParams};
use crate::autodiff_node::{by_input, record_fused, register_fused};

/// What the backward needs: the input, the scale and the statistics, on the inner backend.
#[derive(Clone, Debug)]
struct SavedForward<B: Backend> {
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    rstd: FloatTensor<B>,
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: LayerNormOps> Backward<B, 3> for LayerNormBackward {
    type State = SavedForward<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        register_fused::<B, _, 3>(ops, grads, |saved, grad_out, [_, gamma, beta]| {
            by_input(B::layer_norm_backward(
                saved.x,
                saved.gamma,
                saved.mean,
                saved.rstd,
                grad_out,
                gamma || beta,
            ))
        });
    }
}

/// Forward on `Autodiff<B>`: the fused forward on the inner tensors, recorded with the fused
/// backward as its gradient.
pub(crate) fn forward<B: LayerNormOps>(
    x: FloatTensor<Autodiff<B>>,
    gamma: FloatTensor<Autodiff<B>>,
    beta: FloatTensor<Autodiff<B>>,
    params: LayerNormParams,
) -> FloatTensor<Autodiff<B>> {
    let (out, mean, rstd) = B::layer_norm_forward(
        x.primitive.clone(),
        gamma.primitive.clone(),
        beta.primitive.clone(),
        params,
    );
    record_fused(
        LayerNormBackward,
        [x, gamma, beta],
        out,
        |[x, gamma, _beta], _| SavedForward {
            x,
            gamma,
            mean,
            rstd,
        },
    )
}
