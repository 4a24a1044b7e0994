//! The linear layer `x W + b` on Flex: one product into an output that starts as the bias,
//! forward and, as one node of `Autodiff<Flex>`, backward.
//!
//! Why our own: Flex's matmul allocates its output with `FlexTensor::empty`, which zeroes a
//! byte vector and then copies it into a fresh allocation of the alignment its storage asks
//! for, so every product's output is written three times and two fresh buffers are faulted
//! in page by page before the product starts (a `perf` profile of an SD 1.5 LoRA step put
//! seven in ten of the step's page faults there); the bias is then one more operation,
//! allocation and pass. Here the output is allocated once, filled with the bias, and the
//! product added into it, and the backward's products write their fresh buffers directly.

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, ops::FloatTensor, Shape, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::matmul::{product, Matrices, View, ViewMut};
use super::{
    contiguous, dispatch, register_with_optional_bias, tensor, values, with_optional_bias,
    Declined, FlexKernel,
};
use crate::autodiff_node::record_fused;
use crate::LinearUnfused;

/// Values of the output one task of the bias's fill writes, and of the output's gradient
/// whose column sums one task adds up for the bias's gradient (whole rows, at least one):
/// enough that rayon's hand-off is small beside the work.
const TASK_VALUES: usize = 1 << 16;

/// The linear layer on `B` if it is Flex or `Autodiff<Flex>`: x `[rows, in]`, weight `[in,
/// out]`, bias `[out]` if any (shapes checked by the caller, none of them empty); `Backend`
/// for any other backend, `DType` for another dtype than f32.
pub(crate) fn fused<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Result<Tensor<B, 2>, LinearUnfused> {
    let [x, weight] = [x, weight].map(Tensor::into_primitive);
    let result = match bias {
        Some(bias) => dispatch::<B, FlexLinear, 3, 2>([x, weight, bias.into_primitive()], ()),
        None => dispatch::<B, FlexLinear, 2, 2>([x, weight], ()),
    };
    result.map_err(|declined| match declined {
        Declined::Backend => LinearUnfused::Backend,
        Declined::DType(dtype) => LinearUnfused::DType { dtype },
    })
}

/// The linear layer as a [`FlexKernel`]: inputs `[x, weight, bias]` (`N = 3`) or `[x,
/// weight]` (`N = 2`).
struct FlexLinear;

impl<const N: usize> FlexKernel<N> for FlexLinear {
    type Params = ();

    fn plain(inputs: [FlexTensor; N], (): ()) -> FlexTensor {
        let (x, weight, bias) = with_optional_bias(inputs);
        forward(&x, &weight, bias.as_ref())
    }

    fn autodiff(inputs: [FloatTensor<Autodiff<Flex>>; N], (): ()) -> FloatTensor<Autodiff<Flex>> {
        let (x, weight, bias) = with_optional_bias(inputs.each_ref());
        let out = forward(
            &x.primitive,
            &weight.primitive,
            bias.map(|bias| &bias.primitive),
        );
        // x is kept only for a trained weight's gradient, as burn's matmul keeps it: with a
        // frozen one (LoRA training) the node would otherwise hold every layer's input until
        // its backward.
        let weight_tracked = !weight.node.requirement.is_none();
        record_fused(LinearBackward, inputs, out, |inputs, _| {
            let (x, weight, _bias) = with_optional_bias(inputs);
            Saved {
                x_shape: x.shape(),
                x: weight_tracked.then_some(x),
                weight,
            }
        })
    }
}

/// What the backward needs: x's shape, x itself where the weight is trained (for its
/// gradient), and the weight (for x's).
#[derive(Debug, Clone)]
struct Saved {
    x_shape: Shape,
    x: Option<FlexTensor>,
    weight: FlexTensor,
}

#[derive(Debug)]
struct LinearBackward;

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        register_with_optional_bias(ops, grads, |saved, grad_out, tracked| {
            backward(&saved, &grad_out, tracked)
        });
    }
}

/// A matrix read where it lies (see [`Matrices`]).
fn matrix(tensor: &FlexTensor) -> Matrices {
    Matrices::new(tensor, false)
}

