//! Device functions the attention kernels share: where a row starts, reading a unit's part
//! of a row into registers, dot products and weighted sums of those parts with tile rows,
//! adding the parts of a row's units up, the length of a tile, and streaming tiles into
//! shared memory.
//!
//! Row tiles live in shared memory as vectors of [`LANES`] f32 values, a row of `head_dim`
//! values taking [`tile_row_vectors`] of them (those past `head_dim` zeros: the last one when
//! `head_dim` is not a multiple of [`LANES`], whole vectors when the row's units need them
//! to get equal parts). The kernels' inner loops read one value of shared memory per
//! multiply-add, and every unit of a cube reads the same one: a scalar read would cost one
//! load instruction per multiply-add, and NVIDIA's multiprocessors issue shared-memory loads
//! at a quarter of their f32 multiply-add rate, so such a loop would be bound by the loads. A
//! vector read brings [`LANES`] values per instruction (a 128-bit load).

use cubecl::prelude::*;

/// f32 values per shared-memory vector.
pub(crate) const LANES: usize = 4;

/// A vector of [`LANES`] f32 values, the element of the row tiles.
pub(crate) type Lanes = Vector<f32, Const<LANES>>;

/// Rows (query rows in the forward and dQ kernels, key rows in the dK/dV kernel) handled by
/// one cube: each by `groups` units, see [`part_vectors`].
pub(crate) const ROWS_PER_CUBE: usize = 64;

/// Vectors of [`LANES`] values that hold a row of `head_dim` values.
pub(crate) const fn row_vectors(head_dim: usize) -> usize {
    head_dim.div_ceil(LANES)
}

/// Vectors of a row that each of its `groups` units holds: a unit keeps its part of every
/// row it owns (query, output, accumulators) in registers and computes its part of each dot
/// product, and the units of a row add their parts up through shared memory
/// ([`sum_over_parts()`]). One unit per row holds whole rows, which at SD's wider heads takes
/// more registers than a CUDA thread has (see `tools/kernel_registers.sh`): the parts
/// keep them below that.
pub(crate) const fn part_vectors(head_dim: usize, groups: usize) -> usize {
    row_vectors(head_dim).div_ceil(groups)
}

/// Values of a unit's part of a row: [`part_vectors`] whole vectors, the values past
/// `head_dim` zero.
pub(crate) const fn part_width(head_dim: usize, groups: usize) -> usize {
    part_vectors(head_dim, groups) * LANES
}

/// Vectors per row of a shared-memory tile: every unit's part, zeros past `head_dim`.
pub(crate) const fn tile_row_vectors(head_dim: usize, groups: usize) -> usize {
    part_vectors(head_dim, groups) * groups
}

/// f32 values of the shared memory through which the units of a row add up `count` partial
/// sums each ([`sum_over_parts()`]): two buffers (consecutive exchanges alternate, so one
/// barrier per exchange suffices) of `groups * count` values per row; one unused value when
/// a row has one unit.
pub(crate) const fn exchange_len(groups: usize, count: usize) -> usize {
    if groups > 1 {
        2 * groups * count * ROWS_PER_CUBE
    } else {
        1
    }
}

/// This unit's row within its cube, and which part of it the unit holds: the units of a
/// part are consecutive (a warp reads the same vectors of a tile row, one broadcast).
#[cube]
pub(crate) fn unit_row_and_part() -> (usize, usize) {
    let unit = UNIT_POS_X as usize;
    (unit % ROWS_PER_CUBE, unit / ROWS_PER_CUBE)
}

/// Fills `row` (of [`part_width`] values) with this unit's part of the `head_dim` values of
/// `x` at `base`, which start at column `first_col`, as f32 times `scale`, and zeros past
/// `head_dim`; with zeros only for a unit past the last row (`active` false), which must
/// still take part in the cube's tile loads and barriers.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_part<E: Float>(
    x: &Tensor<E>,
    row: &mut Array<f32>,
    base: usize,
    first_col: usize,
    scale: f32,
    active: bool,
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
) {
    #[unroll]
    for c in 0..comptime!(part_width(head_dim, groups)) {
        let mut value = f32::new(0.0);
        if active && first_col + c < head_dim {
            value = f32::cast_from(x[base + first_col + c]) * scale;
        }
        row[c] = value;
    }
}

