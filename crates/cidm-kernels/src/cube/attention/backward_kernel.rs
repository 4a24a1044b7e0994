//! The flash-attention backward kernels (FlashAttention-2): the probabilities are recomputed
//! from the forward's per-row logsumexp, `P_ij = exp(s_ij - lse_i)`, and with
//! `D_i = rowsum(dO_i * O_i)` the gradients are
//! `dV_j = sum_i P_ij dO_i`, `dS_ij = P_ij (dO_i . V_j - D_i)`,
//! `dQ_i = scale * sum_j dS_ij K_j`, `dK_j = scale * sum_i dS_ij Q_i`.
//!
//! Three kernels, none needs atomics: [`flash_backward_dq_kernel()`] is parallel over query
//! rows (it also writes `D`), [`flash_backward_dkdv_kernel()`] over key rows and, as a third
//! grid dimension, over ranges of query rows; both stream the other side through shared
//! memory in tiles and accumulate in f32, a row's columns split over `groups` units as in
//! the forward (see `tile::part_vectors`). Each query range writes its partial sums of dK and
//! dV in f32, and `sum_splits_kernel` (shared, in `cube::reduce`) adds them up into the
//! gradients. The split exists for cross-attention, whose 77 keys give a dK/dV grid of a few
//! cubes per head: without it, a handful of units would each walk through all 4096 query rows
//! of SD 1.5's largest layers while the rest of the GPU idles.
// Tile counts are written `(len + tile - 1) / tile` in the kernels: plain integer arithmetic
// on a runtime length and a comptime tile, which the `#[cube]` expansion takes as is.
#![allow(clippy::manual_div_ceil)]

use cubecl::prelude::*;

use super::tile::{
    add_tile_part, dot_tile_part, exchange_len, load_row_tiles, load_value_tiles, part_vectors,
    part_width, read_part, row_offset, sum_over_parts, tile_len, tile_row_vectors,
    unit_row_and_part, write_part, zero_part, Lanes, LANES, ROWS_PER_CUBE,
};

/// Rows of the other side (keys for dQ, query rows for dK/dV) a unit walks at once: their
/// two dot products per row (the score and `dO . V` or `V . dO`), as partial sums over the
/// unit's part of the row, are added up over the row's units in one exchange, and the loop
/// over them is unrolled (their values stay in registers).
pub(crate) const ROW_CHUNK: usize = 4;

/// Partial sums exchanged per chunk: two per row of it.
pub(crate) const CHUNK_SUMS: usize = 2 * ROW_CHUNK;

