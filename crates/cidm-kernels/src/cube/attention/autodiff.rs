//! The fused attention as one node of burn's autodiff graph, so that its gradient comes from
//! the fused backward kernels rather than from differentiating the plain attention.

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    ops::FloatTensor,
};

use super::ops::FlashOps;
use crate::autodiff_node::{needs_backward, record_fused, register_fused};

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
        register_fused::<B, _, 3>(ops, grads, |saved, grad_out, _| {
            let (grad_q, grad_k, grad_v) = B::flash_backward(
                saved.q,
                saved.k,
                saved.v,
                saved.out,
                saved.lse,
                grad_out,
                saved.scale,
            );
            [grad_q, grad_k, grad_v].map(Some)
        });
    }
}

/// Forward on `Autodiff<B>`: the fused forward on the inner tensors, recorded with the fused
/// backward as its gradient (the attention's backward is compute-bound: all is saved).
///
/// When no input needs a gradient, nothing will ask for the backward and its logsumexp: the
/// output is then the inference forward's (in f16 tuned against tensor cores, `tuned.rs`),
/// as an untracked tensor. In LoRA training that is the first transformer block's
/// self-attention, fed by frozen layers only, and every attention of a forward that runs
/// under `Autodiff` with frozen inputs.
pub(crate) fn forward<B: FlashOps>(
    q: FloatTensor<Autodiff<B>>,
    k: FloatTensor<Autodiff<B>>,
    v: FloatTensor<Autodiff<B>>,
    scale: f32,
) -> FloatTensor<Autodiff<B>> {
    if !needs_backward::<B>(&[&q, &k, &v]) {
        let out = B::flash_inference(q.primitive, k.primitive, v.primitive, scale);
        return Autodiff::<B>::from_inner(out);
    }
    let (out, lse) = B::flash_forward(
        q.primitive.clone(),
        k.primitive.clone(),
        v.primitive.clone(),
        scale,
    );
    record_fused(FlashAttentionBackward, [q, k, v], out, |[q, k, v], out| {
        SavedForward {
            q,
            k,
            v,
            out,
            lse,
            scale,
        }
    })
}
