//! What the kernels' autodiff nodes share (the CubeCL kernels' and the CPU attention's):
//! recording a fused forward as one node of burn's graph, and handing the fused backward's
//! results to the parents that asked for them.

use burn::backend::autodiff::{
    checkpoint::strategy::NoCheckpointing,
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
    Autodiff,
};
use burn::tensor::{backend::Backend, ops::FloatTensor};

/// A norm's backward: x's gradient and, where they were asked for, the scale's and the
/// shift's. Frozen norms (every norm of a LoRA-trained UNet) ask for none, and their kernels
/// are skipped, as PyTorch's norm backward skips them by its output mask.
pub(crate) type NormGrads<T> = (T, Option<[T; 2]>);

/// A norm's gradients in its inputs' order `[x, scale, shift]`, for [`register_fused`].
pub(crate) fn by_input<T>((x, affine): NormGrads<T>) -> [Option<T>; 3] {
    let [gamma, beta] = affine.map_or([None, None], |grads| grads.map(Some));
    [Some(x), gamma, beta]
}

/// The fused forward's output `out` (computed by the caller on `inputs`' inner tensors) as a
/// tensor of `Autodiff<B>`: when any input needs a gradient, a node with `backward` and the
/// state `save` builds from the inputs and the output; else a leaf. The checkpoint strategy
/// is irrelevant here: the state holds everything the backward needs.
pub(crate) fn record_fused<B: Backend, K: Backward<B, N>, const N: usize>(
    backward: K,
    inputs: [FloatTensor<Autodiff<B>>; N],
    out: FloatTensor<B>,
    save: impl FnOnce([FloatTensor<B>; N], FloatTensor<B>) -> K::State,
) -> FloatTensor<Autodiff<B>> {
    let nodes = inputs.each_ref().map(|input| input.node.clone());
    match backward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = save(inputs.map(|input| input.primitive), out.clone());
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// Whether a fused node on `inputs` would be part of the graph: by burn's rule for an
/// operation's requirement, when any input needs a gradient (its own or one upstream).
#[cfg(feature = "cube")]
pub(crate) fn needs_backward<B: Backend>(inputs: &[&FloatTensor<Autodiff<B>>]) -> bool {
    inputs.iter().any(|input| !input.node.requirement.is_none())
}

/// The body of a fused node's `Backward::backward`: takes the gradient of the node's output,
/// runs `backward` on the saved state, it and which inputs are tracked (one gradient per
/// input, in the inputs' order; `None` where the backward skipped one that nothing asked
/// for, as the norms do with the gradients of frozen weights), and registers each for the
/// parent that is tracked (untracked inputs' are dropped).
pub(crate) fn register_fused<B: Backend, S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    backward: impl FnOnce(S, FloatTensor<B>, [bool; N]) -> [Option<FloatTensor<B>>; N],
) {
    let grad_out = grads.consume::<B>(&ops.node);
    let tracked = ops.parents.each_ref().map(Option::is_some);
    let inputs = backward(ops.state, grad_out, tracked);
    for (parent, grad) in ops.parents.into_iter().zip(inputs) {
        if let (Some(node), Some(grad)) = (parent, grad) {
            grads.register::<B>(node.id, grad);
        }
    }
}
