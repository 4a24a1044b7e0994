//! The group-norm kernels: `y = (x - mean_g) * rstd_g * gamma_c + beta_c`, optionally
//! followed by SiLU, `y * sigmoid(y)`, and its backward.
//!
//! Each `[batch, channels, spatial]` tensor is dense in memory in one of two layouts, chosen
//! at compile time per tensor (`x_last`, `out_last`, `grad_last`): channels first
//! (NCHW-contiguous: the `channels / groups * spatial` values of one (sample, group) pair are
//! one contiguous block, the `spatial` values of one (sample, channel) pair one row) or
//! channels last (the NHWC order burn-cubecl's convolutions read and write: a position's
//! channels are adjacent). Blocks are numbered `n * groups + g`, rows `n * channels + c`.
//! The kernels with one unit per value walk x (and x's gradient, laid out like x) in memory
//! order and find the same value in the output or its gradient, which may lie in the other
//! layout. Statistics and sums are f32 whatever the input dtype.
//!
//! Forward: [`group_norm_partial_sums_kernel()`] (one cube per chunk of a block: shifted sums),
//! [`group_norm_stats_kernel()`] (one unit per block: its mean and `1 / sqrt(var + eps)`),
//! then [`group_norm_apply_kernel()`] (one unit per value). Backward,
//! with `dy` the gradient at the affine output (through SiLU when fused, recomputed from `x`)
//! and `xhat = (x - mean) * rstd`:
//! `dx = rstd * (gamma * dy - mean_g(gamma * dy) - xhat * mean_g(gamma * dy * xhat))`,
//! `dgamma_c = sum over n, s of dy * xhat`, `dbeta_c = sum over n, s of dy`. Four kernels:
//! [`group_norm_channel_sums_kernel()`] (one cube per row: `sum dy`, `sum dy * xhat`),
//! [`group_norm_coefficients_kernel()`] (one unit per block: the two group means above),
//! [`group_norm_input_grad_kernel()`] (one unit per value: `dx`) and
//! [`group_norm_param_grads_kernel()`] (one unit per channel: `dgamma`, `dbeta`). None needs
//! atomics.

use cubecl::prelude::*;

use crate::cube::reduce::cube_sum_pairs;

/// Units of the cubes that reduce a block or a row: a power of two (the tree reduction
/// halves it).
pub(crate) const REDUCE_UNITS: usize = 256;

/// The affine output's activation: SiLU when `silu`, else none.
#[cube]
fn activate(y: f32, #[comptime] silu: bool) -> f32 {
    let mut out = y;
    if silu {
        out = y / (f32::new(1.0) + (-y).exp());
    }
    out
}

/// The gradient at the affine output `y` from the gradient `grad` of the activation's output:
/// SiLU's derivative is `s * (1 + y * (1 - s))` with `s = sigmoid(y)`.
#[cube]
fn activation_grad(grad: f32, y: f32, #[comptime] silu: bool) -> f32 {
    let mut out = grad;
    if silu {
        let s = f32::new(1.0) / (f32::new(1.0) + (-y).exp());
        out = grad * s * (f32::new(1.0) + y * (f32::new(1.0) - s));
    }
    out
}

/// The channel of the value at `at` in memory.
#[cube]
fn channel_at(at: usize, channels: u32, spatial: u32, #[comptime] channels_last: bool) -> usize {
    let mut c = at % channels as usize;
    if !channels_last {
        c = (at / spatial as usize) % channels as usize;
    }
    c
}

/// The spatial position of the value at `at` in memory.
#[cube]
fn position_at(at: usize, channels: u32, spatial: u32, #[comptime] channels_last: bool) -> usize {
    let mut s = at % spatial as usize;
    if channels_last {
        s = (at / channels as usize) % spatial as usize;
    }
    s
}

/// Where the value at `at` in memory in x's layout lies in a tensor of the same shape in the
/// other layout (`at` itself when both are the same, decided at compile time).
#[cube]
fn same_value(
    at: usize,
    c: usize,
    channels: u32,
    spatial: u32,
    #[comptime] x_last: bool,
    #[comptime] other_last: bool,
) -> usize {
    let mut other = at;
    if comptime![x_last != other_last] {
        let n = at / (channels as usize * spatial as usize);
        let s = position_at(at, channels, spatial, x_last);
        other = row_value(n, c, s, channels, spatial, other_last);
    }
    other
}

