//! [`fused_group_norm`]: the backend-generic entry point of the group-norm kernels.

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::norm_inputs::{affine_dtypes_supported, epsilon_supported, MAX_GRID};
use crate::{stats, switch};

/// What [`fused_group_norm`] computes besides the normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNormOptions {
    /// Groups the channels are split into; must divide the channel count.
    pub groups: usize,
    /// Added to the variance (finite, not negative).
    pub epsilon: f64,
    /// Apply SiLU, `y * sigmoid(y)`, to the affine output in the same kernel, as every
    /// ResNet block of the UNet and the VAE does after its norms.
    pub silu: bool,
}

/// Why [`fused_group_norm`] did not run the fused kernels; the caller runs its plain norm.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum GroupNormUnfused {
    /// Switched off with `CIDM_FUSED_GROUP_NORM=0` or [`crate::set_fused_group_norm`].
    #[error(
        "fused group norm is switched off ({} or set_fused_group_norm)",
        crate::GROUP_NORM_SWITCH_VAR
    )]
    Disabled,
    /// A backend this build has no kernels for: NdArray, Flex without the `flex` feature, a
    /// GPU backend without the `wgpu`/`cuda` features.
    #[error("the backend has no fused group-norm kernels in this build")]
    Backend,
    /// Shapes the kernels do not take: a tensor of rank below 2 (reported as one channel),
    /// an empty one, groups that do not divide the channels, weights unlike `[channels]`,
    /// a batch or channel count above 65535 (grid dimensions) or more than `u32::MAX` values.
    #[error(
        "group norm of x [batch {batch}, channels {channels}, {spatial} values each] in \
         {groups} groups with weights of {gamma} and {beta} values is not supported by the \
         fused kernels"
    )]
    Shape {
        /// First dimension of x.
        batch: usize,
        /// Second dimension of x.
        channels: usize,
        /// Values per sample and channel (the product of the dimensions after the second).
        spatial: usize,
        /// Groups asked for.
        groups: usize,
        /// Values of the scale.
        gamma: usize,
        /// Values of the shift.
        beta: usize,
    },
    /// An epsilon that is negative or not finite.
    #[error("group-norm epsilon {epsilon} is not a finite value >= 0")]
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
    #[error("the device cannot run the fused group norm on {dtype:?}")]
    Device {
        /// Dtype of the inputs.
        dtype: DType,
    },
}

/// `torch.nn.GroupNorm(groups, channels, eps)` with affine weights `gamma` and `beta`, and
/// SiLU after it when `options.silu`, through two fused kernels (per-group statistics, then
/// one pass that normalises, scales, shifts and activates) when the backend is a burn-cubecl
/// one this build has kernels for (wgpu or CUDA, plain, under fusion and under `Autodiff`,
/// where a fused backward becomes the node's gradient), or, with the `flex` feature, as the
/// same two passes over each (sample, group) block on Flex (f32, with and without
/// `Autodiff`; statistics summed in f64, the output NCHW-contiguous); else `Err` with the
/// reason, and the caller runs its plain norm on the inputs, which it still holds.
///
/// Statistics (mean, biased variance) and the affine step are f32 whatever the input dtype,
/// as the plain norm of `cidm-diffusion` computes them under f16/bf16; the output has x's
/// dtype and shape, and lies channels-last in memory (`[batch, ..., channels]`, seen in x's
/// axis order), the layout burn-cubecl's convolutions read without a copy. x may be
/// NCHW-contiguous or channels-last (a convolution's output) without being copied.
///
/// # Shapes
/// - x: `[batch, channels, ...]`, gamma and beta: `[channels]`
/// - output: as x
///
/// # Errors
/// [`GroupNormUnfused`] when the kernels do not apply: switched off
/// ([`crate::GROUP_NORM_SWITCH_VAR`]), another backend, unsupported shapes, epsilon or
/// dtypes, or a device without support for the dtype.
pub fn fused_group_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    options: GroupNormOptions,
) -> Result<Tensor<B, D>, GroupNormUnfused> {
    let result =
        unsupported(x, gamma, beta, &options).map_or_else(|| run(x, gamma, beta, options), Err);
    stats::GROUP_NORM.record(result.is_ok());
    if let Err(reason) = &result {
        tracing::trace!(%reason, "group norm runs unfused");
    }
    result
}

/// `[batch, channels, spatial]` of x's dimensions; a rank-1 tensor counts as one channel.
pub(crate) fn layout(dims: &[usize]) -> [usize; 3] {
    let batch = dims.first().copied().unwrap_or(1);
    let channels = dims.get(1).copied().unwrap_or(1);
    let spatial = dims.iter().skip(2).product();
    [batch, channels, spatial]
}

