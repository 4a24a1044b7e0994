//! The fused attention as one node of burn's autodiff graph, so that its gradient comes from
//! the fused backward kernels rather than from differentiating the plain attention.

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::NoCheckpointing},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
    Autodiff,
};
use burn::tensor::{backend::Backend, ops::FloatTensor};

use super::ops::FlashOps;
use crate::cube::gradients::register_fused;

/// What the backward needs: the inputs, the output and its logsumexp, on the inner backend.
#[derive(Clone, Debug)]
struct SavedForward<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    scale: f32,
}

#[derive(Debug)]
struct FlashAttentionBackward;

impl<B: FlashOps> Backward<B, 3> for FlashAttentionBackward {
    type State = SavedForward<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        register_fused::<B, _, 3>(ops, grads, |saved, grad_out| {
            let (grad_q, grad_k, grad_v) = B::flash_backward(
                saved.q,
                saved.k,
                saved.v,
                saved.out,
                saved.lse,
                grad_out,
                saved.scale,
            );
            [grad_q, grad_k, grad_v]
        });
    }
}

/// Forward on `Autodiff<B>`: runs the fused forward on the inner tensors and, when any input
/// needs a gradient, records a node whose backward is the fused backward. The checkpoint
/// strategy is irrelevant here: everything the backward needs is saved (it is compute-bound).
pub(crate) fn forward<B: FlashOps>(
    q: FloatTensor<Autodiff<B>>,
    k: FloatTensor<Autodiff<B>>,
    v: FloatTensor<Autodiff<B>>,
    scale: f32,
) -> FloatTensor<Autodiff<B>> {
    let (out, lse) = B::flash_forward(
        q.primitive.clone(),
        k.primitive.clone(),
        v.primitive.clone(),
        scale,
    );
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    match FlashAttentionBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = SavedForward {
                q: q.primitive,
                k: k.primitive,
                v: v.primitive,
                out: out.clone(),
                lse,
                scale,
            };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
