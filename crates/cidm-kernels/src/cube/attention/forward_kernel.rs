//! The flash-attention forward kernel: `O = softmax(Q K^T * scale) V` with an online softmax.
//!
//! `groups` units per query row, [`ROWS_PER_CUBE`] rows per cube; the cube streams the keys
//! and values through shared memory a tile at a time (converted to f32 once per tile), so
//! the score matrix never exists in memory. Each unit keeps its part of the query row and
//! of the f32 output accumulator (see `tile::part_vectors`) and the running max `m` and sum
//! `l` of its row's softmax in registers (the loops over the row are unrolled, see the
//! module above), and walks a tile [`SCORE_CHUNK`] keys at a time: their scores first (its
//! parts of them added up with the row's other units' when there are several), then, when
//! they raise the max, the accumulator and the sum rescaled by `exp(m_old - m_new)`, then
//! their values weighted.
// Tile counts are written `(len + tile - 1) / tile` in the kernels: plain integer arithmetic
// on a runtime length and a comptime tile, which the `#[cube]` expansion takes as is.
#![allow(clippy::manual_div_ceil)]

use cubecl::prelude::*;

use super::tile::{
    add_tile_part, dot_tile_part, exchange_len, load_row_tiles, part_vectors, part_width,
    read_part, row_offset, sum_over_parts, tile_len, tile_row_vectors, unit_row_and_part,
    write_part, zero_part, Lanes, LANES, ROWS_PER_CUBE,
};

/// Keys whose scores a unit holds at once. The loop over a chunk is unrolled, so the scores
/// are indexed by constants and stay in registers: an array indexed by the loop variable (a
/// whole tile's scores, as this kernel first kept) lives in local memory on CUDA, one store
/// and one load of it per key. A chunk costs one rescale of the accumulator when its scores
/// raise the max (`head_dim` multiplications, against `2 * SCORE_CHUNK * head_dim`
/// multiply-adds for its dot products and weighted values; rarer as the row goes on, since a
/// max once reached seldom rises), one exchange of partial scores when a row has several
/// units, and its unrolled body is what a shader compiler has to take in. Four keys still
/// give 16 independent multiply-add chains per chunk; eight made the attention tests on
/// lavapipe (which compiles each kernel, Mesa's cache off as in CI) take 105 s longer than
/// the whole-tile array did, four 21 s.
pub(crate) const SCORE_CHUNK: usize = 4;

/// Start value of the running max: a finite stand-in for `-inf` (WGSL rejects an infinite
/// literal) that is still far below any real score, so `exp(m_start - s)` is exactly 0.
pub(crate) const NEG_START: f32 = -3.0e38;

/// `q`, `k`, `v` and `out` are `[batch, heads, tokens, head_dim]` with any strides but
/// contiguous rows (such as the views that split a projection's output into heads, in which
/// a token's heads lie side by side); `lse` is contiguous `[batch, heads, len_q]`. The cube
/// has `ROWS_PER_CUBE * groups` units, `groups` per query row.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_forward_kernel<E: Float>(
    q: &Tensor<E>,
    k: &Tensor<E>,
    v: &Tensor<E>,
    out: &mut Tensor<E>,
    lse: &mut Tensor<f32>,
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

    // The query row is pre-multiplied by the scale, so a dot product is already a score.
    let width = comptime!(part_width(head_dim, groups));
    let mut q_row = Array::<f32>::new(width);
    let mut acc = Array::<f32>::new(width);
    let q_base = row_offset(q, b, h, row);
    read_part(
        q, &mut q_row, q_base, first_col, scale, active, head_dim, groups,
    );
    zero_part(&mut acc, head_dim, groups);

    let mut scores = Array::<f32>::new(SCORE_CHUNK);
    let tile_vectors = comptime!(tile * tile_row_vectors(head_dim, groups));
    let mut k_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let mut v_tile = SharedMemory::<Lanes>::new(tile_vectors);
    let mut exchange = SharedMemory::<f32>::new(comptime!(exchange_len(groups, SCORE_CHUNK)));
    let mut buffer = 0usize;
    let mut m = f32::new(NEG_START);
    let mut l = f32::new(0.0);

    let tiles = (lk + tile - 1) / tile;
    for t in 0..tiles {
        let start = t * tile;
        let count = tile_len(lk, start, tile);
        // Every unit helps load the tile, also those past the last query row, and every
        // unit walks it (the exchanges synchronise the cube); a unit past the last row
        // scores zeros and writes nothing.
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

        let chunks = (count + SCORE_CHUNK - 1) / SCORE_CHUNK;
        for chunk in 0..chunks {
            let first = chunk * SCORE_CHUNK;
            #[unroll]
            for j in 0..SCORE_CHUNK {
                let mut s = f32::new(0.0);
                if first + j < count {
                    s = dot_tile_part(&q_row, &k_tile, first + j, first_vector, head_dim, groups);
                }
                scores[j] = s;
            }
            sum_over_parts(
                &mut scores,
                &mut exchange,
                buffer,
                unit_row,
                part,
                SCORE_CHUNK,
                groups,
            );
            buffer = 1 - buffer;
            // Keys past the tile's last row (in the last chunk of a short tile) score the
            // running max's start value and are never read: shared memory holds stale rows
            // there.
            let mut chunk_max = m;
            #[unroll]
            for j in 0..SCORE_CHUNK {
                if first + j >= count {
                    scores[j] = f32::new(NEG_START);
                }
                chunk_max = chunk_max.max(scores[j]);
            }
            if chunk_max > m {
                let correction = (m - chunk_max).exp();
                l *= correction;
                #[unroll]
                for c in 0..width {
                    acc[c] *= correction;
                }
                m = chunk_max;
            }
            #[unroll]
            for j in 0..SCORE_CHUNK {
                if first + j < count {
                    let p = (scores[j] - m).exp();
                    l += p;
                    add_tile_part(
                        &mut acc,
                        p,
                        &v_tile,
                        first + j,
                        first_vector,
                        head_dim,
                        groups,
                    );
                }
            }
        }
        // The next tile overwrites shared memory: wait until every unit is done reading.
        sync_cube();
    }

    if active {
        let out_base = row_offset(out, b, h, row);
        write_part(
            out,
            &acc,
            out_base,
            first_col,
            f32::new(1.0) / l,
            head_dim,
            groups,
        );
        if part == 0 {
            lse[bh * lq + row] = m + l.ln();
        }
    }
}