/// `lhs rhs` into a fresh `[rows, columns]` buffer, on rayon's pool when it is large.
fn fresh_product(lhs: View, rhs: View) -> Vec<f32> {
    let ([rows, _], [_, columns]) = (lhs.dims(), rhs.dims());
    let mut out = vec![0.0f32; rows * columns];
    let dst = ViewMut::rows(&mut out, rows, columns, columns);
    product(dst, lhs, rhs, 1.0, false, true);
    out
}

/// Whole rows of `columns` values in about [`TASK_VALUES`] values, at least one.
fn task_rows(columns: usize) -> usize {
    (TASK_VALUES / columns).max(1)
}

/// `out = x weight + bias`: the bias written into every row, then the product added; without
/// a bias the product written directly.
fn forward(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>) -> FlexTensor {
    let [x, weight] = [x, weight].map(matrix);
    let (lhs, rhs) = (x.at(&[]), weight.at(&[]));
    let ([rows, _], [_, columns]) = (lhs.dims(), rhs.dims());
    let Some(bias) = bias.map(contiguous) else {
        return tensor(fresh_product(lhs, rhs), [rows, columns]);
    };
    let bias = values(&bias);
    let mut out = vec![0.0f32; rows * columns];
    out.par_chunks_mut(task_rows(columns) * columns)
        .for_each(|block| {
            block
                .chunks_mut(columns)
                .for_each(|row| row.copy_from_slice(bias));
        });
    let dst = ViewMut::rows(&mut out, rows, columns, columns);
    product(dst, lhs, rhs, 1.0, true, true);
    tensor(out, [rows, columns])
}

