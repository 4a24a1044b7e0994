//! [`fused_geglu`]: the backend-generic entry point of the GEGLU kernels.

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::{stats, switch};

/// Why [`fused_geglu`] did not run the fused kernels; the caller runs its plain ops.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum GegluUnfused {
    /// Switched off with `CIDM_FUSED_GEGLU=0` or [`crate::set_fused_geglu`].
    #[error(
        "fused GEGLU is switched off ({} or set_fused_geglu)",
        crate::GEGLU_SWITCH_VAR
    )]
    Disabled,
    /// A backend this build has no kernels for: NdArray, Flex without the `flex` feature, a
    /// GPU backend without the `wgpu`/`cuda` features.
    #[error("the backend has no fused GEGLU kernels in this build")]
    Backend,
    /// Shapes the kernels do not take: an empty tensor, a last dimension that is odd (it
    /// holds the two halves), or more than `u32::MAX` values.
    #[error("GEGLU of {rows} rows of {width} values is not supported by the fused kernels")]
    Shape {
        /// Rows (the product of all dimensions but the last).
        rows: usize,
        /// Values per row: both halves.
        width: usize,
    },
    /// Not f32, f16 or bf16.
    #[error("dtype {dtype:?} is not supported by the fused GEGLU")]
    DType {
        /// Dtype of the input.
        dtype: DType,
    },
    /// The device cannot run the kernels for this dtype: a GPU without f16/bf16 shader
    /// support, or Flex in f16/bf16 (its loops are f32).
    #[error("the device cannot run the fused GEGLU on {dtype:?}")]
    Device {
        /// Dtype of the input.
        dtype: DType,
    },
}

/// GEGLU, the activation of diffusers' `FeedForward` in the UNet's transformer blocks:
/// `hidden * gelu(gate)` where `[hidden, gate]` are the two halves of x's last dimension and
/// `gelu` is the exact (erf) GELU, in one kernel when the backend is a burn-cubecl one this
/// build has kernels for (wgpu or CUDA, plain, under fusion and under `Autodiff`, where a
/// fused backward of one kernel becomes the node's gradient and writes x's gradient directly,
/// both halves), or, with the `flex` feature, in one loop each way on Flex (f32, with and
/// without `Autodiff`); else `Err` with the reason, and the caller runs its plain ops on x,
/// which it still holds.
///
/// The arithmetic is f32 whatever the dtype; the output has x's dtype. The backward uses
/// GELU's exact derivative, `Phi(g) + g * phi(g)`, as PyTorch does (burn's CubeCL backends
/// differentiate the exact GELU with the tanh approximation's derivative, up to 8.7e-4 off).
///
/// # Shapes
/// - x: `[..., 2 * n]`
/// - output: `[..., n]`
///
/// # Errors
/// [`GegluUnfused`] when the kernels do not apply: switched off
/// ([`crate::GEGLU_SWITCH_VAR`]), another backend, an unsupported shape or dtype, or a device
/// without support for the dtype.
pub fn fused_geglu<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
) -> Result<Tensor<B, D>, GegluUnfused> {
    let result = unsupported(x).map_or_else(|| run(x), Err);
    stats::GEGLU.record(result.is_ok());
    if let Err(reason) = &result {
        tracing::trace!(%reason, "GEGLU runs unfused");
    }
    result
}

/// The first reason, if any, why the kernels cannot take x (independent of the backend).
fn unsupported<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<GegluUnfused> {
    if !switch::GEGLU.enabled() {
        return Some(GegluUnfused::Disabled);
    }
    let dims = x.dims();
    let width = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let len = rows * width;
    if len == 0 || !width.is_multiple_of(2) || len > u32::MAX as usize {
        return Some(GegluUnfused::Shape { rows, width });
    }
    let dtype = x.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Some(GegluUnfused::DType { dtype });
    }
    None
}

/// The kernels on x viewed as `[rows, 2 * n]`: the CubeCL kernels; where the backend is not
/// theirs, with the `flex` feature, the loops of `flex::geglu`.
#[cfg(any(feature = "cube", feature = "flex"))]
fn run<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Result<Tensor<B, D>, GegluUnfused> {
    let mut dims = x.dims();
    let width = dims[D - 1];
    let flat = x.clone().reshape([x.shape().num_elements() / width, width]);
    dims[D - 1] = width / 2;
    #[cfg(feature = "cube")]
    let result = crate::cube::fused_geglu(flat.clone());
    #[cfg(not(feature = "cube"))]
    let result = Err(GegluUnfused::Backend);
    #[cfg(feature = "flex")]
    let result = match result {
        Err(GegluUnfused::Backend) => crate::flex::fused_geglu(flat),
        result => result,
    };
    result.map(|out| out.reshape(dims))
}

/// Without kernels for any backend: declined before any tensor work, since every
/// feed-forward of a model comes here first.
#[cfg(not(any(feature = "cube", feature = "flex")))]
fn run<B: Backend, const D: usize>(_x: &Tensor<B, D>) -> Result<Tensor<B, D>, GegluUnfused> {
    Err(GegluUnfused::Backend)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{DType, Tensor};

    use super::{fused_geglu, GegluUnfused};

    /// On a backend without kernels (NdArray) the input is rejected, and the first reason
    /// found is reported: an odd width and an empty tensor before the backend is looked at.
    #[test]
    fn reasons_on_the_cpu() {
        let device = Default::default();
        let x = Tensor::<NdArray, 3>::zeros([2, 3, 8], &device);
        assert_eq!(fused_geglu(&x).unwrap_err(), GegluUnfused::Backend);
        let odd = Tensor::<NdArray, 3>::zeros([2, 3, 7], &device);
        assert_eq!(
            fused_geglu(&odd).unwrap_err(),
            GegluUnfused::Shape { rows: 6, width: 7 }
        );
        let empty = Tensor::<NdArray, 2>::zeros([0, 8], &device);
        assert_eq!(
            fused_geglu(&empty).unwrap_err(),
            GegluUnfused::Shape { rows: 0, width: 8 }
        );
        let wide = x.cast(DType::F64);
        assert_eq!(
            fused_geglu(&wide).unwrap_err(),
            GegluUnfused::DType { dtype: DType::F64 }
        );
    }
}
