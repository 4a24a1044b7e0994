//! Device functions the attention kernels share: where a row starts, reading a row into
//! registers, the length of a tile, and streaming tiles into shared memory.
//!
//! Row tiles live in shared memory as vectors of [`LANES`] f32 values, a row of `head_dim`
//! values taking [`row_vectors`] of them (the last one padded with zeros when `head_dim` is
//! not a multiple of [`LANES`]). The kernels' inner loops read one value of shared memory per
//! multiply-add, and every unit of a cube reads the same one: a scalar read would cost one
//! load instruction per multiply-add, and NVIDIA's multiprocessors issue shared-memory loads
//! at a quarter of their f32 multiply-add rate, so such a loop would be bound by the loads. A
//! vector read brings [`LANES`] values per instruction (a 128-bit load).

use cubecl::prelude::*;

/// f32 values per shared-memory vector.
pub(crate) const LANES: usize = 4;

/// A vector of [`LANES`] f32 values, the element of the row tiles.
pub(crate) type Lanes = Vector<f32, Const<LANES>>;

/// Vectors of [`LANES`] values that hold a row of `head_dim` values.
pub(crate) const fn row_vectors(head_dim: usize) -> usize {
    head_dim.div_ceil(LANES)
}

/// `head_dim` rounded up to whole vectors: the length of the kernels' per-unit rows, whose
/// values past `head_dim` stay zero.
pub(crate) const fn padded_width(head_dim: usize) -> usize {
    row_vectors(head_dim) * LANES
}

/// Fills `row` (of [`padded_width`] values) with the `head_dim` values of `x` at `base`, as
/// f32 times `scale`, and zeros after them; with zeros only for a unit past the last row
/// (`active` false), which must still take part in the cube's tile loads and barriers.
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
    for c in 0..comptime!(padded_width(head_dim)) {
        let mut value = f32::new(0.0);
        if active && c < head_dim {
            value = f32::cast_from(x[base + c]) * scale;
        }
        row[c] = value;
    }
}

/// Sets the [`padded_width`] values of `row` to zero.
#[cube]
pub(crate) fn zero_row(row: &mut Array<f32>, #[comptime] head_dim: usize) {
    #[unroll]
    for c in 0..comptime!(padded_width(head_dim)) {
        row[c] = f32::new(0.0);
    }
}

/// `row . tile_row`: the dot product of a unit's row with row `r` of a row tile (zeros in
/// the padding on both sides). Summed in [`LANES`] partial sums, one per vector lane: four
/// independent chains of multiply-adds instead of one chain of `head_dim`, each waiting
/// for the previous result.
#[cube]
pub(crate) fn dot_tile_row(
    row: &Array<f32>,
    tile: &SharedMemory<Lanes>,
    r: usize,
    #[comptime] head_dim: usize,
) -> f32 {
    let vectors = comptime!(row_vectors(head_dim));
    let mut sums = Lanes::new(f32::new(0.0));
    #[unroll]
    for c in 0..vectors {
        let values = tile[r * vectors + c];
        #[unroll]
        for e in 0..LANES {
            sums[e] += row[c * LANES + e] * values[e];
        }
    }
    let mut sum = sums[0];
    #[unroll]
    for e in 1..LANES {
        sum += sums[e];
    }
    sum
}

/// `acc += weight * tile_row`, with row `r` of a row tile.
#[cube]
pub(crate) fn add_tile_row(
    acc: &mut Array<f32>,
    weight: f32,
    tile: &SharedMemory<Lanes>,
    r: usize,
    #[comptime] head_dim: usize,
) {
    let vectors = comptime!(row_vectors(head_dim));
    #[unroll]
    for c in 0..vectors {
        let values = tile[r * vectors + c];
        #[unroll]
        for e in 0..LANES {
            acc[c * LANES + e] += weight * values[e];
        }
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

/// Where row `row` of head `h` of sample `b` starts in `t`, a `[batch, heads, rows,
/// head_dim]` tensor of any strides whose rows are contiguous (the host side sees to that).
#[cube]
pub(crate) fn row_offset<E: CubePrimitive>(t: &Tensor<E>, b: usize, h: usize, row: usize) -> usize {
    b * t.stride(0) + h * t.stride(1) + row * t.stride(2)
}

/// Copies rows `first..first + rows` of head `h` of sample `b` of `x` and of `y` (each in its
/// own strides, see [`row_offset`]) into the row tiles `x_tile` and `y_tile` as f32 vectors
/// (zeros in the padding). Every unit of the cube takes a strided share of the vectors
/// (consecutive units read consecutive vectors of a row); the caller synchronises the cube
/// before reading the tiles.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_row_tiles<E: Float>(
    x: &Tensor<E>,
    y: &Tensor<E>,
    x_tile: &mut SharedMemory<Lanes>,
    y_tile: &mut SharedMemory<Lanes>,
    b: usize,
    h: usize,
    first: usize,
    rows: usize,
    #[comptime] head_dim: usize,
) {
    let x_first = row_offset(x, b, h, first);
    let y_first = row_offset(y, b, h, first);
    let vectors = comptime!(row_vectors(head_dim));
    let len = rows * vectors;
    let mut idx = UNIT_POS_X as usize;
    while idx < len {
        let row = idx / vectors;
        let col = (idx % vectors) * LANES;
        let x_base = x_first + row * x.stride(2) + col;
        let y_base = y_first + row * y.stride(2) + col;
        let mut x_values = Lanes::empty();
        let mut y_values = Lanes::empty();
        #[unroll]
        for e in 0..LANES {
            let mut x_value = f32::new(0.0);
            let mut y_value = f32::new(0.0);
            if col + e < head_dim {
                x_value = f32::cast_from(x[x_base + e]);
                y_value = f32::cast_from(y[y_base + e]);
            }
            x_values[e] = x_value;
            y_values[e] = y_value;
        }
        x_tile[idx] = x_values;
        y_tile[idx] = y_values;
        idx += CUBE_DIM_X as usize;
    }
}

/// Copies `len` consecutive values of `a` and of `b` (one per row, such as the logsumexp),
/// from `offset` on, into `a_tile` and `b_tile`; shared like [`load_row_tiles`].
#[cube]
pub(crate) fn load_value_tiles(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    a_tile: &mut SharedMemory<f32>,
    b_tile: &mut SharedMemory<f32>,
    offset: usize,
    len: usize,
) {
    let mut idx = UNIT_POS_X as usize;
    while idx < len {
        a_tile[idx] = a[offset + idx];
        b_tile[idx] = b[offset + idx];
        idx += CUBE_DIM_X as usize;
    }
}
