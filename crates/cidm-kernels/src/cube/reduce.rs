//! Reductions the kernels share: sums over the units of one cube in shared memory, and the
//! sum of f32 partial results over the ranges (splits) a grid was cut into.

use cubecl::prelude::*;

/// Adds up the values of `sums`, one per unit of the cube, into `sums[0]`, by halving. Every
/// unit of the cube must call it, after writing its value and a barrier; it ends with a
/// barrier, so every unit can read `sums[0]` after it.
#[cube]
pub(crate) fn cube_sum(sums: &mut SharedMemory<f32>) {
    let unit = UNIT_POS_X as usize;
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            sums[unit] += sums[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
}

/// Adds up the cube's `units` values of each half of `sums` (`[a_0..a_units, b_0..b_units]`)
/// into `sums[0]` and `sums[units]`, by halving, as [`cube_sum()`] does one.
#[cube]
pub(crate) fn cube_sum_pairs(sums: &mut SharedMemory<f32>, #[comptime] units: usize) {
    let unit = UNIT_POS_X as usize;
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            sums[unit] += sums[unit + stride];
            sums[units + unit] += sums[units + unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
}

/// `out = sum over s of part[s]`, cast to `E`: a result from the f32 partial sums of the
/// ranges a kernel's grid was split into, `part` `[splits, len]` and `out` `[len]`, one unit
/// per element. The attention's key/value gradients (ranges of query rows) and the layer
/// norm's parameter gradients (ranges of rows) end with it.
#[cube(launch)]
pub(crate) fn sum_splits_kernel<E: Float>(
    part: &Tensor<f32>,
    out: &mut Tensor<E>,
    splits: u32,
    #[define(E)] _dtype: StorageType,
) {
    let len = out.len();
    let idx = ABSOLUTE_POS;
    if idx < len {
        let mut sum = f32::new(0.0);
        for s in 0..splits as usize {
            sum += part[s * len + idx];
        }
        out[idx] = E::cast_from(sum);
    }
}
