//! What the kernels' autodiff nodes share: handing the fused backward's results to the
//! parents that asked for them.

use burn::backend::autodiff::{grads::Gradients, ops::Ops};
use burn::tensor::{backend::Backend, ops::FloatTensor};

/// The body of a fused node's `Backward::backward`: takes the gradient of the node's output,
/// runs `backward` on the saved state and it (one gradient per input, in the inputs' order),
/// and registers each for the parent that is tracked (untracked inputs' are dropped).
pub(crate) fn register_fused<B: Backend, S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    backward: impl FnOnce(S, FloatTensor<B>) -> [FloatTensor<B>; N],
) {
    let grad_out = grads.consume::<B>(&ops.node);
    let inputs = backward(ops.state, grad_out);
    for (parent, grad) in ops.parents.into_iter().zip(inputs) {
        if let Some(node) = parent {
            grads.register::<B>(node.id, grad);
        }
    }
}
