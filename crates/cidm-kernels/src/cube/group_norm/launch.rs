//! Host side of the group-norm kernels: layout and launch on burn's `CubeTensor`s.
//!
//! x, and the output's gradient in the backward, are taken as they come when dense channels
//! first (NCHW-contiguous) or channels last (the NHWC layout of burn-cubecl's convolution
//! outputs, seen as NCHW), and copied contiguous otherwise. The output is written channels
//! last whatever x's layout, because everything that reads a norm's output in the UNet and
//! the VAE wants it so: a convolution (burn-cubecl's read NHWC and copy anything else) or
//! the flattening into tokens (`[b, h * w, c]`, a view of a channels-last image). x's
//! gradient is written in x's layout. A ResNet's norm between two convolutions thus hands
//! the second one its input without a copy, whether its input came from a convolution or
//! from an elementwise op (burn's fused elementwise ops write NCHW-contiguous outputs).

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::kernel::{
    group_norm_apply_kernel, group_norm_channel_sums_kernel, group_norm_coefficients_kernel,
    group_norm_input_grad_kernel, group_norm_param_grads_kernel, group_norm_partial_sums_kernel,
    group_norm_stats_kernel, REDUCE_UNITS,
};
use crate::autodiff_node::NormGrads;
use crate::cube::host::{
    channels_last_order, elementwise, empty_in_order, empty_on, is_channels_last,
};
use crate::fused_ops::group_norm::GroupNormParams;

/// Values one cube of the statistics adds up, 32 per unit: SD 1.5's groups of 40960 and
/// 81920 values split into 5 and 10 chunks, 320 cubes in all at batch 2 and batch 1.
const STATS_CHUNK: usize = 32 * REDUCE_UNITS;
/// Most chunks per block: a grid dimension (blocks of over `65535 * STATS_CHUNK` values get
/// longer chunks).
const MAX_SPLITS: usize = 65_535;

/// x `[batch, channels, ...]` as `[batch, channels, spatial]`, and its groups.
struct Layout {
    batch: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
}

impl Layout {
    fn of<R: CubeRuntime>(x: &CubeTensor<R>, groups: usize) -> Self {
        let dims = x.meta.shape();
        Self {
            batch: dims[0],
            channels: dims[1],
            spatial: dims[2..].iter().product(),
            groups,
        }
    }

    fn channels_per_group(&self) -> usize {
        self.channels / self.groups
    }

    fn group_len(&self) -> usize {
        self.channels_per_group() * self.spatial
    }

    fn blocks(&self) -> usize {
        self.batch * self.groups
    }
}

/// `tensor` as the kernels read it, and whether it lies channels last: as it is when dense
/// channels first or channels last, else a contiguous copy.
fn dense<R: CubeRuntime>(tensor: CubeTensor<R>) -> (CubeTensor<R>, bool) {
    if tensor.is_contiguous() {
        (tensor, false)
    } else if is_channels_last(&tensor) {
        (tensor, true)
    } else {
        (into_contiguous(tensor), false)
    }
}

/// An uninitialised tensor of `like`'s shape, dense channels last when `channels_last`, else
/// contiguous.
fn empty_laid_out<R: CubeRuntime>(
    like: &CubeTensor<R>,
    channels_last: bool,
    dtype: DType,
) -> CubeTensor<R> {
    let dims = like.meta.shape();
    if channels_last {
        empty_in_order(like, dims, &channels_last_order(dims.len()), dtype)
    } else {
        empty_on(like, like.shape(), dtype)
    }
}

/// Forward pass on x `[batch, channels, ...]`: `(out, mean, rstd)`, the output in x's
/// dtype and shape, laid out channels last, the statistics f32 `[batch, groups]`.
pub(crate) fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    params: GroupNormParams,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let ((x, x_last), gamma, beta) = (dense(x), into_contiguous(gamma), into_contiguous(beta));
    let layout = Layout::of(&x, params.groups);
    let client = x.client.clone();
    let dtype = x.dtype;
    let empty = |shape: Shape, dtype: DType| empty_on(&x, shape, dtype);
    let out = empty_laid_out(&x, true, dtype);
    let stats_shape = Shape::new([layout.batch, layout.groups]);
    let mean = empty(stats_shape.clone(), DType::F32);
    let rstd = empty(stats_shape, DType::F32);
    let group_len = layout.group_len();

    let chunk = STATS_CHUNK.max(group_len.div_ceil(MAX_SPLITS));
    let splits = group_len.div_ceil(chunk);
    let partials = empty(Shape::new([layout.blocks(), splits, 2]), DType::F32);
    group_norm_partial_sums_kernel::launch::<R>(
        &client,
        CubeCount::Static(splits as u32, layout.groups as u32, layout.batch as u32),
        CubeDim::new_1d(REDUCE_UNITS as u32),
        x.clone().into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        layout.channels as u32,
        layout.spatial as u32,
        layout.channels_per_group() as u32,
        chunk as u32,
        REDUCE_UNITS,
        x_last,
        dtype.into(),
    );
    let (count, dim) = elementwise(&client, layout.blocks());
    group_norm_stats_kernel::launch::<R>(
        &client,
        count,
        dim,
        x.clone().into_tensor_arg(),
        partials.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        layout.channels as u32,
        layout.spatial as u32,
        layout.channels_per_group() as u32,
        splits as u32,
        1.0 / group_len as f32,
        params.epsilon,
        x_last,
        dtype.into(),
    );
    let (count, dim) = elementwise(&client, out.shape().num_elements());
    group_norm_apply_kernel::launch::<R>(
        &client,
        count,
        dim,
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        layout.channels as u32,
        layout.spatial as u32,
        layout.channels_per_group() as u32,
        params.silu,
        x_last,
        true,
        dtype.into(),
    );
    (out, mean, rstd)
}

