//! Whole-tensor totals shaped for burn-cubecl's kernels, which the training losses, the
//! regularizers and the gradient clipping take every step.
//!
//! burn-cubecl reduces a tensor to one value one axis at a time, a kernel per axis: the sum of
//! a LoRA factor's `[in, rank]` gradient is two kernels, a latent's `[b, c, h, w]` error four.
//! Flattened first (free for a contiguous tensor, as every freshly computed one is), it is one.
//! And a total of many such values added as they are reduced interleaves the adds with the
//! reductions in burn-fusion's stream, so that each add runs as a kernel of its own; queued
//! after all the reductions, the adds follow each other and fuse into few kernels.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The sum of all of `x`'s values, `[1]`, in one reduction.
pub fn sum_all<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    let count = x.shape().num_elements();
    x.reshape([count]).sum()
}

/// The mean of all of `x`'s values, `[1]`, in one reduction.
pub fn mean_all<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    let count = x.shape().num_elements();
    x.reshape([count]).mean()
}

/// The sum of one-value tensors, with every tensor of `values` built (its reduction queued)
/// before the first add; `None` when there are none.
pub fn add_all<B: Backend>(values: impl IntoIterator<Item = Tensor<B, 1>>) -> Option<Tensor<B, 1>> {
    let values: Vec<_> = values.into_iter().collect();
    values.into_iter().reduce(|total, value| total + value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, TensorData};
    use proptest::prelude::*;

    fn value(x: Tensor<Flex, 1>) -> f32 {
        x.into_data().to_vec::<f32>().unwrap()[0]
    }

    proptest! {
        /// Flattening changes nothing but the kernel count: the totals equal burn's own
        /// reductions over all axes, for any shape of rank 3 up to 5 x 6 x 7.
        #[test]
        fn totals_equal_the_reductions_over_all_axes(a in 1usize..6, b in 1usize..7, c in 1usize..8) {
            let x = Tensor::<Flex, 3>::random([a, b, c], Distribution::Normal(0.0, 1.0), &Default::default());
            let (sum, mean) = (value(x.clone().sum()), value(x.clone().mean()));
            prop_assert!((value(sum_all(x.clone())) - sum).abs() <= 1e-4 * (1.0 + sum.abs()));
            prop_assert!((value(mean_all(x)) - mean).abs() <= 1e-5 * (1.0 + mean.abs()));
        }
    }

    /// 1 + 2 + 3 = 6; no values, no total.
    #[test]
    fn add_all_adds_every_value() {
        let device = Default::default();
        let values = [1.0f32, 2.0, 3.0]
            .map(|v| Tensor::<Flex, 1>::from_data(TensorData::new(vec![v], [1]), &device));
        assert_eq!(value(add_all(values).unwrap()), 6.0);
        assert!(add_all(Vec::<Tensor<Flex, 1>>::new()).is_none());
    }
}
