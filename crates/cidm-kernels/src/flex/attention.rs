//! Attention on the CPU backend Flex, in f32: a forward parallel over heads and blocks of
//! query rows, and for training (`Autodiff<Flex>`) a node that keeps only the inputs and the
//! output for its backward.
//!
//! The forward: Flex's own attention (a flash attention for long sequences) runs one head
//! after another on one thread (its products are `gemm` calls without parallelism), so on
//! a machine with n cores the attention, a sixth of an SD 1.5 UNet step, uses one. Here each
//! block of query rows of each head is a task: its scores (at most [`FORWARD_SCORES`]) by one
//! product with the keys, a row softmax, and its output by one product with the values.
//!
//! Training: burn's `Autodiff` runs attention as composed tensor operations, whose backward
//! keeps the softmax's exponentials and the probabilities: two `[batch, heads, queries,
//! keys]` matrices, 1 GiB in f32 for each of SD 1.5's self-attentions at 64x64 latents (8
//! heads, 4096 tokens), four of which lie after the first LoRA site in a training step.
//! PyTorch's CPU `scaled_dot_product_attention` (a flash attention) keeps a logsumexp per row
//! instead. Here the node keeps q, k, v and the output, and the backward recomputes the
//! probabilities a block of query rows at a time (FlashAttention's backward, each block's rows
//! softmaxed whole rather than from a stored logsumexp), the heads in parallel, so that each
//! thread holds at most two blocks of [`SCORE_BUDGET`] scores. Both ways the products are
//! `gemm` calls on one thread each, the tasks spread over rayon's pool (Flex's own).

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
    Autodiff,
};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::matmul::{product, Matrices, View, ViewMut};
use super::{dispatch, exp, tensor, vectorized, Declined, FlexKernel};
use crate::autodiff_node::{record_fused, register_fused};
use crate::{Unfused, UnfusedReason};

/// Most scores (query rows times keys) of one block of the backward: 4 MiB in f32 (two such
/// buffers per thread: probabilities and their gradient), against 512 MiB for a whole SD 1.5
/// self-attention at 64x64 (and twice that kept by burn's composed attention). Measured at
/// SD 1.5's shapes (2-core machine): 2^17 and 2^20 within 2% of each other at 4096 keys,
/// 2^20 a quarter faster at 77 keys.
const SCORE_BUDGET: usize = 1 << 20;

/// Most scores one task of the forward forms: 4 MiB in f32 (256 query rows against SD 1.5's
/// 4096 keys). gemm packs its right-hand factor on every call, so each block packs the
/// head's keys and then its values once more: larger blocks pack them fewer times, at the
/// cost of scores that no longer stay in a core's L2 cache. Measured at SD 1.5's 4096^2
/// (`gpu_bench --only attention`, 2-core VM, 2026-12-07), 2^17 to 2^21 scores: 366, 329,
/// 312, 301 and 319 ms.
const FORWARD_SCORES: usize = 1 << 20;

/// The attention on Flex or `Autodiff<Flex>` in f32 (as one node under autodiff); any other
/// backend or dtype is handed back (`Backend`, `DType`) for the caller's plain path. Shapes,
/// options and equal dtypes are checked by the caller.
pub(crate) fn run<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
) -> Result<Tensor<B, 4>, Unfused<B>> {
    let inputs = [&q, &k, &v].map(|t| t.clone().into_primitive());
    let reason = match dispatch::<B, FlexAttention, 3, 4>(inputs, scale) {
        Ok(out) => return Ok(out),
        Err(Declined::Backend) => UnfusedReason::Backend,
        Err(Declined::DType(_)) => UnfusedReason::DType {
            q: q.dtype(),
            k: k.dtype(),
            v: v.dtype(),
        },
    };
    Err(Unfused { q, k, v, reason })
}

/// The attention as a [`FlexKernel`]: inputs `[q, k, v]`, the scale as its setting.
struct FlexAttention;

impl FlexKernel<3> for FlexAttention {
    type Params = f32;

    fn plain([q, k, v]: [FlexTensor; 3], scale: f32) -> FlexTensor {
        attend(&q, &k, &v, scale)
    }

    fn autodiff(
        inputs: [FloatTensor<Autodiff<Flex>>; 3],
        scale: f32,
    ) -> FloatTensor<Autodiff<Flex>> {
        tracked(inputs, scale, SCORE_BUDGET)
    }
}

