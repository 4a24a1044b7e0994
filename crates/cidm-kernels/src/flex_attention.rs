//! Attention for training on the CPU backend (`Autodiff<Flex>`), keeping only its inputs and
//! output for the backward.
//!
//! burn's `Autodiff` runs attention as composed tensor operations, whose backward keeps the
//! softmax's exponentials and the probabilities: two `[batch, heads, queries, keys]` matrices,
//! 1 GiB in f32 for each of SD 1.5's self-attentions at 64x64 latents (8 heads, 4096 tokens),
//! four of which lie after the first LoRA site in a training step. PyTorch's CPU
//! `scaled_dot_product_attention` (a flash attention) keeps a logsumexp per row instead.
//! Here the node's forward is Flex's own attention (its flash attention for long sequences,
//! as in inference), the node keeps q, k, v and the output, and the backward recomputes the
//! probabilities a block of query rows at a time (FlashAttention's backward, each block's rows
//! softmaxed whole rather than from a stored logsumexp), so that at most [`SCORE_BUDGET`]
//! scores exist at once.

use std::any::Any;

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::backend::Flex;
use burn::tensor::{
    activation::softmax,
    backend::Backend,
    module::attention,
    ops::{AttentionModuleOptions, FloatTensor},
    DType, Tensor, TensorPrimitive,
};

use crate::autodiff_node::{record_fused, register_fused};
use crate::{Unfused, UnfusedReason};

/// Most scores (query rows times keys, over all batches and heads) the backward forms at once:
/// 16 MiB in f32, against 512 MiB for a whole SD 1.5 self-attention at 64x64.
const SCORE_BUDGET: usize = 1 << 22;

/// The attention on `Autodiff<Flex>` as one node (f32 only, the CPU's dtype here); any other
/// backend or dtype is handed back (`Backend`, `DType`) for the caller's plain path. Shapes,
/// options and equal dtypes are checked by the caller.
pub(crate) fn run<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
) -> Result<Tensor<B, 4>, Unfused<B>> {
    let dtype = q.dtype();
    let reason = match [&q, &k, &v].map(on_autodiff_flex) {
        _ if dtype != DType::F32 => UnfusedReason::DType {
            q: dtype,
            k: dtype,
            v: dtype,
        },
        [Some(qa), Some(ka), Some(va)] => {
            let node = RecomputingBackward {
                budget: SCORE_BUDGET,
            };
            let out: Box<dyn Any> = Box::new(forward(node, [qa, ka, va], scale));
            // `B` is `Autodiff<Flex>` here, so the cast back always succeeds.
            match out.downcast::<FloatTensor<B>>() {
                Ok(out) => return Ok(Tensor::from_primitive(TensorPrimitive::Float(*out))),
                Err(_) => UnfusedReason::Backend,
            }
        }
        _ => UnfusedReason::Backend,
    };
    Err(Unfused { q, k, v, reason })
}

/// What the backward needs: the inputs and the output, on Flex.
#[derive(Clone, Debug)]
struct SavedForward {
    q: FloatTensor<Flex>,
    k: FloatTensor<Flex>,
    v: FloatTensor<Flex>,
    out: FloatTensor<Flex>,
    scale: f32,
}

/// The node's backward: [`backward`] with `budget` scores per block.
#[derive(Debug)]
struct RecomputingBackward {
    budget: usize,
}

impl Backward<Flex, 3> for RecomputingBackward {
    type State = SavedForward;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        register_fused::<Flex, _, 3>(ops, grads, |saved, grad_out, _| {
            let [q, k, v, out, grad_out] =
                [saved.q, saved.k, saved.v, saved.out, grad_out].map(float);
            let grads = backward(q, k, v, out, grad_out, saved.scale, self.budget);
            grads.map(|g| Some(g.into_primitive().tensor()))
        });
    }
}

/// `tensor`'s primitive if `B` is `Autodiff<Flex>`.
fn on_autodiff_flex<B: Backend>(tensor: &Tensor<B, 4>) -> Option<FloatTensor<Autodiff<Flex>>> {
    match tensor.clone().into_primitive() {
        TensorPrimitive::Float(primitive) => (&primitive as &dyn Any)
            .downcast_ref::<FloatTensor<Autodiff<Flex>>>()
            .cloned(),
        TensorPrimitive::QFloat(_) => None,
    }
}