/// The block (`n * groups + g`) of the value at `at` in memory, in channel `c`.
#[cube]
fn block_at(at: usize, c: usize, channels: u32, spatial: u32, channels_per_group: u32) -> usize {
    let groups = channels / channels_per_group;
    let n = at / (channels as usize * spatial as usize);
    n * groups as usize + c / channels_per_group as usize
}

/// Where in memory the `j`-th value of `block` lies, its values numbered in memory order
/// (position-major when channels last, where each position holds `channels_per_group`
/// adjacent values of the block).
#[cube]
fn block_value(
    block: usize,
    j: usize,
    channels: u32,
    spatial: u32,
    channels_per_group: u32,
    #[comptime] channels_last: bool,
) -> usize {
    let cpg = channels_per_group as usize;
    let width = channels as usize;
    let mut at = block * cpg * spatial as usize + j;
    if channels_last {
        let groups = width / cpg;
        let n = block / groups;
        let g = block % groups;
        at = n * width * spatial as usize + (j / cpg) * width + g * cpg + j % cpg;
    }
    at
}

/// Where in memory the `s`-th value of row (sample `n`, channel `c`) lies.
#[cube]
fn row_value(
    n: usize,
    c: usize,
    s: usize,
    channels: u32,
    spatial: u32,
    #[comptime] channels_last: bool,
) -> usize {
    let width = channels as usize;
    let len = spatial as usize;
    let mut at = (n * width + c) * len + s;
    if channels_last {
        at = n * width * len + s * width + c;
    }
    at
}

/// Shifted sums of one chunk of a block: the grid is `(splits, groups, batch)`, cube
/// `(split, g, n)` adds up the `chunk_len` values of block `n * groups + g` from
/// `split * chunk_len` (fewer in the last chunk) with [`REDUCE_UNITS`] units and writes
/// `sum (x - x_0)` and `sum (x - x_0)^2` to `partials[(block * splits + split) * 2 + {0, 1}]`.
/// The shift `x_0` is the block's first value, the same for every chunk (so the chunks' sums
/// add up) and near the mean, so that the variance `E[d^2] - E[d]^2` does not lose its
/// digits to a large mean. Splitting a block over several cubes keeps the GPU busy: SD 1.5's
/// 32 groups of batch 2 are only 64 blocks, each of 40960 values, for a GPU of 132
/// multiprocessors.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm_partial_sums_kernel<E: Float>(
    x: &Tensor<E>,
    partials: &mut Tensor<f32>,
    channels: u32,
    spatial: u32,
    channels_per_group: u32,
    chunk_len: u32,
    #[comptime] units: usize,
    #[comptime] x_last: bool,
    #[define(E)] _dtype: StorageType,
) {
    let splits = CUBE_COUNT_X as usize;
    let split = CUBE_POS_X as usize;
    let block = CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize;
    let len = channels_per_group as usize * spatial as usize;
    let end = usize::min((split + 1) * chunk_len as usize, len);
    let unit = UNIT_POS_X as usize;
    let first = block_value(block, 0, channels, spatial, channels_per_group, x_last);
    let shift = f32::cast_from(x[first]);
    let mut sum = f32::new(0.0);
    let mut sum_sq = f32::new(0.0);
    let mut i = split * chunk_len as usize + unit;
    while i < end {
        let at = block_value(block, i, channels, spatial, channels_per_group, x_last);
        let d = f32::cast_from(x[at]) - shift;
        sum += d;
        sum_sq += d * d;
        i += units;
    }
    let mut sums = SharedMemory::<f32>::new(2 * units);
    sums[unit] = sum;
    sums[units + unit] = sum_sq;
    sync_cube();
    cube_sum_pairs(&mut sums, units);
    if unit == 0 {
        let at = (block * splits + split) * 2;
        partials[at] = sums[0];
        partials[at + 1] = sums[units];
    }
}