/// Gradient of the queries, `groups` units per query row; also writes
/// `delta = rowsum(dO * O)`, which the key/value kernel launched after it reads. Layouts as
/// in the forward kernel: every `[batch, heads, tokens, head_dim]` tensor in its own strides,
/// `delta` as `lse`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_backward_dq_kernel<E: Float>(
    q: &Tensor<E>,
    k: &Tensor<E>,
    v: &Tensor<E>,
    out: &Tensor<E>,
    grad_out: &Tensor<E>,
    lse: &Tensor<f32>,
    grad_q: &mut Tensor<E>,
    delta: &mut Tensor<f32>,
    scale: f32,
    len_q: u32,
    len_k: u32,
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
    #[comptime] tile: usize,
    #[define(E)] _dtype: StorageType,
) {
    let lq = len_q as usize;
    let lk = len_k as usize;
    let bh = CUBE_POS_Y as usize;
    let b = bh / q.shape(1);
    let h = bh % q.shape(1);
    let (unit_row, part) = unit_row_and_part();
    let row = CUBE_POS_X as usize * ROWS_PER_CUBE + unit_row;
    let active = row < lq;
    let first_vector = part * comptime!(part_vectors(head_dim, groups));
    let first_col = first_vector * LANES;

    let width = comptime!(part_width(head_dim, groups));
    let mut q_row = Array::<f32>::new(width);
    let mut do_row = Array::<f32>::new(width);
    let mut acc = Array::<f32>::new(width);
    let q_base = row_offset(q, b, h, row);
    let do_base = row_offset(grad_out, b, h, row);
    read_part(
        q, &mut q_row, q_base, first_col, scale, active, head_dim, groups,
    );
    read_part(
        grad_out,
        &mut do_row,
        do_base,
        first_col,
        f32::new(1.0),
        active,
        head_dim,
        groups,
    );
    zero_part(&mut acc, head_dim, groups);

    // `D` of the row: this unit's part of it, then added up over the row's units. `sums`
    // holds the chunks' partial sums after that, each chunk writing all of them.
    let mut sums = Array::<f32>::new(CHUNK_SUMS);
    sums[0] = f32::new(0.0);
    let mut exchange = SharedMemory::<f32>::new(comptime!(exchange_len(groups, CHUNK_SUMS)));
    let mut buffer = 0usize;
    let out_base = row_offset(out, b, h, row);
    #[unroll]
    for c in 0..width {
        if active && first_col + c < head_dim {
            sums[0] += do_row[c] * f32::cast_from(out[out_base + first_col + c]);
        }
    }
    // One value to add up, in the first slots of buffer 0; the chunks' exchanges below then
    // alternate buffers, the first of them writing buffer 1, which these slots are not in.
    sum_over_parts(
        &mut sums,
        &mut exchange,
        buffer,
        unit_row,
        part,
        1usize,
        groups,
    );
    buffer = 1 - buffer;
    let row_delta = sums[0];
    let mut row_lse = f32::new(0.0);
    if active {
        row_lse = lse[bh * lq + row];
        if part == 0 {
            delta[bh * lq + row] = row_delta;
        }
    }

    let tile_vectors = comptime!(tile * tile_row_vectors(head_dim, groups));
    let mut k_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let mut v_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let tiles = (lk + tile - 1) / tile;
    for t in 0..tiles {
        let start = t * tile;
        let count = tile_len(lk, start, tile);
        load_row_tiles(
            k,
            v,
            &mut k_tile,
            &mut v_tile,
            b,
            h,
            start,
            count,
            head_dim,
            groups,
        );
        sync_cube();

        // Every unit walks the tile (the exchanges synchronise the cube); a unit past the
        // last query row works on zeros and writes nothing.
        let chunks = (count + ROW_CHUNK - 1) / ROW_CHUNK;
        for chunk in 0..chunks {
            let first = chunk * ROW_CHUNK;
            chunk_dot_pairs(
                &mut sums,
                &q_row,
                &k_tile,
                &do_row,
                &v_tile,
                first,
                count,
                &mut exchange,
                buffer,
                (unit_row, part, first_vector),
                head_dim,
                groups,
            );
            buffer = 1 - buffer;
            #[unroll]
            for j in 0..ROW_CHUNK {
                if first + j < count {
                    let ds = (sums[2 * j] - row_lse).exp() * (sums[2 * j + 1] - row_delta);
                    add_tile_part(
                        &mut acc,
                        ds,
                        &k_tile,
                        first + j,
                        first_vector,
                        head_dim,
                        groups,
                    );
                }
            }
        }
        sync_cube();
    }

    if active {
        let grad_base = row_offset(grad_q, b, h, row);
        write_part(grad_q, &acc, grad_base, first_col, scale, head_dim, groups);
    }
}

