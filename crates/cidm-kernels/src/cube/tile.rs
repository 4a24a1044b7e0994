//! Device functions the attention kernels share: reading a row into registers, the length of
//! a tile, and streaming two tiles of rows into shared memory.

use cubecl::prelude::*;

/// Fills `row` with the `head_dim` values of `x` at `base`, as f32 times `scale`; with
/// zeros for a unit past the last row (`active` false), which must still take part in the
/// cube's tile loads and barriers.
#[cube]
pub(crate) fn read_row<E: Float>(
    x: &Tensor<E>,
    row: &mut Array<f32>,
    base: usize,
    scale: f32,
    active: bool,
    #[comptime] head_dim: usize,
) {
    #[unroll]
    for c in 0..head_dim {
        let mut value = f32::new(0.0);
        if active {
            value = f32::cast_from(x[base + c]) * scale;
        }
        row[c] = value;
    }
}

/// Sets the first `head_dim` values of `row` to zero.
#[cube]
pub(crate) fn zero_row(row: &mut Array<f32>, #[comptime] head_dim: usize) {
    #[unroll]
    for c in 0..head_dim {
        row[c] = f32::new(0.0);
    }
}

/// Rows of the tile (or range of rows) that starts at row `start` of a sequence of `len`
/// rows: `tile`, or fewer at the end.
#[cube]
pub(crate) fn tile_len(len: usize, start: usize, tile: usize) -> usize {
    let mut count = len - start;
    if count > tile {
        count = tile;
    }
    count
}

/// Copies `len` consecutive values of `a` and of `b`, from `offset` on, into `a_tile` and
/// `b_tile` as f32. Every unit of the cube takes a strided share (consecutive units read
/// consecutive values); the caller synchronises the cube before reading the tiles.
#[cube]
pub(crate) fn load_tile_pair<E: Float>(
    a: &Tensor<E>,
    b: &Tensor<E>,
    a_tile: &mut SharedMemory<f32>,
    b_tile: &mut SharedMemory<f32>,
    offset: usize,
    len: usize,
) {
    let mut idx = UNIT_POS_X as usize;
    while idx < len {
        a_tile[idx] = f32::cast_from(a[offset + idx]);
        b_tile[idx] = f32::cast_from(b[offset + idx]);
        idx += CUBE_DIM_X as usize;
    }
}