/// The first reason, if any, why the kernels cannot take these inputs (independent of the
/// backend).
fn unsupported<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    options: &GroupNormOptions,
) -> Option<GroupNormUnfused> {
    if !switch::GROUP_NORM.enabled() {
        return Some(GroupNormUnfused::Disabled);
    }
    let [batch, channels, spatial] = layout(&x.dims());
    let (gamma_len, beta_len) = (gamma.dims()[0], beta.dims()[0]);
    let groups = options.groups;
    let shape_ok = D >= 2
        && batch > 0
        && channels > 0
        && spatial > 0
        && groups > 0
        && channels % groups == 0
        && gamma_len == channels
        && beta_len == channels
        && batch <= MAX_GRID
        && channels <= MAX_GRID
        && x.shape().num_elements() <= u32::MAX as usize;
    if !shape_ok {
        return Some(GroupNormUnfused::Shape {
            batch,
            channels,
            spatial,
            groups,
            gamma: gamma_len,
            beta: beta_len,
        });
    }
    let epsilon = options.epsilon;
    if !epsilon_supported(epsilon) {
        return Some(GroupNormUnfused::Epsilon { epsilon });
    }
    let (x, gamma, beta) = (x.dtype(), gamma.dtype(), beta.dtype());
    if !affine_dtypes_supported(x, gamma, beta) {
        return Some(GroupNormUnfused::DType { x, gamma, beta });
    }
    None
}

/// The CubeCL kernels on x in its own rank (folding the spatial axes with a reshape would
/// copy a channels-last x, which they read as it is); where the backend is not theirs, with
/// the `flex` feature, the loops of `flex::group_norm`; else `Backend`.
#[cfg_attr(not(any(feature = "cube", feature = "flex")), allow(unused_variables))]
fn run<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    options: GroupNormOptions,
) -> Result<Tensor<B, D>, GroupNormUnfused> {
    #[cfg(feature = "cube")]
    let result = crate::cube::fused_group_norm(x.clone(), gamma.clone(), beta.clone(), options);
    #[cfg(not(feature = "cube"))]
    let result = Err(GroupNormUnfused::Backend);
    #[cfg(feature = "flex")]
    let result = match result {
        Err(GroupNormUnfused::Backend) => crate::flex::fused_group_norm(x, gamma, beta, options),
        result => result,
    };
    result
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Tensor;

    use super::{fused_group_norm, layout, GroupNormOptions, GroupNormUnfused};

    /// Trailing dimensions fold into one spatial size; the channel axis is the second.
    #[test]
    fn layouts() {
        assert_eq!(layout(&[2, 320, 64, 64]), [2, 320, 4096]);
        assert_eq!(layout(&[3, 8]), [3, 8, 1]);
        assert_eq!(layout(&[2, 4, 3, 5, 7]), [2, 4, 105]);
    }

    /// On a backend without kernels (NdArray) the inputs are rejected, and the first reason
    /// found is reported: groups that do not divide the channels before the backend is even
    /// looked at.
    #[test]
    fn reasons_on_the_cpu() {
        let device = Default::default();
        let x = Tensor::<NdArray, 4>::zeros([2, 6, 3, 3], &device);
        let weights = Tensor::<NdArray, 1>::ones([6], &device);
        let options = |groups| GroupNormOptions {
            groups,
            epsilon: 1e-5,
            silu: false,
        };
        assert_eq!(
            fused_group_norm(&x, &weights, &weights, options(3)).unwrap_err(),
            GroupNormUnfused::Backend
        );
        assert!(matches!(
            fused_group_norm(&x, &weights, &weights, options(4)).unwrap_err(),
            GroupNormUnfused::Shape {
                groups: 4,
                channels: 6,
                spatial: 9,
                ..
            }
        ));
        let no_channels = Tensor::<NdArray, 4>::zeros([2, 0, 3, 3], &device);
        let none = Tensor::<NdArray, 1>::ones([0], &device);
        assert!(matches!(
            fused_group_norm(&no_channels, &none, &none, options(1)).unwrap_err(),
            GroupNormUnfused::Shape { channels: 0, .. }
        ));
        let bad_eps = GroupNormOptions {
            epsilon: f64::NAN,
            ..options(3)
        };
        assert!(matches!(
            fused_group_norm(&x, &weights, &weights, bad_eps).unwrap_err(),
            GroupNormUnfused::Epsilon { .. }
        ));
    }
}