/// Partial gradients of the keys and values, `groups` units per key row, over the range of
/// `split_rows` query rows that starts at `CUBE_POS_Z * split_rows`; reads the `delta`
/// written by [`flash_backward_dq_kernel()`]. `part_k` and `part_v` are
/// `[splits, batch, heads, len_k, head_dim]` with the same strides (each split laid out as the
/// key gradient it adds up to), of dtype `P`: f32 partial sums when there are several ranges,
/// the gradients themselves (seen with a leading axis of one) in the inputs' dtype when one
/// range covers all query rows; `part_k` already carries the scale. Other layouts as in the
/// forward kernel.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_backward_dkdv_kernel<E: Float, P: Float>(
    q: &Tensor<E>,
    k: &Tensor<E>,
    v: &Tensor<E>,
    grad_out: &Tensor<E>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    part_k: &mut Tensor<P>,
    part_v: &mut Tensor<P>,
    scale: f32,
    len_q: u32,
    len_k: u32,
    split_rows: u32,
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
    #[comptime] tile: usize,
    #[define(E, P)] _dtypes: [StorageType; 2],
) {
    let lq = len_q as usize;
    let lk = len_k as usize;
    let bh = CUBE_POS_Y as usize;
    let b = bh / q.shape(1);
    let h = bh % q.shape(1);
    let (unit_row, part) = unit_row_and_part();
    let row = CUBE_POS_X as usize * ROWS_PER_CUBE + unit_row;
    let active = row < lk;
    let first_vector = part * comptime!(part_vectors(head_dim, groups));
    let first_col = first_vector * LANES;
    // This cube's query rows: [first, first + rows), the last range shorter.
    let first = CUBE_POS_Z as usize * split_rows as usize;
    let rows = tile_len(lq, first, split_rows as usize);

    // The key row is pre-multiplied by the scale, so a dot product is already a score.
    let width = comptime!(part_width(head_dim, groups));
    let mut k_row = Array::<f32>::new(width);
    let mut v_row = Array::<f32>::new(width);
    let mut dk = Array::<f32>::new(width);
    let mut dv = Array::<f32>::new(width);
    let k_base = row_offset(k, b, h, row);
    let v_base = row_offset(v, b, h, row);
    read_part(
        k, &mut k_row, k_base, first_col, scale, active, head_dim, groups,
    );
    read_part(
        v,
        &mut v_row,
        v_base,
        first_col,
        f32::new(1.0),
        active,
        head_dim,
        groups,
    );
    zero_part(&mut dk, head_dim, groups);
    zero_part(&mut dv, head_dim, groups);

    let mut sums = Array::<f32>::new(CHUNK_SUMS);
    let mut exchange = SharedMemory::<f32>::new(comptime!(exchange_len(groups, CHUNK_SUMS)));
    let mut buffer = 0usize;
    let tile_vectors = comptime!(tile * tile_row_vectors(head_dim, groups));
    let mut q_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let mut do_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let mut lse_tile = SharedMemory::<f32>::new(tile);
    let mut delta_tile = SharedMemory::<f32>::new(tile);
    let tiles = (rows + tile - 1) / tile;
    for t in 0..tiles {
        let start = t * tile;
        let count = tile_len(rows, start, tile);
        load_row_tiles(
            q,
            grad_out,
            &mut q_tile,
            &mut do_tile,
            b,
            h,
            first + start,
            count,
            head_dim,
            groups,
        );
        let value_offset = bh * lq + first + start;
        load_value_tiles(
            lse,
            delta,
            &mut lse_tile,
            &mut delta_tile,
            value_offset,
            count,
        );
        sync_cube();

        // Every unit walks the tile (the exchanges synchronise the cube); a unit past the
        // last key row works on zeros and writes nothing.
        let chunks = (count + ROW_CHUNK - 1) / ROW_CHUNK;
        for chunk in 0..chunks {
            let first_row = chunk * ROW_CHUNK;
            chunk_dot_pairs(
                &mut sums,
                &k_row,
                &q_tile,
                &v_row,
                &do_tile,
                first_row,
                count,
                &mut exchange,
                buffer,
                (unit_row, part, first_vector),
                head_dim,
                groups,
            );
            buffer = 1 - buffer;
            #[unroll]
            for i in 0..ROW_CHUNK {
                let r = first_row + i;
                if r < count {
                    let p = (sums[2 * i] - lse_tile[r]).exp();
                    let ds = p * (sums[2 * i + 1] - delta_tile[r]);
                    add_tile_part(&mut dv, p, &do_tile, r, first_vector, head_dim, groups);
                    add_tile_part(&mut dk, ds, &q_tile, r, first_vector, head_dim, groups);
                }
            }
        }
        sync_cube();
    }

    if active {
        let split = CUBE_POS_Z as usize;
        let part_base = split * part_k.stride(0)
            + b * part_k.stride(1)
            + h * part_k.stride(2)
            + row * part_k.stride(3);
        write_part(part_k, &dk, part_base, first_col, scale, head_dim, groups);
        write_part(
            part_v,
            &dv,
            part_base,
            first_col,
            f32::new(1.0),
            head_dim,
            groups,
        );
    }
}

/// The two dot products the backward needs for each of the [`ROW_CHUNK`] tile rows from
/// `first` (of the tile's `count`): `sums[2 i] = a . a_tile[first + i]` and
/// `sums[2 i + 1] = b . b_tile[first + i]` over whole rows, this unit's parts added up with
/// those of its row's other units (`unit`: its row in the cube, its part, the part's first
/// vector) through `buffer` of `exchange`; zeros for rows past `count`. Synchronises the cube
/// when a row has several units.
#[cube]
#[allow(clippy::too_many_arguments)]
fn chunk_dot_pairs(
    sums: &mut Array<f32>,
    a: &Array<f32>,
    a_tile: &SharedMemory<Lanes>,
    b: &Array<f32>,
    b_tile: &SharedMemory<Lanes>,
    first: usize,
    count: usize,
    exchange: &mut SharedMemory<f32>,
    buffer: usize,
    unit: (usize, usize, usize),
    #[comptime] head_dim: usize,
    #[comptime] groups: usize,
) {
    let (unit_row, part, first_vector) = unit;
    #[unroll]
    for i in 0..ROW_CHUNK {
        let mut a_dot = f32::new(0.0);
        let mut b_dot = f32::new(0.0);
        if first + i < count {
            a_dot = dot_tile_part(a, a_tile, first + i, first_vector, head_dim, groups);
            b_dot = dot_tile_part(b, b_tile, first + i, first_vector, head_dim, groups);
        }
        sums[2 * i] = a_dot;
        sums[2 * i + 1] = b_dot;
    }
    sum_over_parts(sums, exchange, buffer, unit_row, part, CHUNK_SUMS, groups);
}
