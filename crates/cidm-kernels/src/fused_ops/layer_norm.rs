//! [`LayerNormOps`], the layer norm over the last dimension as operations of a backend
//! (CubeCL kernels on the GPU backends, loops over slices on Flex), and the fused layer norm
//! as one node of burn's autodiff graph over any such backend, so that its gradient comes
//! from the fused backward rather than from differentiating the plain norm's many ops.
//! The node keeps x, the scale and two f32 statistics per row; the plain norm keeps its
//! centred and normalised copies of x as well.

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::tensor::{backend::Backend, ops::FloatTensor};

use crate::autodiff_node::{by_input, record_fused, register_fused, NormGrads};

/// The settings the fused norm takes (the epsilon as the f32 it adds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNormParams {
    pub(crate) epsilon: f32,
}

impl LayerNormParams {
    /// The caller's epsilon (checked by the caller) as the f32 the fused norm adds.
    pub(crate) fn new(epsilon: f64) -> Self {
        Self {
            epsilon: epsilon as f32,
        }
    }
}

/// A backend that runs the fused layer norm on its float tensors.
pub(crate) trait LayerNormOps: Backend {
    /// `(output, mean, rstd)` of x `[rows, dim]`: the output in x's dtype and shape, the
    /// statistics f32 `[rows]` (`rstd = 1 / sqrt(var + epsilon)`), which only this backend's
    /// backward reads (Flex keeps the mean as two f32, `[rows, 2]`).
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        params: LayerNormParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `dx` and, if `affine`, `[dgamma, dbeta]`, from the forward's input, scale and
    /// statistics and the output's gradient, in the inputs' dtype (the shift does not enter
    /// them).
    fn layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        affine: bool,
    ) -> NormGrads<FloatTensor<Self>>;
}

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
