//! The layer-norm kernels: `y = (x - mean_r) * rstd_r * gamma_d + beta_d` over each row `r`
//! of a contiguous x `[rows, dim]`, and its backward. Statistics and sums are f32 whatever
//! the input dtype.
//!
//! Forward, one kernel: [`layer_norm_forward_kernel()`], one cube per row (of 32 to 256 units,
//! by the row's width: see `launch::row_units`), walks the row three times: its mean, the mean of its squared deviations from that mean (two passes, as the
//! plain norm computes them: no cancellation whatever the mean), then the output. A row is
//! at most a few thousand values (320 to 1280 in SD 1.5's UNet, 768 in CLIP), so the second
//! and third walks read it from the cache.
//!
//! Backward, with `xhat = (x - mean) * rstd` and `g = gamma * dy`:
//! `dx = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat))`,
//! `dgamma_d = sum over rows of dy * xhat`, `dbeta_d = sum over rows of dy`.
//! [`layer_norm_input_grad_kernel()`] (one cube per row: the two row means, then `dx`) and
//! [`layer_norm_param_partials_kernel()`] (one unit per column and range of rows: f32 partial
//! sums of `dgamma` and `dbeta`), which `sum_splits_kernel` adds up. None needs atomics.
//!
//! The row kernels may run a few more cubes than rows (a grid of over 65535 cubes is spread
//! over two dimensions): those compute the last row again and write nothing. Every unit of
//! a cube reaches the same barriers, so no barrier sits under a condition.

use cubecl::prelude::*;

use crate::cube::reduce::{cube_sum, cube_sum_pairs};

/// Mean and `1 / sqrt(var + eps)` of each row, and the normalised, scaled and shifted row:
/// `out` as x, `mean` and `rstd` f32 `[rows]`. One cube of `units` units per row (a power of
/// two: the tree reductions halve it).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_forward_kernel<E: Float>(
    x: &Tensor<E>,
    gamma: &Tensor<E>,
    beta: &Tensor<E>,
    out: &mut Tensor<E>,
    mean: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    inv_dim: f32,
    epsilon: f32,
    #[comptime] units: usize,
    #[define(E)] _dtype: StorageType,
) {
    let rows = mean.len();
    let dim = gamma.len();
    let row = usize::min(CUBE_POS, rows - 1);
    let base = row * dim;
    let unit = UNIT_POS_X as usize;

    let mut sum = f32::new(0.0);
    let mut i = unit;
    while i < dim {
        sum += f32::cast_from(x[base + i]);
        i += units;
    }
    let mut sums = SharedMemory::<f32>::new(units);
    sums[unit] = sum;
    sync_cube();
    cube_sum(&mut sums);
    let m = sums[0] * inv_dim;

    let mut squares = f32::new(0.0);
    let mut j = unit;
    while j < dim {
        let d = f32::cast_from(x[base + j]) - m;
        squares += d * d;
        j += units;
    }
    let mut deviations = SharedMemory::<f32>::new(units);
    deviations[unit] = squares;
    sync_cube();
    cube_sum(&mut deviations);
    let r = f32::new(1.0) / (deviations[0] * inv_dim + epsilon).sqrt();

    if CUBE_POS < rows {
        let mut k = unit;
        while k < dim {
            let xhat = (f32::cast_from(x[base + k]) - m) * r;
            let y = xhat * f32::cast_from(gamma[k]) + f32::cast_from(beta[k]);
            out[base + k] = E::cast_from(y);
            k += units;
        }
        if unit == 0 {
            mean[row] = m;
            rstd[row] = r;
        }
    }
}

/// `dx = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat))` with `g = gamma * dy`, one
/// cube of `units` units per row (a power of two).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_input_grad_kernel<E: Float>(
    x: &Tensor<E>,
    gamma: &Tensor<E>,
    mean: &Tensor<f32>,
    rstd: &Tensor<f32>,
    grad_out: &Tensor<E>,
    grad_x: &mut Tensor<E>,
    inv_dim: f32,
    #[comptime] units: usize,
    #[define(E)] _dtype: StorageType,
) {
    let rows = mean.len();
    let dim = gamma.len();
    let row = usize::min(CUBE_POS, rows - 1);
    let base = row * dim;
    let unit = UNIT_POS_X as usize;
    let m = mean[row];
    let r = rstd[row];

    let mut g_sum = f32::new(0.0);
    let mut g_xhat_sum = f32::new(0.0);
    let mut i = unit;
    while i < dim {
        let xhat = (f32::cast_from(x[base + i]) - m) * r;
        let g = f32::cast_from(gamma[i]) * f32::cast_from(grad_out[base + i]);
        g_sum += g;
        g_xhat_sum += g * xhat;
        i += units;
    }
    let mut sums = SharedMemory::<f32>::new(2 * units);
    sums[unit] = g_sum;
    sums[units + unit] = g_xhat_sum;
    sync_cube();
    cube_sum_pairs(&mut sums, units);
    let g_mean = sums[0] * inv_dim;
    let g_xhat_mean = sums[units] * inv_dim;

    if CUBE_POS < rows {
        let mut k = unit;
        while k < dim {
            let xhat = (f32::cast_from(x[base + k]) - m) * r;
            let g = f32::cast_from(gamma[k]) * f32::cast_from(grad_out[base + k]);
            grad_x[base + k] = E::cast_from(r * (g - g_mean - xhat * g_xhat_mean));
            k += units;
        }
    }
}

/// Partial sums of the weights' gradients over one range of rows: the grid is
/// `(column cubes, splits)`, unit `d` of it walks rows `split * rows_per_split` to the
/// range's end (the last is shorter) and writes `sum dy * xhat` to `part_gamma[split, d]` and
/// `sum dy` to `part_beta[split, d]` (f32 `[splits, dim]`). Neighbouring units read
/// neighbouring columns of a row, so every read of a cube is one contiguous piece of it.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_param_partials_kernel<E: Float>(
    x: &Tensor<E>,
    mean: &Tensor<f32>,
    rstd: &Tensor<f32>,
    grad_out: &Tensor<E>,
    part_gamma: &mut Tensor<f32>,
    part_beta: &mut Tensor<f32>,
    dim: u32,
    rows_per_split: u32,
    #[define(E)] _dtype: StorageType,
) {
    let dim = dim as usize;
    let column = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let split = CUBE_POS_Y as usize;
    if column < dim {
        let first = split * rows_per_split as usize;
        let end = usize::min(first + rows_per_split as usize, mean.len());
        let mut dgamma = f32::new(0.0);
        let mut dbeta = f32::new(0.0);
        let mut row = first;
        while row < end {
            let at = row * dim + column;
            let dy = f32::cast_from(grad_out[at]);
            dgamma += dy * (f32::cast_from(x[at]) - mean[row]) * rstd[row];
            dbeta += dy;
            row += 1;
        }
        part_gamma[split * dim + column] = dgamma;
        part_beta[split * dim + column] = dbeta;
    }
}