/// Flex's attention on the inner tensors of `[q, k, v]`, recorded with `node` as backward.
fn forward(
    node: RecomputingBackward,
    inputs: [FloatTensor<Autodiff<Flex>>; 3],
    scale: f32,
) -> FloatTensor<Autodiff<Flex>> {
    let options = AttentionModuleOptions {
        scale: Some(f64::from(scale)),
        softcap: None,
        is_causal: false,
    };
    let [q, k, v] = inputs.each_ref().map(|t| float(t.primitive.clone()));
    let out = attention(q, k, v, None, None, options)
        .into_primitive()
        .tensor();
    record_fused(node, inputs, out, |[q, k, v], out| SavedForward {
        q,
        k,
        v,
        out,
        scale,
    })
}

/// `[dq, dk, dv]` of `out = softmax(q k^T * scale) v` given `grad_out`, with the scores and
/// probabilities formed for `rows` query rows at a time, `rows` chosen so that a block holds
/// at most `budget` scores (at least one row): with `P` a block's probabilities and
/// `D = rowsum(dO * O)`, `dV += P^T dO`, `dS = P * (dO V^T - D)`, `dQ = dS K * scale` and
/// `dK += dS^T Q * scale`.
///
/// `dO V^T - D` is one product, of dO's rows with `-D` appended and V's with a 1 appended:
/// subtracting the broadcast `D` from the block took Flex's strided path for broadcasts, 7%
/// of an SD 1.5 training step. The scale is applied to Q (and to dQ) once, not to every
/// block of scores.
fn backward(
    q: Tensor<Flex, 4>,
    k: Tensor<Flex, 4>,
    v: Tensor<Flex, 4>,
    out: Tensor<Flex, 4>,
    grad_out: Tensor<Flex, 4>,
    scale: f32,
    budget: usize,
) -> [Tensor<Flex, 4>; 3] {
    let [batch, heads, len_q, head_dim] = q.dims();
    let len_k = k.dims()[2];
    let rows = (budget / (batch * heads * len_k).max(1)).clamp(1, len_q);
    let neg_delta = (grad_out.clone() * out).sum_dim(3).neg();
    let grad_out_and_delta = Tensor::cat(vec![grad_out.clone(), neg_delta], 3);
    let ones = Tensor::ones([batch, heads, len_k, 1], &v.device());
    let v_and_ones_t = Tensor::cat(vec![v.clone(), ones], 3).swap_dims(2, 3);
    let q = q.mul_scalar(scale);
    let k_t = k.clone().swap_dims(2, 3);
    let mut grad_q = Vec::with_capacity(len_q.div_ceil(rows));
    let mut grad_k = k.zeros_like();
    let mut grad_v = v.zeros_like();
    for start in (0..len_q).step_by(rows) {
        let range = start..(start + rows).min(len_q);
        let block = [0..batch, 0..heads, range.clone(), 0..head_dim];
        let q_block = q.clone().slice(block.clone());
        let probs = softmax(q_block.clone().matmul(k_t.clone()), 3);
        let grad_out_block = grad_out.clone().slice(block);
        grad_v = grad_v + probs.clone().swap_dims(2, 3).matmul(grad_out_block);
        let with_delta =
            grad_out_and_delta
                .clone()
                .slice([0..batch, 0..heads, range, 0..head_dim + 1]);
        let grad_scores = probs * with_delta.matmul(v_and_ones_t.clone());
        grad_q.push(grad_scores.clone().matmul(k.clone()));
        grad_k = grad_k + grad_scores.swap_dims(2, 3).matmul(q_block);
    }
    [Tensor::cat(grad_q, 2).mul_scalar(scale), grad_k, grad_v]
}

