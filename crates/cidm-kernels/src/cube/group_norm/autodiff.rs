//! The fused group norm as one node of burn's autodiff graph, so that its gradient comes from
//! the fused backward kernels rather than from differentiating the plain norm's many ops.
//! The node keeps x, the affine weights and the f32 statistics (two values per block); the
//! plain norm keeps its centred and normalised copies of x as well.

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::tensor::{backend::Backend, ops::FloatTensor};

use super::{ops::GroupNormOps, GroupNormParams};
use crate::autodiff_node::{by_input, record_fused, register_fused};

/// What the backward needs: the inputs and the statistics, on the inner backend.
#[derive(Clone, Debug)]
struct SavedForward<B: Backend> {
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    mean: FloatTensor<B>,
    rstd: FloatTensor<B>,
    params: GroupNormParams,
}

#[derive(Debug)]
struct GroupNormBackward;

impl<B: GroupNormOps> Backward<B, 3> for GroupNormBackward {
    type State = SavedForward<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        register_fused::<B, _, 3>(ops, grads, |saved, grad_out, [_, gamma, beta]| {
            by_input(B::group_norm_backward(
                saved.x,
                saved.gamma,
                saved.beta,
                saved.mean,
                saved.rstd,
                grad_out,
                saved.params,
                gamma || beta,
            ))
        });
    }
}

/// Forward on `Autodiff<B>`: the fused forward on the inner tensors, recorded with the fused
/// backward as its gradient.
pub(crate) fn forward<B: GroupNormOps>(
    x: FloatTensor<Autodiff<B>>,
    gamma: FloatTensor<Autodiff<B>>,
    beta: FloatTensor<Autodiff<B>>,
    params: GroupNormParams,
) -> FloatTensor<Autodiff<B>> {
    let (out, mean, rstd) = B::group_norm_forward(
        x.primitive.clone(),
        gamma.primitive.clone(),
        beta.primitive.clone(),
        params,
    );
    record_fused(
        GroupNormBackward,
        [x, gamma, beta],
        out,
        |[x, gamma, beta], _| SavedForward {
            x,
            gamma,
            beta,
            mean,
            rstd,
            params,
        },
    )
}