/// The forward on the inner tensors, recorded with the recomputing backward (`budget` scores
/// per block).
fn tracked(
    inputs: [FloatTensor<Autodiff<Flex>>; 3],
    scale: f32,
    budget: usize,
) -> FloatTensor<Autodiff<Flex>> {
    let [q, k, v] = inputs.each_ref().map(|t| &t.primitive);
    let out = attend(q, k, v, scale);
    let node = RecomputingBackward { budget };
    record_fused(node, inputs, out, |[q, k, v], out| SavedForward {
        q,
        k,
        v,
        out,
        scale,
    })
}

/// `softmax(q k^T * scale) v` of q `[batch, heads, len_q, dim]` and k, v `[batch, heads,
/// len_k, dim]` (any layout, read where they lie: see [`in_place_heads`]), `[batch, heads,
/// len_q, dim]` contiguous.
fn attend(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, scale: f32) -> FlexTensor {
    let shape = q.shape();
    let dims = AttentionDims {
        len_q: shape[2],
        len_k: k.shape()[2],
        dim: shape[3],
    };
    let [q, k, v] = [q, k, v].map(in_place_heads);
    tensor(forward([&q, &k, &v], shape[1], dims, scale), shape)
}

/// The sizes of one head's attention.
#[derive(Debug, Clone, Copy)]
struct AttentionDims {
    len_q: usize,
    len_k: usize,
    dim: usize,
}

/// A `[batch, heads, rows, dim]` tensor read where it lies, each head a `[rows, dim]`
/// matrix with dense rows: the model's heads are such views (`[batch, tokens, heads * dim]`
/// reshaped and transposed).
fn in_place_heads(tensor: &FlexTensor) -> Matrices {
    Matrices::new(tensor, true)
}

/// The forward over every sample and head: tasks of up to [`FORWARD_SCORES`] scores, each one
/// block of query rows of one head (a thread's consecutive tasks share the head's keys and
/// values in its cache), writing `[batch, heads, len_q, dim]`.
fn forward([q, k, v]: [&Matrices; 3], heads: usize, dims: AttentionDims, scale: f32) -> Vec<f32> {
    let AttentionDims { len_q, len_k, dim } = dims;
    let mut out = vec![0.0f32; q.tensor().shape().num_elements()];
    if out.is_empty() {
        return out;
    }
    // Blocks small enough for a few tasks per thread where the heads alone are too few.
    let per_head = (4 * rayon::current_num_threads()).div_ceil(out.len() / (len_q * dim));
    let rows = (FORWARD_SCORES / len_k.max(1))
        .min(len_q.div_ceil(per_head))
        .clamp(1, len_q);
    let heads_out = out.par_chunks_mut(len_q * dim).enumerate();
    heads_out.for_each(|(index, out)| {
        let (sample, head) = (index / heads, index % heads);
        let (q, k_t, v) = (
            q.at(&[sample, head]),
            k.at(&[sample, head]).t(),
            v.at(&[sample, head]),
        );
        let blocks = out.par_chunks_mut(rows * dim).enumerate();
        blocks.for_each_init(
            || vec![0.0f32; rows * len_k],
            |scores, (block, out)| {
                let n = out.len() / dim;
                let scores = &mut scores[..n * len_k];
                probabilities(scores, q.rows_from(block * rows, n), k_t, scale);
                let p = View::rows(scores, n, len_k);
                product(ViewMut::rows(out, n, dim, dim), p, v, 1.0, false, false);
            },
        );
    });
    out
}

/// `p = softmax(q k^T * scale)` row by row, for `q` `[n, dim]` and `k_t` `[dim, len_k]`.
fn probabilities(p: &mut [f32], q: View, k_t: View, scale: f32) {
    let ([n, _], [_, len_k]) = (q.dims(), k_t.dims());
    product(
        ViewMut::rows(p, n, len_k, len_k),
        q,
        k_t,
        scale,
        false,
        false,
    );
    vectorized(Softmax { rows: p, len_k });
}

/// The softmax of every row of `rows`, for [`vectorized`].
struct Softmax<'a> {
    rows: &'a mut [f32],
    len_k: usize,
}