/// Mean and reciprocal standard deviation (biased variance, `1 / sqrt(var + eps)`) of each
/// block from its chunks' shifted sums, one unit per block; `mean` and `rstd` `[blocks]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm_stats_kernel<E: Float>(
    x: &Tensor<E>,
    partials: &Tensor<f32>,
    mean: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    channels: u32,
    spatial: u32,
    channels_per_group: u32,
    splits: u32,
    inv_len: f32,
    epsilon: f32,
    #[comptime] x_last: bool,
    #[define(E)] _dtype: StorageType,
) {
    let block = ABSOLUTE_POS;
    if block < mean.len() {
        let splits = splits as usize;
        let mut sum = f32::new(0.0);
        let mut sum_sq = f32::new(0.0);
        for split in 0..splits {
            let at = (block * splits + split) * 2;
            sum += partials[at];
            sum_sq += partials[at + 1];
        }
        let d_mean = sum * inv_len;
        let var = f32::max(sum_sq * inv_len - d_mean * d_mean, f32::new(0.0));
        let first = block_value(block, 0, channels, spatial, channels_per_group, x_last);
        mean[block] = f32::cast_from(x[first]) + d_mean;
        rstd[block] = f32::new(1.0) / (var + epsilon).sqrt();
    }
}

/// `out = activate((x - mean) * rstd * gamma + beta)`, one unit per value of x.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm_apply_kernel<E: Float>(
    x: &Tensor<E>,
    gamma: &Tensor<E>,
    beta: &Tensor<E>,
    mean: &Tensor<f32>,
    rstd: &Tensor<f32>,
    out: &mut Tensor<E>,
    channels: u32,
    spatial: u32,
    channels_per_group: u32,
    #[comptime] silu: bool,
    #[comptime] x_last: bool,
    #[comptime] out_last: bool,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let c = channel_at(i, channels, spatial, x_last);
        let block = block_at(i, c, channels, spatial, channels_per_group);
        let xhat = (f32::cast_from(x[i]) - mean[block]) * rstd[block];
        let y = xhat * f32::cast_from(gamma[c]) + f32::cast_from(beta[c]);
        let at = same_value(i, c, channels, spatial, x_last, out_last);
        out[at] = E::cast_from(activate(y, silu));
    }
}

/// Per row (sample, channel): `sum_dy = sum dy`, `sum_dy_xhat = sum dy * xhat`, both
/// `[batch * channels]`; one cube of [`REDUCE_UNITS`] units per row, the grid
/// `(channels, batch)`. Channels last, a row's values lie `channels` apart: the cubes of
/// neighbouring channels read the same cache lines.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm_channel_sums_kernel<E: Float>(
    x: &Tensor<E>,
    gamma: &Tensor<E>,
    beta: &Tensor<E>,
    mean: &Tensor<f32>,
    rstd: &Tensor<f32>,
    grad_out: &Tensor<E>,
    sum_dy: &mut Tensor<f32>,
    sum_dy_xhat: &mut Tensor<f32>,
    spatial: u32,
    channels_per_group: u32,
    #[comptime] units: usize,
    #[comptime] silu: bool,
    #[comptime] x_last: bool,
    #[comptime] grad_last: bool,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    let c = CUBE_POS_X as usize;
    let n = CUBE_POS_Y as usize;
    let channels = CUBE_COUNT_X;
    let block = row / channels_per_group as usize;
    let len = spatial as usize;
    let unit = UNIT_POS_X as usize;
    let m = mean[block];
    let r = rstd[block];
    let scale = f32::cast_from(gamma[c]);
    let shift = f32::cast_from(beta[c]);
    let mut dy_sum = f32::new(0.0);
    let mut dy_xhat_sum = f32::new(0.0);
    let mut i = unit;
    while i < len {
        let at = row_value(n, c, i, channels, spatial, x_last);
        let xhat = (f32::cast_from(x[at]) - m) * r;
        let grad = f32::cast_from(grad_out[row_value(n, c, i, channels, spatial, grad_last)]);
        let dy = activation_grad(grad, xhat * scale + shift, silu);
        dy_sum += dy;
        dy_xhat_sum += dy * xhat;
        i += units;
    }
    let mut sums = SharedMemory::<f32>::new(2 * units);
    sums[unit] = dy_sum;
    sums[units + unit] = dy_xhat_sum;
    sync_cube();
    cube_sum_pairs(&mut sums, units);
    if unit == 0 {
        sum_dy[row] = sums[0];
        sum_dy_xhat[row] = sums[units];
    }
}