fn float(primitive: FloatTensor<Flex>) -> Tensor<Flex, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{FloatDType, TensorData};
    use proptest::prelude::*;

    type AB = Autodiff<Flex>;

    /// Standard normal values from `seed` (splitmix64 and Box-Muller): the same for any test
    /// order, unlike the backend's global generator, which tests running in parallel reseed.
    fn random(shape: [usize; 4], seed: u64) -> Tensor<AB, 4> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut uniform = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let values: Vec<f32> = (0..shape.iter().product())
            .map(|_| {
                let (u, v) = (1.0 - uniform(), uniform());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect();
        Tensor::<AB, 4>::from_data(TensorData::new(values, shape), &Default::default())
            .require_grad()
    }

    /// The largest difference relative to the largest expected value, or absolute below 1
    /// (with one key the softmax is constant and q's gradient is 0 up to rounding).
    fn max_rel_err(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) -> f32 {
        let scale: f32 = b.clone().abs().max().into_scalar();
        let err: f32 = (a - b).abs().max().into_scalar();
        err / scale.max(1.0)
    }

    /// Output and gradients of `attention`, through the node (`budget` scores per block) or
    /// through burn's composed attention (the reference).
    fn outputs(
        shape_q: [usize; 4],
        len_k: usize,
        budget: Option<usize>,
        seed: u64,
    ) -> Vec<Tensor<Flex, 4>> {
        let [batch, heads, _, head_dim] = shape_q;
        let q = random(shape_q, seed);
        let k = random([batch, heads, len_k, head_dim], seed + 1);
        let v = random([batch, heads, len_k, head_dim], seed + 2);
        let weight = random(shape_q, seed + 3).detach();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let out = match budget {
            Some(budget) => {
                let inputs = [&q, &k, &v].map(|t| t.clone().into_primitive().tensor());
                let out = forward(RecomputingBackward { budget }, inputs, scale);
                Tensor::<AB, 4>::from_primitive(TensorPrimitive::Float(out))
            }
            None => {
                let options = AttentionModuleOptions {
                    scale: Some(f64::from(scale)),
                    softcap: None,
                    is_causal: false,
                };
                burn::tensor::module::attention_fallback(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    None,
                    options,
                )
            }
        };
        let grads = (out.clone() * weight).sum().backward();
        let grad = |t: &Tensor<AB, 4>| t.grad(&grads).unwrap();
        vec![out.inner(), grad(&q), grad(&k), grad(&v)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The node's output and the gradients of q, k and v equal those of burn's composed
        /// attention (the path it replaces), whether the backward takes the query rows in one
        /// block or in blocks of any size that does not divide them: both compute the same
        /// sums, in a different order, so to f32 rounding (1e-5 relative to the largest).
        #[test]
        fn gradients_equal_the_composed_attentions(
            batch in 1usize..3,
            heads in 1usize..3,
            len_q in 1usize..40,
            len_k in 1usize..40,
            head_dim in 1usize..17,
            rows in 1usize..12,
            seed in 0u64..1000,
        ) {
            let shape = [batch, heads, len_q, head_dim];
            let expected = outputs(shape, len_k, None, seed);
            let budget = rows * batch * heads * len_k;
            for budget in [usize::MAX, budget] {
                let got = outputs(shape, len_k, Some(budget), seed);
                for (name, (a, b)) in ["out", "dq", "dk", "dv"].iter().zip(got.into_iter().zip(expected.clone())) {
                    let err = max_rel_err(a, b);
                    prop_assert!(err < 1e-5, "{name}: {err} (budget {budget})");
                }
            }
        }
    }

    /// On `Autodiff<Flex>` in f32 the node runs (no composed attention); on Flex without
    /// autodiff, and in f16, the inputs come back for burn's own attention.
    #[test]
    fn runs_only_for_f32_training_on_flex() {
        let q = random([1, 2, 5, 4], 1);
        assert!(run(q.clone(), q.clone(), q.clone(), 0.5).is_ok());
        let plain = q.clone().inner();
        let unfused = run(plain.clone(), plain.clone(), plain, 0.5).unwrap_err();
        assert_eq!(unfused.reason, UnfusedReason::Backend);
        let half = q.cast(FloatDType::F16);
        let unfused = run(half.clone(), half.clone(), half, 0.5).unwrap_err();
        assert!(matches!(unfused.reason, UnfusedReason::DType { .. }));
    }

    /// At 520 queries and keys (more scores per head than Flex computes naively, so its
    /// forward is its flash attention) in blocks of 100 rows, as the property above.
    #[test]
    fn long_sequences_match_too() {
        let shape = [1, 2, 520, 8];
        let expected = outputs(shape, 520, None, 7);
        let got = outputs(shape, 520, Some(100 * 2 * 520), 7);
        for (a, b) in got.into_iter().zip(expected) {
            let err = max_rel_err(a, b);
            assert!(err < 1e-5, "{err}");
        }
    }
}