/// Writes this unit's part of a row, `row` times `factor`, into `x` at `base` (the columns
/// from `first_col` on that lie within `head_dim`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_part<E: Float>(
    x: &mut Tensor<E>,
    row: &Array<f32>,
    base: usize,
    first_col: usize,
    factor: f32,
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
) {
    #[unroll]
    for c in 0..comptime!(part_width(head_dim, groups)) {
        if first_col + c < head_dim {
            x[base + first_col + c] = E::cast_from(row[c] * factor);
        }
    }
}

/// Sets the [`part_width`] values of `row` to zero.
#[cube]
pub(crate) fn zero_part(
    row: &mut Array<f32>,
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
) {
    #[unroll]
    for c in 0..comptime!(part_width(head_dim, groups)) {
        row[c] = f32::new(0.0);
    }
}

/// `row . tile_row` over this unit's part: the dot product of the unit's part of a row with
/// the same part (from vector `first_vector` on) of row `r` of a row tile (zeros in the
/// padding on both sides). Summed in [`LANES`] partial sums, one per vector lane: four
/// independent chains of multiply-adds instead of one, each waiting for the previous result.
#[cube]
pub(crate) fn dot_tile_part(
    row: &Array<f32>,
    tile: &SharedMemory<Lanes>,
    r: usize,
    first_vector: usize,
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
) -> f32 {
    let stride = comptime!(tile_row_vectors(head_dim, groups));
    let base = r * stride + first_vector;
    let mut sums = Lanes::new(f32::new(0.0));
    #[unroll]
    for c in 0..comptime!(part_vectors(head_dim, groups)) {
        let values = tile[base + c];
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

/// `acc += weight * tile_row` over this unit's part, with row `r` of a row tile.
#[cube]
pub(crate) fn add_tile_part(
    acc: &mut Array<f32>,
    weight: f32,
    tile: &SharedMemory<Lanes>,
    r: usize,
    first_vector: usize,
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
) {
    let stride = comptime!(tile_row_vectors(head_dim, groups));
    let base = r * stride + first_vector;
    #[unroll]
    for c in 0..comptime!(part_vectors(head_dim, groups)) {
        let values = tile[base + c];
        #[unroll]
        for e in 0..LANES {
            acc[c * LANES + e] += weight * values[e];
        }
    }
}

/// Replaces each of the `count` partial sums in `values` by its total over the `groups`
/// units of this unit's row (`unit_row`, `part` from [`unit_row_and_part()`]): every unit
/// writes its parts into `buffer` (0 or 1) of `exchange` ([`exchange_len`] values), the cube
/// synchronises, and every unit adds the row's parts up in the same order, so all of them
/// hold the same totals. Alternate `buffer` between calls: a unit may then write the next
/// parts while others still read these, and one barrier per call suffices. A no-op with
/// one unit per row. Every unit of the cube must call it (it synchronises the cube).
#[cube]
pub(crate) fn sum_over_parts(
    values: &mut Array<f32>,
    exchange: &mut SharedMemory<f32>,
    buffer: usize,
    unit_row: usize,
    part: usize,
    #[comptime] count: usize,
    #[comptime] groups: usize,
) {
    if comptime![groups > 1] {
        let base = buffer * comptime!(groups * count * ROWS_PER_CUBE);
        #[unroll]
        for i in 0..count {
            exchange[base + (part * count + i) * ROWS_PER_CUBE + unit_row] = values[i];
        }
        sync_cube();
        #[unroll]
        for i in 0..count {
            let mut total = f32::new(0.0);
            #[unroll]
            for g in 0..groups {
                total += exchange[base + (g * count + i) * ROWS_PER_CUBE + unit_row];
            }
            values[i] = total;
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
/// own strides, see [`row_offset()`]) into the row tiles `x_tile` and `y_tile` as f32 vectors
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
    #[comptime] groups: usize,
) {
    let x_first = row_offset(x, b, h, first);
    let y_first = row_offset(y, b, h, first);
    let vectors = comptime!(tile_row_vectors(head_dim, groups));
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
/// from `offset` on, into `a_tile` and `b_tile`; shared like [`load_row_tiles()`].
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