/// Per block (sample, group), one unit each: `coefficients[2 b] = mean_g(gamma * dy)` and
/// `coefficients[2 b + 1] = mean_g(gamma * dy * xhat)`, from the rows' sums.
#[cube(launch)]
pub(crate) fn group_norm_coefficients_kernel<E: Float>(
    gamma: &Tensor<E>,
    sum_dy: &Tensor<f32>,
    sum_dy_xhat: &Tensor<f32>,
    coefficients: &mut Tensor<f32>,
    groups: u32,
    channels_per_group: u32,
    inv_len: f32,
    #[define(E)] _dtype: StorageType,
) {
    let block = ABSOLUTE_POS;
    if block * 2 < coefficients.len() {
        let cpg = channels_per_group as usize;
        let channels = groups as usize * cpg;
        let n = block / groups as usize;
        let first = (block % groups as usize) * cpg;
        let mut dy = f32::new(0.0);
        let mut dy_xhat = f32::new(0.0);
        for j in 0..cpg {
            let c = first + j;
            let scale = f32::cast_from(gamma[c]);
            dy += scale * sum_dy[n * channels + c];
            dy_xhat += scale * sum_dy_xhat[n * channels + c];
        }
        coefficients[2 * block] = dy * inv_len;
        coefficients[2 * block + 1] = dy_xhat * inv_len;
    }
}

/// `dx = rstd * (gamma * dy - coefficients[2 b] - xhat * coefficients[2 b + 1])`, one unit
/// per value of x; dx is laid out like x.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm_input_grad_kernel<E: Float>(
    x: &Tensor<E>,
    gamma: &Tensor<E>,
    beta: &Tensor<E>,
    mean: &Tensor<f32>,
    rstd: &Tensor<f32>,
    grad_out: &Tensor<E>,
    coefficients: &Tensor<f32>,
    grad_x: &mut Tensor<E>,
    channels: u32,
    spatial: u32,
    channels_per_group: u32,
    #[comptime] silu: bool,
    #[comptime] x_last: bool,
    #[comptime] grad_last: bool,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i < grad_x.len() {
        let c = channel_at(i, channels, spatial, x_last);
        let block = block_at(i, c, channels, spatial, channels_per_group);
        let r = rstd[block];
        let xhat = (f32::cast_from(x[i]) - mean[block]) * r;
        let scale = f32::cast_from(gamma[c]);
        let y = xhat * scale + f32::cast_from(beta[c]);
        let grad = grad_out[same_value(i, c, channels, spatial, x_last, grad_last)];
        let dy = activation_grad(f32::cast_from(grad), y, silu);
        let dx = r * (scale * dy - coefficients[2 * block] - xhat * coefficients[2 * block + 1]);
        grad_x[i] = E::cast_from(dx);
    }
}

/// `dgamma_c = sum over n of sum_dy_xhat[n, c]`, `dbeta_c = sum over n of sum_dy[n, c]`, one
/// unit per channel.
#[cube(launch)]
pub(crate) fn group_norm_param_grads_kernel<E: Float>(
    sum_dy: &Tensor<f32>,
    sum_dy_xhat: &Tensor<f32>,
    grad_gamma: &mut Tensor<E>,
    grad_beta: &mut Tensor<E>,
    batch: u32,
    #[define(E)] _dtype: StorageType,
) {
    let c = ABSOLUTE_POS;
    let channels = grad_gamma.len();
    if c < channels {
        let mut dgamma = f32::new(0.0);
        let mut dbeta = f32::new(0.0);
        for n in 0..batch as usize {
            dgamma += sum_dy_xhat[n * channels + c];
            dbeta += sum_dy[n * channels + c];
        }
        grad_gamma[c] = E::cast_from(dgamma);
        grad_beta[c] = E::cast_from(dbeta);
    }
}
