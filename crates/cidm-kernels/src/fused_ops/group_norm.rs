//! [`GroupNormOps`], the group norm as operations of a backend (CubeCL kernels on the GPU
//! backends, loops over slices on Flex), and the fused group norm as one node of burn's
//! autodiff graph over any such backend, so that its gradient comes from the fused backward
//! rather than from differentiating the plain norm's many ops. The node keeps x, the affine
//! weights and the f32 statistics (two values per block); the plain norm keeps its centred
//! and normalised copies of x as well.

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::tensor::{backend::Backend, ops::FloatTensor};

use crate::autodiff_node::{by_input, record_fused, register_fused, NormGrads};
use crate::GroupNormOptions;

/// The settings the fused norm takes (the epsilon as the f32 it adds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupNormParams {
    pub(crate) groups: usize,
    pub(crate) epsilon: f32,
    pub(crate) silu: bool,
}

impl From<GroupNormOptions> for GroupNormParams {
    /// The caller's options as the fused norm takes them (epsilon checked by the caller).
    fn from(options: GroupNormOptions) -> Self {
        Self {
            groups: options.groups,
            epsilon: options.epsilon as f32,
            silu: options.silu,
        }
    }
}

/// A backend that runs the fused group norm on its float tensors.
pub(crate) trait GroupNormOps: Backend {
    /// `(output, mean, rstd)` of x `[batch, channels, ...]`: the output in x's dtype and
    /// shape, the statistics f32 `[batch, groups]` (`rstd = 1 / sqrt(var + epsilon)`), which
    /// only this backend's backward reads (Flex keeps the mean as two f32, `[batch, groups,
    /// 2]`).
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: GroupNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `dx` and, if `affine`, `[dgamma, dbeta]`, from the forward's inputs and statistics and
    /// the output's gradient, in the inputs' dtype.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        params: GroupNormParams,
        affine: bool,
    ) -> NormGrads<FloatTensor<Self>>;
}

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
