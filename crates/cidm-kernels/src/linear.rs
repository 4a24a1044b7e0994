//! [`fused_linear`]: the backend-generic entry point of the CPU linear layer.

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::{stats, switch};

/// Why [`fused_linear`] did not run this crate's linear layer; the caller runs burn's
/// product and bias add.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum LinearUnfused {
    /// Switched off with `CIDM_FUSED_LINEAR=0` or [`crate::set_fused_linear`].
    #[error(
        "the CPU linear layer is switched off ({} or set_fused_linear)",
        crate::LINEAR_SWITCH_VAR
    )]
    Disabled,
    /// A backend this build has none for: any but Flex with the `flex` feature. The GPU
    /// backends keep burn-cubecl's matmul (and burn-fusion fuses the bias add into it).
    #[error("the backend has no linear layer of cidm-kernels in this build")]
    Backend,
    /// Shapes that make no linear layer: an empty tensor, x's width not the weight's rows, a
    /// bias that is not one value per output.
    #[error("a linear layer of x {x:?} with weight {weight:?} (bias {bias:?}) is not supported")]
    Shape {
        /// x's shape `[rows, in]`.
        x: [usize; 2],
        /// The weight's shape `[in, out]`.
        weight: [usize; 2],
        /// The bias's length, if there is one.
        bias: Option<usize>,
    },
    /// Not f32 (the product is f32).
    #[error("dtype {dtype:?} is not supported by the CPU linear layer")]
    DType {
        /// Dtype of the first input that is not f32.
        dtype: DType,
    },
}

/// `x weight + bias`, `torch.nn.functional.linear` with the weight given as its transpose
/// `[in, out]` (as the models store it), with the `flex` feature on Flex (f32, with and
/// without `Autodiff`, where it is one node whose backward computes x's gradient and, where
/// they are tracked, the weight's and the bias's): one product added into an output that
/// starts as the bias, where Flex's matmul writes its output three times and the bias is one
/// more operation (see `flex/linear.rs`); else `Err` with the reason, and the caller runs
/// burn's product and bias add on the inputs it still holds.
///
/// # Shapes
/// - x: `[rows, in]`
/// - weight: `[in, out]`
/// - bias: `[out]`
/// - output: `[rows, out]`
///
/// # Errors
/// [`LinearUnfused`] when the product does not apply: switched off
/// ([`crate::LINEAR_SWITCH_VAR`]), another backend, an unsupported shape or dtype.
pub fn fused_linear<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Result<Tensor<B, 2>, LinearUnfused> {
    let result = unsupported(x, weight, bias).map_or_else(|| run(x, weight, bias), Err);
    stats::LINEAR.record(result.is_ok());
    if let Err(reason) = &result {
        tracing::trace!(%reason, "linear layer runs unfused");
    }
    result
}

/// The first reason, if any, why the product cannot take these inputs (independent of the
/// backend).
fn unsupported<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<LinearUnfused> {
    if !switch::LINEAR.enabled() {
        return Some(LinearUnfused::Disabled);
    }
    let (x_dims, w_dims) = (x.dims(), weight.dims());
    let bias_len = bias.map(|b| b.dims()[0]);
    let shaped = x_dims.iter().chain(&w_dims).all(|&d| d > 0)
        && x_dims[1] == w_dims[0]
        && bias_len.is_none_or(|len| len == w_dims[1]);
    (!shaped).then_some(LinearUnfused::Shape {
        x: x_dims,
        weight: w_dims,
        bias: bias_len,
    })
}

/// The product of `flex::linear`.
#[cfg(feature = "flex")]
fn run<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Result<Tensor<B, 2>, LinearUnfused> {
    crate::flex::fused_linear(x.clone(), weight.clone(), bias.cloned())
}

/// Without the `flex` feature: declined before any tensor work.
#[cfg(not(feature = "flex"))]
fn run<B: Backend>(
    _x: &Tensor<B, 2>,
    _weight: &Tensor<B, 2>,
    _bias: Option<&Tensor<B, 1>>,
) -> Result<Tensor<B, 2>, LinearUnfused> {
    Err(LinearUnfused::Backend)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Tensor;

    use super::{fused_linear, LinearUnfused};

    /// On a backend without the product (NdArray) the inputs are declined, and shapes that
    /// make no linear layer are reported first: x's width not the weight's rows, a bias of
    /// the wrong length, an empty x.
    #[test]
    fn reasons_on_the_cpu() {
        let device = Default::default();
        let x = Tensor::<NdArray, 2>::zeros([3, 4], &device);
        let weight = Tensor::<NdArray, 2>::zeros([4, 2], &device);
        let bias = Tensor::<NdArray, 1>::zeros([2], &device);
        assert_eq!(
            fused_linear(&x, &weight, Some(&bias)).unwrap_err(),
            LinearUnfused::Backend
        );
        let tall = Tensor::<NdArray, 2>::zeros([5, 2], &device);
        let long_bias = Tensor::<NdArray, 1>::zeros([3], &device);
        let empty = Tensor::<NdArray, 2>::zeros([0, 4], &device);
        for (x, weight, bias) in [
            (&x, &tall, Some(&bias)),
            (&x, &weight, Some(&long_bias)),
            (&empty, &weight, None),
        ] {
            let reason = fused_linear(x, weight, bias).unwrap_err();
            assert!(matches!(reason, LinearUnfused::Shape { .. }), "{reason}");
        }
    }
}
