//! [`GegluOps`], GEGLU as operations of a backend (CubeCL kernels on the GPU backends, loops
//! over slices on Flex), and the fused GEGLU as one node of burn's autodiff graph over any
//! such backend: its backward is one pass that writes both halves of the input's gradient,
//! where the plain ops' backward runs the product's and GELU's backward and then places each
//! half's gradient into a zero tensor of the input's shape and adds the two. The node keeps
//! the input alone.

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::tensor::{backend::Backend, ops::FloatTensor};

use crate::autodiff_node::{record_fused, register_fused};

/// A backend that runs the fused GEGLU on its float tensors.
pub(crate) trait GegluOps: Backend {
    /// `hidden * gelu(gate)` of x `[rows, 2 n]` (`[hidden, gate]` its two halves, exact GELU),
    /// `[rows, n]` in x's dtype.
    fn geglu_forward(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// x's gradient, both halves, from x and the output's gradient (GELU's exact derivative).
    fn geglu_backward(x: FloatTensor<Self>, grad_out: FloatTensor<Self>) -> FloatTensor<Self>;
}

#[derive(Debug)]
struct GegluBackward;

impl<B: GegluOps> Backward<B, 1> for GegluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        register_fused::<B, _, 1>(ops, grads, |x, grad_out, _| {
            [Some(B::geglu_backward(x, grad_out))]
        });
    }
}

/// Forward on `Autodiff<B>`: the fused forward on the inner tensor, recorded with the fused
/// backward as its gradient.
pub(crate) fn forward<B: GegluOps>(x: FloatTensor<Autodiff<B>>) -> FloatTensor<Autodiff<B>> {
    let out = B::geglu_forward(x.primitive.clone());
    record_fused(GegluBackward, [x], out, |[x], _| x)
}