/// Backward pass from the forward's inputs and statistics and the output's gradient: dx in
/// x's layout and, if `affine`, `[dgamma, dbeta]`, in the inputs' dtype. The per-channel
/// sums are computed either way (dx's coefficients are made of them).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    mean: CubeTensor<R>,
    rstd: CubeTensor<R>,
    grad_out: CubeTensor<R>,
    params: GroupNormParams,
    affine: bool,
) -> NormGrads<CubeTensor<R>> {
    let ((x, x_last), gamma, beta) = (dense(x), into_contiguous(gamma), into_contiguous(beta));
    let layout = Layout::of(&x, params.groups);
    let (mean, rstd) = (into_contiguous(mean), into_contiguous(rstd));
    let (grad_out, grad_last) = dense(grad_out);
    let client = x.client.clone();
    let dtype = x.dtype;
    let empty = |shape: Shape, dtype: DType| empty_on(&x, shape, dtype);
    let rows = Shape::new([layout.batch, layout.channels]);
    let sum_dy = empty(rows.clone(), DType::F32);
    let sum_dy_xhat = empty(rows, DType::F32);
    let coefficients = empty(Shape::new([layout.blocks(), 2]), DType::F32);
    let grad_x = empty_laid_out(&x, x_last, dtype);
    let cpg = layout.channels_per_group() as u32;
    let group_len = layout.group_len();

    group_norm_channel_sums_kernel::launch::<R>(
        &client,
        CubeCount::Static(layout.channels as u32, layout.batch as u32, 1),
        CubeDim::new_1d(REDUCE_UNITS as u32),
        x.clone().into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        beta.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        grad_out.clone().into_tensor_arg(),
        sum_dy.clone().into_tensor_arg(),
        sum_dy_xhat.clone().into_tensor_arg(),
        layout.spatial as u32,
        cpg,
        REDUCE_UNITS,
        params.silu,
        x_last,
        grad_last,
        dtype.into(),
    );
    // The weights' gradients are made of the channel sums alone.
    let affine = affine.then(|| {
        let grad_gamma = empty(gamma.shape(), dtype);
        let grad_beta = empty(beta.shape(), dtype);
        let (count, dim) = elementwise(&client, layout.channels);
        group_norm_param_grads_kernel::launch::<R>(
            &client,
            count,
            dim,
            sum_dy.clone().into_tensor_arg(),
            sum_dy_xhat.clone().into_tensor_arg(),
            grad_gamma.clone().into_tensor_arg(),
            grad_beta.clone().into_tensor_arg(),
            layout.batch as u32,
            dtype.into(),
        );
        [grad_gamma, grad_beta]
    });
    let (count, dim) = elementwise(&client, layout.blocks());
    group_norm_coefficients_kernel::launch::<R>(
        &client,
        count,
        dim,
        gamma.clone().into_tensor_arg(),
        sum_dy.into_tensor_arg(),
        sum_dy_xhat.into_tensor_arg(),
        coefficients.clone().into_tensor_arg(),
        layout.groups as u32,
        cpg,
        1.0 / group_len as f32,
        dtype.into(),
    );
    let (count, dim) = elementwise(&client, grad_x.shape().num_elements());
    group_norm_input_grad_kernel::launch::<R>(
        &client,
        count,
        dim,
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        mean.into_tensor_arg(),
        rstd.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        coefficients.into_tensor_arg(),
        grad_x.clone().into_tensor_arg(),
        layout.channels as u32,
        layout.spatial as u32,
        cpg,
        params.silu,
        x_last,
        grad_last,
        dtype.into(),
    );
    (grad_x, affine)
}
