//! [`fused_layer_norm`]: the backend-generic entry point of the layer-norm kernels.

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::norm_inputs::{affine_dtypes_supported, epsilon_supported, MAX_GRID};
use crate::{stats, switch};

/// Why [`fused_layer_norm`] did not run the fused kernels; the caller runs its plain norm.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum LayerNormUnfused {
    /// Switched off with `CIDM_FUSED_LAYER_NORM=0` or [`crate::set_fused_layer_norm`].
    #[error(
        "fused layer norm is switched off ({} or set_fused_layer_norm)",
        crate::LAYER_NORM_SWITCH_VAR
    )]
    Disabled,
    /// A backend this build has no kernels for: NdArray, Flex without the `flex` feature, a
    /// GPU backend without the `wgpu`/`cuda` features.
    #[error("the backend has no fused layer-norm kernels in this build")]
    Backend,
    /// Shapes the kernels do not take: an empty tensor, weights unlike `[dim]`, rows longer
    /// than 65535 values or more than `u32::MAX` values in all.
    #[error(
        "layer norm of {rows} rows of {dim} values with weights of {gamma} and {beta} values \
         is not supported by the fused kernels"
    )]
    Shape {
        /// Rows normalised (the product of all dimensions but the last).
        rows: usize,
        /// Values per row (the last dimension).
        dim: usize,
        /// Values of the scale.
        gamma: usize,
        /// Values of the shift.
        beta: usize,
    },
    /// An epsilon that is negative or not finite.
    #[error("layer-norm epsilon {epsilon} is not a finite value >= 0")]
    Epsilon {
        /// The epsilon asked for.
        epsilon: f64,
    },
    /// Not all three of one dtype among f32, f16 and bf16.
    #[error(
        "dtypes x {x:?}, gamma {gamma:?}, beta {beta:?} are not supported by the fused kernels"
    )]
    DType {
        /// Dtype of the input.
        x: DType,
        /// Dtype of the scale.
        gamma: DType,
        /// Dtype of the shift.
        beta: DType,
    },
    /// The device cannot run the kernels for this dtype: a GPU without f16/bf16 shader
    /// support, or Flex in f16/bf16 (its loops are f32).
    #[error("the device cannot run the fused layer norm on {dtype:?}")]
    Device {
        /// Dtype of the inputs.
        dtype: DType,
    },
}

/// `torch.nn.LayerNorm(dim, eps)` over the last dimension with affine weights `gamma` and
/// `beta`, in one kernel per call (each row's mean, variance, and the normalised, scaled and
/// shifted values), when the backend is a burn-cubecl one this build has kernels for (wgpu or
/// CUDA, plain, under fusion and under `Autodiff`, where a fused backward of three kernels,
/// one when the weights are frozen, becomes the node's gradient), or, with the `flex`
/// feature, as the same passes over each row on Flex (f32, with and without `Autodiff`;
/// statistics summed in f64); else `Err` with the reason, and the caller runs its plain norm
/// on the inputs, which it still holds.
///
/// Statistics (mean, then the biased variance of the centred values) and the affine step are
/// f32 whatever the input dtype, as the plain norm of `cidm-diffusion` computes them under
/// f16/bf16; the output has x's dtype and shape.
///
/// # Shapes
/// - x: `[..., dim]`, gamma and beta: `[dim]`
/// - output: as x
///
/// # Errors
/// [`LayerNormUnfused`] when the kernels do not apply: switched off
/// ([`crate::LAYER_NORM_SWITCH_VAR`]), another backend, unsupported shapes, epsilon or
/// dtypes, or a device without support for the dtype.
pub fn fused_layer_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    epsilon: f64,
) -> Result<Tensor<B, D>, LayerNormUnfused> {
    let result =
        unsupported(x, gamma, beta, epsilon).map_or_else(|| run(x, gamma, beta, epsilon), Err);
    stats::LAYER_NORM.record(result.is_ok());
    if let Err(reason) = &result {
        tracing::trace!(%reason, "layer norm runs unfused");
    }
    result
}

/// `[rows, dim]` of x's dimensions: the last one, and the product of the others.
fn layout(dims: &[usize]) -> [usize; 2] {
    let dim = dims.last().copied().unwrap_or(1);
    let rows = dims.iter().rev().skip(1).product();
    [rows, dim]
}