impl pulp::WithSimd for Softmax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for row in self.rows.chunks_mut(self.len_k) {
            softmax_row(row);
        }
    }
}

/// `row = softmax(row)`, shifted by the row's maximum: three passes the compiler vectorises
/// (the exponential is [`exp`], the maximum and the sum run in eight lanes).
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let max = lanes(row, f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let inverse = 1.0 / lanes(row, 0.0, |sum, x| sum + x);
    for x in row.iter_mut() {
        *x *= inverse;
    }
}

/// `values` folded with `f` from `init`, in eight independent lanes (then the lanes and the
/// remainder in order): for an associative `f` (a maximum; a sum, to rounding) the same as a
/// fold, and free of the one long dependency chain that keeps a fold scalar.
#[inline(always)]
fn lanes(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        let chunk: &[f32; 8] = chunk.try_into().expect("chunks of eight");
        for lane in 0..8 {
            acc[lane] = f(acc[lane], chunk[lane]);
        }
    }
    let folded = acc.into_iter().fold(init, &f);
    chunks.remainder().iter().fold(folded, |a, &x| f(a, x))
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
            let inputs = [&saved.q, &saved.k, &saved.v, &saved.out, &grad_out].map(in_place_heads);
            let [q_shape, k_shape] = [&saved.q, &saved.k].map(|t| t.shape());
            let dims = AttentionDims {
                len_q: q_shape[2],
                len_k: k_shape[2],
                dim: q_shape[3],
            };
            let [dq, dk, dv] = backward(&inputs, q_shape[1], dims, saved.scale, self.budget);
            [(dq, q_shape), (dk, k_shape.clone()), (dv, k_shape)]
                .map(|(grad, shape)| Some(tensor(grad, shape)))
        });
    }
}

/// `[dq, dk, dv]` (`[batch, heads, len, dim]` contiguous) of `out = softmax(q k^T * scale) v`
/// given `grad_out`, from `[q, k, v, out, grad_out]` read where they lie, the heads in
/// parallel. Each head takes its query rows a block at a time, `rows` chosen so that a block
/// holds at most `budget` scores (at least one row): with `P` a block's probabilities and `D
/// = rowsum(dO * O)`, `dV += P^T dO`, `dS = P * (dO V^T - D)`, `dQ = dS K * scale` and `dK +=
/// dS^T Q * scale`.
fn backward(
    [q, k, v, out, grad_out]: &[Matrices; 5],
    heads: usize,
    dims: AttentionDims,
    scale: f32,
    budget: usize,
) -> [Vec<f32>; 3] {
    let AttentionDims { len_q, len_k, dim } = dims;
    let [mut dq, mut dk, mut dv] =
        [q, k, v].map(|t| vec![0.0f32; t.tensor().shape().num_elements()]);
    if dq.is_empty() || dk.is_empty() {
        return [dq, dk, dv];
    }
    let rows = (budget / len_k).clamp(1, len_q);
    let (per_q, per_k) = (len_q * dim, len_k * dim);
    let grads: Vec<_> = dq
        .chunks_mut(per_q)
        .zip(dk.chunks_mut(per_k))
        .zip(dv.chunks_mut(per_k))
        .collect();
    grads
        .into_par_iter()
        .enumerate()
        .for_each(|(index, ((dq, dk), dv))| {
            let (sample, head) = (index / heads, index % heads);
            let [q, k, v, out, grad_out] = [q, k, v, out, grad_out].map(|t| t.at(&[sample, head]));
            let inputs = HeadInputs {
                q,
                k,
                v,
                out,
                grad_out,
            };
            head_backward(&inputs, [dq, dk, dv], dims, scale, rows);
        });
    [dq, dk, dv]
}

/// One head's inputs to [`head_backward`], each `[rows, dim]`.
struct HeadInputs<'a> {
    q: View<'a>,
    k: View<'a>,
    v: View<'a>,
    out: View<'a>,
    grad_out: View<'a>,
}

