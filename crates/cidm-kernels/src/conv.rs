//! [`fused_conv2d`]: the backend-generic entry point of the CPU convolution.

use burn::tensor::{backend::Backend, ops::PaddedConvOptions, DType, Tensor};

use crate::{stats, switch};

/// Why [`fused_conv2d`] did not run this crate's convolution; the caller runs burn's.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ConvUnfused {
    /// Switched off with `CIDM_FUSED_CONV=0` or [`crate::set_fused_conv`].
    #[error(
        "the CPU convolution is switched off ({} or set_fused_conv)",
        crate::CONV_SWITCH_VAR
    )]
    Disabled,
    /// A backend this build has no convolution for: any but Flex with the `flex` feature.
    /// The GPU backends keep burn-cubecl's convolutions (direct, im2col or implicit GEMM,
    /// chosen by its autotune).
    #[error("the backend has no convolution of cidm-kernels in this build")]
    Backend,
    /// More than one group (the loops multiply one weight matrix).
    #[error("a convolution of {groups} groups is not supported by the CPU convolution")]
    Groups {
        /// The convolution's groups.
        groups: usize,
    },
    /// Shapes or settings that make no convolution: an empty tensor, x's channels not the
    /// weight's, a bias that is not one value per output channel, a stride or dilation of 0,
    /// or a kernel wider than the padded input.
    #[error("a convolution of x {x:?} with weight {weight:?} (bias {bias:?}) is not supported")]
    Shape {
        /// x's shape `[batch, in, h, w]`.
        x: [usize; 4],
        /// The weight's shape `[out, in, kh, kw]`.
        weight: [usize; 4],
        /// The bias's length, if there is one.
        bias: Option<usize>,
    },
    /// Not f32 (the loops are f32).
    #[error("dtype {dtype:?} is not supported by the CPU convolution")]
    DType {
        /// Dtype of the first input that is not f32.
        dtype: DType,
    },
}

/// A 2-D convolution, `torch.nn.functional.conv2d` with one group, with the `flex` feature
/// on Flex (f32, with and without `Autodiff`, where it is one node whose backward computes
/// the input's gradient and, where they are tracked, the weight's and the bias's), as
/// products of tiles of gathered patches with the weight on rayon's pool (see
/// `flex/conv.rs` for why Flex's own convolution is slow at SD 1.5's widths); else `Err`
/// with the reason, and the caller runs burn's convolution on the inputs it still holds.
///
/// # Shapes
/// - x: `[batch, in, h, w]`
/// - weight: `[out, in, kh, kw]`
/// - bias: `[out]`
/// - output: `[batch, out, (h + 2 padding - dilation (kh - 1) - 1) / stride + 1, ...]`
///
/// # Errors
/// [`ConvUnfused`] when the loops do not apply: switched off ([`crate::CONV_SWITCH_VAR`]),
/// another backend, groups, an unsupported shape or dtype.
pub fn fused_conv2d<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    options: &PaddedConvOptions<2>,
) -> Result<Tensor<B, 4>, ConvUnfused> {
    let result =
        unsupported(x, weight, bias, options).map_or_else(|| run(x, weight, bias, options), Err);
    stats::CONV.record(result.is_ok());
    if let Err(reason) = &result {
        tracing::trace!(%reason, "convolution runs unfused");
    }
    result
}

/// The first reason, if any, why the loops cannot take these inputs (independent of the
/// backend).
fn unsupported<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    options: &PaddedConvOptions<2>,
) -> Option<ConvUnfused> {
    if !switch::CONV.enabled() {
        return Some(ConvUnfused::Disabled);
    }
    let PaddedConvOptions {
        options,
        padding_end,
    } = options;
    if options.groups != 1 {
        return Some(ConvUnfused::Groups {
            groups: options.groups,
        });
    }
    let padding_end = padding_end.unwrap_or(options.padding);
    let (x_dims, w_dims) = (x.dims(), weight.dims());
    let bias_len = bias.map(|b| b.dims()[0]);
    let fits = (0..2).all(|axis| {
        let span = options.dilation[axis] * (w_dims[axis + 2].max(1) - 1) + 1;
        options.stride[axis] > 0
            && options.dilation[axis] > 0
            && x_dims[axis + 2] + options.padding[axis] + padding_end[axis] >= span
    });
    let shaped = x_dims.iter().chain(&w_dims).all(|&d| d > 0)
        && x_dims[1] == w_dims[1]
        && bias_len.is_none_or(|len| len == w_dims[0]);
    if !(fits && shaped) {
        return Some(ConvUnfused::Shape {
            x: x_dims,
            weight: w_dims,
            bias: bias_len,
        });
    }
    None
}

/// The loops of `flex::conv`.
#[cfg(feature = "flex")]
fn run<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    options: &PaddedConvOptions<2>,
) -> Result<Tensor<B, 4>, ConvUnfused> {
    let params = crate::flex::ConvParams {
        stride: options.options.stride,
        padding: options.options.padding,
        padding_end: options.padding_end.unwrap_or(options.options.padding),
        dilation: options.options.dilation,
    };
    crate::flex::fused_conv2d(x.clone(), weight.clone(), bias.cloned(), params)
}

/// Without the `flex` feature: declined before any tensor work.
#[cfg(not(feature = "flex"))]
fn run<B: Backend>(
    _x: &Tensor<B, 4>,
    _weight: &Tensor<B, 4>,
    _bias: Option<&Tensor<B, 1>>,
    _options: &PaddedConvOptions<2>,
) -> Result<Tensor<B, 4>, ConvUnfused> {
    Err(ConvUnfused::Backend)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{ops::ConvOptions, ops::PaddedConvOptions, Tensor};

    use super::{fused_conv2d, ConvUnfused};

    /// On a backend without the loops (NdArray) the inputs are declined, and the first
    /// reason found is reported: groups, then shapes (mismatched channels, a bias of the
    /// wrong length, a kernel wider than the padded input), before the backend.
    #[test]
    fn reasons_on_the_cpu() {
        let device = Default::default();
        let x = Tensor::<NdArray, 4>::zeros([1, 4, 5, 5], &device);
        let weight = Tensor::<NdArray, 4>::zeros([2, 4, 3, 3], &device);
        let bias = Tensor::<NdArray, 1>::zeros([2], &device);
        let options = PaddedConvOptions::from(ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
        assert_eq!(
            fused_conv2d(&x, &weight, Some(&bias), &options).unwrap_err(),
            ConvUnfused::Backend
        );
        let grouped = PaddedConvOptions::from(ConvOptions::new([1, 1], [1, 1], [1, 1], 2));
        assert_eq!(
            fused_conv2d(&x, &weight, Some(&bias), &grouped).unwrap_err(),
            ConvUnfused::Groups { groups: 2 }
        );
        let narrow = Tensor::<NdArray, 4>::zeros([2, 3, 3, 3], &device);
        let wide = Tensor::<NdArray, 4>::zeros([2, 4, 9, 3], &device);
        let long_bias = Tensor::<NdArray, 1>::zeros([3], &device);
        for (weight, bias) in [(&narrow, &bias), (&wide, &bias), (&weight, &long_bias)] {
            let reason = fused_conv2d(&x, weight, Some(bias), &options).unwrap_err();
            assert!(matches!(reason, ConvUnfused::Shape { .. }), "{reason}");
        }
    }
}
