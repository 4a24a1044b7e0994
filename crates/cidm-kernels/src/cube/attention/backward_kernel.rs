//! The flash-attention backward kernels (FlashAttention-2): the probabilities are recomputed
//! from the forward's per-row logsumexp, `P_ij = exp(s_ij - lse_i)`, and with
//! `D_i = rowsum(dO_i * O_i)` the gradients are
//! `dV_j = sum_i P_ij dO_i`, `dS_ij = P_ij (dO_i . V_j - D_i)`,
//! `dQ_i = scale * sum_j dS_ij K_j`, `dK_j = scale * sum_i dS_ij Q_i`.
//!
//! Three kernels, none needs atomics: [`flash_backward_dq_kernel`] is parallel over query
//! rows (it also writes `D`), [`flash_backward_dkdv_kernel`] over key rows and, as a third
//! grid dimension, over ranges of query rows; both stream the other side through shared
//! memory in tiles and accumulate in f32. Each query range writes its partial sums of dK and
//! dV in f32, and `sum_splits_kernel` (shared, in `cube::reduce`) adds them up into the
//! gradients. The split exists for cross-attention, whose 77 keys give a dK/dV grid of a few
//! cubes per head: without it, a handful of units would each walk through all 4096 query rows
//! of SD 1.5's largest layers while the rest of the GPU idles.
// Tile counts are written `(len + tile - 1) / tile` in the kernels: plain integer arithmetic
// on a runtime length and a comptime tile, which the `#[cube]` expansion takes as is.
#![allow(clippy::manual_div_ceil)]

use cubecl::prelude::*;

use super::tile::{
    add_tile_row, dot_tile_row, load_row_tiles, load_value_tiles, padded_width, read_row,
    row_offset, row_vectors, tile_len, zero_row, Lanes,
};

/// Gradient of the queries, one unit per query row; also writes `delta = rowsum(dO * O)`,
/// which the key/value kernel launched after it reads. Layouts as in the forward kernel:
/// every `[batch, heads, tokens, head_dim]` tensor in its own strides, `delta` as `lse`.
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
    #[comptime] tile: usize,
    #[define(E)] _dtype: StorageType,
) {
    let lq = len_q as usize;
    let lk = len_k as usize;
    let bh = CUBE_POS_Y as usize;
    let b = bh / q.shape(1);
    let h = bh % q.shape(1);
    let row = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let active = row < lq;

    let width = comptime!(padded_width(head_dim));
    let mut q_row = Array::<f32>::new(width);
    let mut do_row = Array::<f32>::new(width);
    let mut acc = Array::<f32>::new(width);
    read_row(
        q,
        &mut q_row,
        row_offset(q, b, h, row),
        scale,
        active,
        head_dim,
    );
    read_row(
        grad_out,
        &mut do_row,
        row_offset(grad_out, b, h, row),
        f32::new(1.0),
        active,
        head_dim,
    );
    zero_row(&mut acc, head_dim);
    let mut row_delta = f32::new(0.0);
    let mut row_lse = f32::new(0.0);
    if active {
        let out_base = row_offset(out, b, h, row);
        #[unroll]
        for c in 0..head_dim {
            row_delta += do_row[c] * f32::cast_from(out[out_base + c]);
        }
        row_lse = lse[bh * lq + row];
        delta[bh * lq + row] = row_delta;
    }

    let tile_vectors = comptime!(tile * row_vectors(head_dim));
    let mut k_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let mut v_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let tiles = (lk + tile - 1) / tile;
    for t in 0..tiles {
        let start = t * tile;
        let count = tile_len(lk, start, tile);
        load_row_tiles(k, v, &mut k_tile, &mut v_tile, b, h, start, count, head_dim);
        sync_cube();

        if active {
            for j in 0..count {
                let s = dot_tile_row(&q_row, &k_tile, j, head_dim);
                let dp = dot_tile_row(&do_row, &v_tile, j, head_dim);
                let ds = (s - row_lse).exp() * (dp - row_delta);
                add_tile_row(&mut acc, ds, &k_tile, j, head_dim);
            }
        }
        sync_cube();
    }

    if active {
        let grad_base = row_offset(grad_q, b, h, row);
        #[unroll]
        for c in 0..head_dim {
            grad_q[grad_base + c] = E::cast_from(acc[c] * scale);
        }
    }
}

/// Partial gradients of the keys and values, one unit per key row, over the range of
/// `split_rows` query rows that starts at `CUBE_POS_Z * split_rows`; reads the `delta`
/// written by [`flash_backward_dq_kernel`]. `part_k` and `part_v` are
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
    #[comptime] tile: usize,
    #[define(E, P)] _dtypes: [StorageType; 2],
) {
    let lq = len_q as usize;
    let lk = len_k as usize;
    let bh = CUBE_POS_Y as usize;
    let b = bh / q.shape(1);
    let h = bh % q.shape(1);
    let row = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let active = row < lk;
    // This cube's query rows: [first, first + rows), the last range shorter.
    let first = CUBE_POS_Z as usize * split_rows as usize;
    let rows = tile_len(lq, first, split_rows as usize);

    // The key row is pre-multiplied by the scale, so a dot product is already a score.
    let width = comptime!(padded_width(head_dim));
    let mut k_row = Array::<f32>::new(width);
    let mut v_row = Array::<f32>::new(width);
    let mut dk = Array::<f32>::new(width);
    let mut dv = Array::<f32>::new(width);
    read_row(
        k,
        &mut k_row,
        row_offset(k, b, h, row),
        scale,
        active,
        head_dim,
    );
    read_row(
        v,
        &mut v_row,
        row_offset(v, b, h, row),
        f32::new(1.0),
        active,
        head_dim,
    );
    zero_row(&mut dk, head_dim);
    zero_row(&mut dv, head_dim);

    let tile_vectors = comptime!(tile * row_vectors(head_dim));
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

        if active {
            for i in 0..count {
                let s = dot_tile_row(&k_row, &q_tile, i, head_dim);
                let dp = dot_tile_row(&v_row, &do_tile, i, head_dim);
                let p = (s - lse_tile[i]).exp();
                let ds = p * (dp - delta_tile[i]);
                add_tile_row(&mut dv, p, &do_tile, i, head_dim);
                add_tile_row(&mut dk, ds, &q_tile, i, head_dim);
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
        #[unroll]
        for c in 0..head_dim {
            part_k[part_base + c] = P::cast_from(dk[c] * scale);
            part_v[part_base + c] = P::cast_from(dv[c]);
        }
    }
}