/// [`backward`] for one head, `rows` query rows at a time.
fn head_backward(
    inputs: &HeadInputs,
    [dq, dk, dv]: [&mut [f32]; 3],
    dims: AttentionDims,
    scale: f32,
    rows: usize,
) {
    let AttentionDims { len_q, len_k, dim } = dims;
    let mut probs = vec![0.0f32; rows * len_k];
    let mut grad_scores = vec![0.0f32; rows * len_k];
    for start in (0..len_q).step_by(rows) {
        let n = rows.min(len_q - start);
        let [q, grad_out, out] =
            [inputs.q, inputs.grad_out, inputs.out].map(|t| t.rows_from(start, n));
        let p = &mut probs[..n * len_k];
        probabilities(p, q, inputs.k.t(), scale);
        let p = View::rows(p, n, len_k);
        let dv = ViewMut::rows(dv, len_k, dim, dim);
        product(dv, p.t(), grad_out, 1.0, true, false);
        let ds = &mut grad_scores[..n * len_k];
        let ds_view = ViewMut::rows(ds, n, len_k, len_k);
        product(ds_view, grad_out, inputs.v.t(), 1.0, false, false);
        for (i, ds) in ds.chunks_mut(len_k).enumerate() {
            let delta: f32 = grad_out.row(i).zip(out.row(i)).map(|(g, o)| g * o).sum();
            for (ds, p) in ds.iter_mut().zip(p.row(i)) {
                *ds = p * (*ds - delta);
            }
        }
        let ds = View::rows(ds, n, len_k);
        let dq = ViewMut::rows(&mut dq[start * dim..(start + n) * dim], n, dim, dim);
        product(dq, ds, inputs.k, scale, false, false);
        let dk = ViewMut::rows(dk, len_k, dim, dim);
        product(dk, ds.t(), q, scale, true, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::testing::{max_rel_err, normal, AB};
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{FloatDType, TensorPrimitive};
    use proptest::prelude::*;
    use pulp::WithSimd;

    /// The softmax compiled for the CPU's widest vectors (`vectorized`) gives the same bits
    /// as compiled for baseline x86-64 (pulp's scalar path), on scores from -80 to 80 in rows
    /// of 77 (a remainder past the eight lanes).
    #[test]
    fn wide_vectors_give_the_same_bits() {
        let scores: Vec<f32> = (0..77 * 40)
            .map(|i| ((i * 37) % 1601) as f32 / 10.0 - 80.0)
            .collect();
        let (mut wide, mut base) = (scores.clone(), scores);
        vectorized(Softmax {
            rows: &mut wide,
            len_k: 77,
        });
        Softmax {
            rows: &mut base,
            len_k: 77,
        }
        .with_simd(pulp::Scalar);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&wide), bits(&base));
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
        let q = normal(shape_q, seed, 0.0);
        let k = normal([batch, heads, len_k, head_dim], seed + 1, 0.0);
        let v = normal([batch, heads, len_k, head_dim], seed + 2, 0.0);
        let weight = normal(shape_q, seed + 3, 0.0).detach();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let out = match budget {
            Some(budget) => {
                let inputs = [&q, &k, &v].map(|t| t.clone().into_primitive().tensor());
                let out = tracked(inputs, scale, budget);
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
        /// attention (the path it replaces under autodiff), whether the backward takes the
        /// query rows in one block or in blocks of any size that does not divide them: both
        /// compute the same sums, in a different order, so to f32 rounding (1e-5 relative to
        /// the largest).
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
            let budget = rows * len_k;
            for budget in [usize::MAX, budget] {
                let got = outputs(shape, len_k, Some(budget), seed);
                let pairs = got.into_iter().zip(expected.clone());
                for (name, (a, b)) in ["out", "dq", "dk", "dv"].iter().zip(pairs) {
                    let err = max_rel_err(a, b);
                    prop_assert!(err < 1e-5, "{name}: {err} (budget {budget})");
                }
            }
        }
    }

    /// On `Autodiff<Flex>` in f32 the node runs, and on Flex without autodiff the forward
    /// alone, with burn's composed attention's output; in f16 the inputs come back for
    /// burn's own attention.
    #[test]
    fn runs_for_f32_on_flex() {
        let q = normal([1, 2, 5, 4], 1, 0.0);
        let k = normal([1, 2, 7, 4], 2, 0.0);
        assert!(run(q.clone(), k.clone(), k.clone(), 0.5).is_ok());
        let [q, k] = [q, k].map(Tensor::inner);
        let got = run(q.clone(), k.clone(), k.clone(), 0.5).expect("f32 on Flex");
        let options = AttentionModuleOptions {
            scale: Some(0.5),
            softcap: None,
            is_causal: false,
        };
        let want = burn::tensor::module::attention_fallback(
            q.clone(),
            k.clone(),
            k.clone(),
            None,
            None,
            options,
        );
        assert!(max_rel_err(got, want) < 1e-6);
        let half = q.cast(FloatDType::F16);
        let unfused = run(half.clone(), half.clone(), half, 0.5).unwrap_err();
        assert!(matches!(unfused.reason, UnfusedReason::DType { .. }));
    }

    /// q, k, v as the model makes them (`[batch, tokens, heads * dim]` reshaped and
    /// transposed: read in place, rows `heads * dim` apart), k also a slice of a larger
    /// tensor (read from an offset) and v flipped along the keys (negative strides: copied
    /// first), give burn's composed attention's output on the same values, and the inputs are
    /// read as they lie (not copied) where they can be.
    #[test]
    fn views_are_read_where_they_lie() {
        let (batch, heads, dim) = (2, 3, 4);
        let split = |t: Tensor<Flex, 3>| {
            let [b, n, _] = t.dims();
            t.reshape([b, n, heads, dim]).swap_dims(1, 2)
        };
        let q = split(normal([batch, 9, heads * dim], 1, 0.0).inner());
        let k = split(normal([batch, 13, heads * dim], 2, 0.0).inner()).narrow(2, 2, 11);
        let v = split(normal([batch, 11, heads * dim], 3, 0.0).inner()).flip([2]);
        let primitive = |t: &Tensor<Flex, 4>| t.clone().into_primitive().tensor();
        let [q_in, k_in, v_in] = [&q, &k, &v].map(|t| in_place_heads(&primitive(t)));
        assert!(q_in.tensor().layout().strides() == primitive(&q).layout().strides());
        assert!(k_in.tensor().layout().start_offset() > 0);
        assert!(v_in.tensor().is_contiguous());
        let got = run(q.clone(), k.clone(), v.clone(), 0.5).expect("f32 on Flex");
        let options = AttentionModuleOptions {
            scale: Some(0.5),
            softcap: None,
            is_causal: false,
        };
        let want = burn::tensor::module::attention_fallback(q, k, v, None, None, options);
        assert!(max_rel_err(got, want) < 1e-6);

        // The backward reads them (and the output's gradient, which comes back through the
        // model's transpose as a strided view) where they lie too: the gradients of the
        // tensors the views come from equal those through burn's composed attention.
        let sources = [(9, 4), (13, 5), (11, 6)]
            .map(|(len, seed)| normal([batch, len, heads * dim], seed, 0.0));
        let gradients = |fused: bool| {
            let split = |t: &Tensor<AB, 3>| {
                let [b, n, _] = t.dims();
                t.clone().reshape([b, n, heads, dim]).swap_dims(1, 2)
            };
            let q = split(&sources[0]);
            let k = split(&sources[1]).narrow(2, 2, 11);
            let v = split(&sources[2]).flip([2]);
            let out = if fused {
                run(q, k, v, 0.5).expect("f32 on Autodiff<Flex>")
            } else {
                burn::tensor::module::attention_fallback(q, k, v, None, None, options)
            };
            let out = out.swap_dims(1, 2).reshape([batch, 9, heads * dim]);
            let weight = normal([batch, 9, heads * dim], 7, 0.0).detach();
            let grads = (out * weight).sum().backward();
            sources.each_ref().map(|t| t.grad(&grads).expect("tracked"))
        };
        for (got, want) in gradients(true).into_iter().zip(gradients(false)) {
            assert!(max_rel_err(got, want) < 1e-5);
        }
    }

    /// At 520 queries and keys (the forward's two heads give each of at least one thread four
    /// tasks, so it takes the query rows in at least two blocks per head) with the backward
    /// in blocks of 100 rows, as the property above.
    #[test]
    fn long_sequences_match_too() {
        let shape = [1, 2, 520, 8];
        let expected = outputs(shape, 520, None, 7);
        let got = outputs(shape, 520, Some(100 * 520), 7);
        for (a, b) in got.into_iter().zip(expected) {
            let err = max_rel_err(a, b);
            assert!(err < 1e-5, "{err}");
        }
    }
}