/// The first reason, if any, why the kernels cannot take these inputs (independent of the
/// backend).
fn unsupported<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    epsilon: f64,
) -> Option<LayerNormUnfused> {
    if !switch::LAYER_NORM.enabled() {
        return Some(LayerNormUnfused::Disabled);
    }
    let [rows, dim] = layout(&x.dims());
    let (gamma_len, beta_len) = (gamma.dims()[0], beta.dims()[0]);
    let shape_ok = rows > 0
        && dim > 0
        && dim <= MAX_GRID
        && gamma_len == dim
        && beta_len == dim
        && x.shape().num_elements() <= u32::MAX as usize;
    if !shape_ok {
        return Some(LayerNormUnfused::Shape {
            rows,
            dim,
            gamma: gamma_len,
            beta: beta_len,
        });
    }
    if !epsilon_supported(epsilon) {
        return Some(LayerNormUnfused::Epsilon { epsilon });
    }
    let (x, gamma, beta) = (x.dtype(), gamma.dtype(), beta.dtype());
    if !affine_dtypes_supported(x, gamma, beta) {
        return Some(LayerNormUnfused::DType { x, gamma, beta });
    }
    None
}

/// The kernels on x viewed as `[rows, dim]`: the CubeCL kernels; where the backend is not
/// theirs, with the `flex` feature, the loops of `flex::layer_norm`.
#[cfg(any(feature = "cube", feature = "flex"))]
fn run<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    epsilon: f64,
) -> Result<Tensor<B, D>, LayerNormUnfused> {
    let dims = x.dims();
    let flat = x.clone().reshape(layout(&dims));
    #[cfg(feature = "cube")]
    let result = crate::cube::fused_layer_norm(flat.clone(), gamma.clone(), beta.clone(), epsilon);
    #[cfg(not(feature = "cube"))]
    let result = Err(LayerNormUnfused::Backend);
    #[cfg(feature = "flex")]
    let result = match result {
        Err(LayerNormUnfused::Backend) => {
            crate::flex::fused_layer_norm(flat, gamma.clone(), beta.clone(), epsilon)
        }
        result => result,
    };
    result.map(|out| out.reshape(dims))
}

/// Without kernels for any backend: declined before any tensor work, since every norm of a
/// model comes here first.
#[cfg(not(any(feature = "cube", feature = "flex")))]
fn run<B: Backend, const D: usize>(
    _x: &Tensor<B, D>,
    _gamma: &Tensor<B, 1>,
    _beta: &Tensor<B, 1>,
    _epsilon: f64,
) -> Result<Tensor<B, D>, LayerNormUnfused> {
    Err(LayerNormUnfused::Backend)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Tensor;

    use super::{fused_layer_norm, layout, LayerNormUnfused};

    /// The last dimension is the row; all others fold into the row count.
    #[test]
    fn layouts() {
        assert_eq!(layout(&[2, 4096, 320]), [8192, 320]);
        assert_eq!(layout(&[77, 768]), [77, 768]);
        assert_eq!(layout(&[5]), [1, 5]);
        assert_eq!(layout(&[2, 3, 0, 7]), [0, 7]);
    }

    /// On a backend without kernels (NdArray) the inputs are rejected, and the first reason
    /// found is reported: weights of the wrong length and a bad epsilon before the backend is
    /// looked at.
    #[test]
    fn reasons_on_the_cpu() {
        let device = Default::default();
        let x = Tensor::<NdArray, 3>::zeros([2, 3, 6], &device);
        let weights = Tensor::<NdArray, 1>::ones([6], &device);
        assert_eq!(
            fused_layer_norm(&x, &weights, &weights, 1e-5).unwrap_err(),
            LayerNormUnfused::Backend
        );
        let short = Tensor::<NdArray, 1>::ones([5], &device);
        assert_eq!(
            fused_layer_norm(&x, &short, &weights, 1e-5).unwrap_err(),
            LayerNormUnfused::Shape {
                rows: 6,
                dim: 6,
                gamma: 5,
                beta: 6
            }
        );
        assert!(matches!(
            fused_layer_norm(&x, &weights, &weights, -1.0).unwrap_err(),
            LayerNormUnfused::Epsilon { .. }
        ));
    }
}