/// The gradients `[x, weight, bias]` from the output's gradient, each where `tracked` asks
/// for it: x's by the weight's transpose, the weight's by x's transpose times the output's
/// gradient, the bias's the output's gradient summed over rows (in f64).
fn backward(
    saved: &Saved,
    grad_out: &FlexTensor,
    [x_tracked, weight_tracked, bias_tracked]: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let grad_out = matrix(grad_out);
    let dy = grad_out.at(&[]);
    let columns = dy.dims()[1];
    let dx = x_tracked.then(|| {
        let weight = matrix(&saved.weight);
        tensor(fresh_product(dy, weight.at(&[]).t()), saved.x_shape.clone())
    });
    // x was saved only if the weight was tracked then, which is when it is now.
    let dw = saved.x.as_ref().filter(|_| weight_tracked).map(|x| {
        let x = matrix(x);
        tensor(fresh_product(x.at(&[]).t(), dy), saved.weight.shape())
    });
    let db = bias_tracked.then(|| {
        let dy = contiguous(grad_out.tensor());
        let dy = values(&dy);
        // Each task's partial sums, then their sum in the tasks' order: the same bits
        // whichever thread ran which task (a tree of rayon's `reduce` is shaped by stealing).
        let partials: Vec<Vec<f64>> = dy
            .par_chunks(task_rows(columns) * columns)
            .map(|block| {
                let mut sums = vec![0.0f64; columns];
                for row in block.chunks(columns) {
                    for (sum, &v) in sums.iter_mut().zip(row) {
                        *sum += f64::from(v);
                    }
                }
                sums
            })
            .collect();
        let mut sums = vec![0.0f64; columns];
        for partial in partials {
            sums.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
        }
        tensor(sums.into_iter().map(|s| s as f32).collect(), [columns])
    });
    [dx, dw, db]
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{DType, FloatDType, Tensor, TensorData};
    use proptest::prelude::*;

    use super::{fused, TASK_VALUES};
    use crate::flex::matmul::PARALLEL_WORK;
    use crate::flex::testing::{max_rel_err, normal, AB};
    use crate::LinearUnfused;

    /// One layer's sizes, `[rows, in, out]`, whether it has a bias, and how its inputs lie: x
    /// and the weight as transposes of row-major leaves (strided views, column-major) where
    /// asked.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        sizes: [usize; 3],
        biased: bool,
        x_transposed: bool,
        weight_transposed: bool,
        train: bool,
        seed: u64,
    }

    /// A `[rows, columns]` leaf, or the transpose of a `[columns, rows]` one, with the leaf
    /// (whose gradient the test reads) as the second value.
    fn matrix(
        [rows, columns]: [usize; 2],
        transposed: bool,
        seed: u64,
    ) -> (Tensor<AB, 2>, Tensor<AB, 2>) {
        if transposed {
            let leaf = normal([columns, rows], seed, 0.0);
            (leaf.clone().transpose(), leaf)
        } else {
            let leaf = normal([rows, columns], seed, 0.0);
            (leaf.clone(), leaf)
        }
    }

    /// Output and the gradients of x, the weight and the bias of `sum(out * w)`, through the
    /// product or, as the reference, through burn's matmul and add in f64 (differentiated by
    /// burn's autodiff); the weight and the bias frozen unless `train`.
    fn run(case: Case, ours: bool) -> Vec<Tensor<Flex, 2>> {
        let [rows, d_in, d_out] = case.sizes;
        let (x, x_leaf) = matrix([rows, d_in], case.x_transposed, case.seed);
        let (weight, weight_leaf) = matrix([d_in, d_out], case.weight_transposed, case.seed + 1);
        let bias = case
            .biased
            .then(|| normal::<1>([d_out], case.seed + 2, 0.0));
        // Frozen: leaves without `require_grad`.
        let (weight, weight_leaf, bias) = if case.train {
            (weight, weight_leaf, bias)
        } else {
            let frozen = |t: Tensor<AB, 2>| Tensor::from_inner(t.inner());
            (
                frozen(weight),
                frozen(weight_leaf),
                bias.map(|bias| Tensor::from_inner(bias.inner())),
            )
        };
        let out = if ours {
            fused(x, weight, bias.clone()).expect("f32 on Autodiff<Flex>")
        } else {
            let [x, weight] = [x, weight].map(|t| t.cast(FloatDType::F64));
            let product = x.matmul(weight);
            let out = match &bias {
                Some(bias) => product + bias.clone().cast(FloatDType::F64).unsqueeze_dim(0),
                None => product,
            };
            out.cast(FloatDType::F32)
        };
        let w = normal(out.dims(), case.seed + 3, 0.0).detach();
        let grads = (out.clone() * w).sum().backward();
        let mut results = vec![out.inner()];
        results.extend(x_leaf.grad(&grads));
        results.extend(weight_leaf.grad(&grads));
        results.extend(bias.and_then(|bias| bias.grad(&grads).map(|g| g.unsqueeze_dim(0))));
        results
    }

    fn assert_matches(case: Case) -> Result<(), TestCaseError> {
        let (got, want) = (run(case, true), run(case, false));
        let trained = 1 + usize::from(case.biased);
        prop_assert_eq!(got.len(), 2 + usize::from(case.train) * trained, "ours");
        prop_assert_eq!(want.len(), got.len(), "burn's");
        for (name, (a, b)) in ["out", "dx", "dw", "db"]
            .iter()
            .zip(got.into_iter().zip(want))
        {
            let err = max_rel_err(a, b);
            prop_assert!(err < 1e-5, "{}: {}", name, err);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The product's output and gradients equal burn's matmul and bias add in f64 for any
        /// sizes, with or without a bias, x and the weight read in place as row- or
        /// column-major views, the weight and the bias trained or frozen (then only x gets a
        /// gradient): to f32 rounding, 1e-5 of the largest value.
        #[test]
        fn output_and_gradients_equal_burns_matmul_and_add(
            sizes in (1usize..40, 1usize..24, 1usize..24).prop_map(|(r, i, o)| [r, i, o]),
            biased: bool,
            x_transposed: bool,
            weight_transposed: bool,
            train: bool,
            seed in 0u64..1000,
        ) {
            let case = Case { sizes, biased, x_transposed, weight_transposed, train, seed };
            assert_matches(case)?;
        }
    }

    /// The same at a size whose products run on rayon's pool and whose bias fill and bias
    /// gradient split into several tasks.
    #[test]
    fn large_layers_equal_burns_matmul_and_add() {
        let sizes = [1500, 70, 100];
        assert!(sizes.iter().product::<usize>() >= PARALLEL_WORK);
        assert!(sizes[0] * sizes[2] > 2 * TASK_VALUES);
        for (train, biased) in [(false, false), (true, true), (true, false)] {
            let case = Case {
                sizes,
                biased,
                x_transposed: false,
                weight_transposed: train,
                train,
                seed: 7,
            };
            assert_matches(case).unwrap();
        }
    }

    /// The bias's gradient has the same bits whichever threads sum its tasks: one thread
    /// alone, or four taking tasks as they come (a tree of rayon's `reduce` would be shaped
    /// by who stole what), at a size that splits into a dozen tasks. The output's gradient
    /// has small values in its even rows, and in its odd rows powers of two up to 2^80 that
    /// cancel in pairs (row `r` and row `r + rows / 2`): the sums in f64 round, and each
    /// order of them leaves its own remainder in the bits.
    #[test]
    fn bias_gradient_has_the_same_bits_on_any_schedule() {
        let [rows, d_in, d_out] = [1500, 8, 600];
        assert!(rows * d_out >= 12 * TASK_VALUES);
        let small = normal([rows, d_out], 3, 0.0).into_data();
        let small = small.as_slice::<f32>().expect("f32 values");
        let value = |i: usize| {
            let (row, column) = (i / d_out, i % d_out);
            let pair = row % (rows / 2);
            let exponent = ((pair * d_out + column) * 37 % 61) as f32 + 20.0;
            match (row % 2, row < rows / 2) {
                (0, _) => small[i],
                (_, true) => exponent.exp2(),
                (_, false) => -exponent.exp2(),
            }
        };
        let grad_out = TensorData::new((0..rows * d_out).map(value).collect(), [rows, d_out]);
        let grad_out = Tensor::<AB, 2>::from_data(grad_out, &Default::default());
        let bias_grad = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                let x = normal([rows, d_in], 1, 0.0);
                let weight = normal([d_in, d_out], 2, 0.0);
                let bias = normal([d_out], 4, 0.0).require_grad();
                let out = fused(x, weight, Some(bias.clone())).expect("f32 on Autodiff<Flex>");
                let grads = (out * grad_out.clone()).sum().backward();
                let grad = bias.grad(&grads).expect("the bias is trained");
                let bits: Vec<u32> = grad.to_data().iter::<f32>().map(f32::to_bits).collect();
                bits
            })
        };
        let alone = bias_grad(1);
        for _ in 0..3 {
            assert_eq!(bias_grad(4), alone);
        }
    }

    /// Known values without autodiff: `[[1, 2], [3, 4]]` times `[[1, 0, 1], [0, 1, 1]]` is
    /// `[[1, 2, 3], [3, 4, 7]]`, plus `[0.5, -1, 0]` `[[1.5, 1, 3], [3.5, 3, 7]]`. f16 is
    /// declined.
    #[test]
    fn known_values_and_half_precision() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
        let weight = Tensor::<Flex, 2>::from_floats([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], &device);
        let bias = Tensor::<Flex, 1>::from_floats([0.5, -1.0, 0.0], &device);
        let out = fused(x.clone(), weight.clone(), Some(bias.clone())).expect("f32 on Flex");
        let want = Tensor::from_floats([[1.5, 1.0, 3.0], [3.5, 3.0, 7.0]], &device);
        assert_eq!(max_rel_err(out, want), 0.0);
        let out = fused(x.clone(), weight.clone(), None).expect("f32 on Flex");
        let want = Tensor::from_floats([[1.0, 2.0, 3.0], [3.0, 4.0, 7.0]], &device);
        assert_eq!(max_rel_err(out, want), 0.0);
        let half = x.cast(FloatDType::F16);
        assert_eq!(
            fused(half, weight, Some(bias)).unwrap_err(),
            LinearUnfused::DType { dtype: DType::F16 }
        );
    }
}
