//! The flash-attention backward kernels (FlashAttention-2): the probabilities are recomputed
//! from the forward's per-row logsumexp, `P_ij = exp(s_ij - lse_i)`, and with
//! `D_i = rowsum(dO_i * O_i)` the gradients are
//! `dV_j = sum_i P_ij dO_i`, `dS_ij = P_ij (dO_i . V_j - D_i)`,
//! `dQ_i = scale * sum_j dS_ij K_j`, `dK_j = scale * sum_i dS_ij Q_i`.
//!
//! Two kernels, neither needs atomics: [`flash_backward_dq_kernel`] is parallel over query
//! rows (it also writes `D`), [`flash_backward_dkdv_kernel`] over key rows; both stream the
//! other side through shared memory in tiles and accumulate in f32.
// Tile counts are written `(len + tile - 1) / tile` in the kernels: plain integer arithmetic
// on a runtime length and a comptime tile, which the `#[cube]` expansion takes as is.
#![allow(clippy::manual_div_ceil)]

use cubecl::prelude::*;

use super::tile::{load_tile_pair, read_row, tile_len, zero_row};

/// Gradient of the queries, one unit per query row; also writes `delta = rowsum(dO * O)`,
/// which the key/value kernel launched after it reads. Layouts as in the forward kernel.
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
    let row = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let active = row < lq;
    let q_base = (bh * lq + row) * head_dim;
    let kv_base = bh * lk * head_dim;

    let mut q_row = Array::<f32>::new(head_dim);
    let mut do_row = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    read_row(q, &mut q_row, q_base, scale, active, head_dim);
    read_row(
        grad_out,
        &mut do_row,
        q_base,
        f32::new(1.0),
        active,
        head_dim,
    );
    zero_row(&mut acc, head_dim);
    let mut row_delta = f32::new(0.0);
    let mut row_lse = f32::new(0.0);
    if active {
        for c in 0..head_dim {
            row_delta += do_row[c] * f32::cast_from(out[q_base + c]);
        }
        row_lse = lse[bh * lq + row];
        delta[bh * lq + row] = row_delta;
    }

    let mut k_tile = SharedMemory::<f32>::new(tile * head_dim);
    let mut v_tile = SharedMemory::<f32>::new(tile * head_dim);
    let tiles = (lk + tile - 1) / tile;
    for t in 0..tiles {
        let start = t * tile;
        let count = tile_len(lk, start, tile);
        let offset = kv_base + start * head_dim;
        load_tile_pair(k, v, &mut k_tile, &mut v_tile, offset, count * head_dim);
        sync_cube();

        if active {
            for j in 0..count {
                let mut s = f32::new(0.0);
                let mut dp = f32::new(0.0);
                for c in 0..head_dim {
                    s += q_row[c] * k_tile[j * head_dim + c];
                    dp += do_row[c] * v_tile[j * head_dim + c];
                }
                let ds = (s - row_lse).exp() * (dp - row_delta);
                for c in 0..head_dim {
                    acc[c] += ds * k_tile[j * head_dim + c];
                }
            }
        }
        sync_cube();
    }

    if active {
        for c in 0..head_dim {
            grad_q[q_base + c] = E::cast_from(acc[c] * scale);
        }
    }
}

/// Gradients of the keys and values, one unit per key row; reads the `delta` written by
/// [`flash_backward_dq_kernel`]. Layouts as in the forward kernel.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_backward_dkdv_kernel<E: Float>(
    q: &Tensor<E>,
    k: &Tensor<E>,
    v: &Tensor<E>,
    grad_out: &Tensor<E>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    grad_k: &mut Tensor<E>,
    grad_v: &mut Tensor<E>,
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
    let row = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let active = row < lk;
    let kv_base = (bh * lk + row) * head_dim;
    let q_base = bh * lq * head_dim;

    // The key row is pre-multiplied by the scale, so a dot product is already a score.
    let mut k_row = Array::<f32>::new(head_dim);
    let mut v_row = Array::<f32>::new(head_dim);
    let mut dk = Array::<f32>::new(head_dim);
    let mut dv = Array::<f32>::new(head_dim);
    read_row(k, &mut k_row, kv_base, scale, active, head_dim);
    read_row(v, &mut v_row, kv_base, f32::new(1.0), active, head_dim);
    zero_row(&mut dk, head_dim);
    zero_row(&mut dv, head_dim);

    let mut q_tile = SharedMemory::<f32>::new(tile * head_dim);
    let mut do_tile = SharedMemory::<f32>::new(tile * head_dim);
    let mut lse_tile = SharedMemory::<f32>::new(tile);
    let mut delta_tile = SharedMemory::<f32>::new(tile);
    let tiles = (lq + tile - 1) / tile;
    for t in 0..tiles {
        let start = t * tile;
        let count = tile_len(lq, start, tile);
        let offset = q_base + start * head_dim;
        load_tile_pair(
            q,
            grad_out,
            &mut q_tile,
            &mut do_tile,
            offset,
            count * head_dim,
        );
        let row_offset = bh * lq + start;
        load_tile_pair(
            lse,
            delta,
            &mut lse_tile,
            &mut delta_tile,
            row_offset,
            count,
        );
        sync_cube();

        if active {
            for i in 0..count {
                let mut s = f32::new(0.0);
                let mut dp = f32::new(0.0);
                for c in 0..head_dim {
                    s += k_row[c] * q_tile[i * head_dim + c];
                    dp += v_row[c] * do_tile[i * head_dim + c];
                }
                let p = (s - lse_tile[i]).exp();
                let ds = p * (dp - delta_tile[i]);
                for c in 0..head_dim {
                    dv[c] += p * do_tile[i * head_dim + c];
                    dk[c] += ds * q_tile[i * head_dim + c];
                }
            }
        }
        sync_cube();
    }

    if active {
        for c in 0..head_dim {
            grad_k[kv_base + c] = E::cast_from(dk[c] * scale);
            grad_v[kv_base + c] = E::cast_from(dv[c]);
        }
    }
}
