//! Host side of the kernels: layout, tile size and launch on burn's `CubeTensor`s.

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, ops::reshape, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::backward_kernel::{flash_backward_dkdv_kernel, flash_backward_dq_kernel, CHUNK_SUMS};
use super::forward_kernel::{flash_forward_kernel, SCORE_CHUNK};
use super::tile::{exchange_len, part_width, tile_row_vectors, LANES, ROWS_PER_CUBE};
use crate::cube::host::{empty_in_order, empty_on, sum_splits, supports_dtype};
use crate::switch;

/// Most rows of keys (or queries) held in shared memory at once.
const MAX_TILE: usize = 64;
/// Shared memory the kernels plan for, at most: 48 KiB is what CUDA grants a kernel
/// without opting in, and more than wgpu's default limit of 16 KiB.
pub(crate) const MAX_SHARED_BYTES: usize = 48 * 1024;
/// Most units per row: a cube of `ROWS_PER_CUBE * 4` units.
const MAX_GROUPS: usize = 4;

/// The three attention kernels, by what a unit of each holds and exchanges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// The forward: its query row and output accumulator.
    Forward,
    /// dQ: its query row, output-gradient row and accumulator.
    BackwardDq,
    /// dK/dV: its key and value rows and both accumulators; its tiles also carry a
    /// logsumexp and a `D` per query row.
    BackwardDkdv,
}

impl Kernel {
    /// f32 rows of the head width a unit holds.
    fn rows_held(self) -> usize {
        match self {
            Kernel::Forward => 2,
            Kernel::BackwardDq => 3,
            Kernel::BackwardDkdv => 4,
        }
    }

    /// Partial sums a unit exchanges with the other units of its row at once.
    fn exchanged(self) -> usize {
        match self {
            Kernel::Forward => SCORE_CHUNK,
            Kernel::BackwardDq | Kernel::BackwardDkdv => CHUNK_SUMS,
        }
    }

    /// f32 values per tile row besides its two rows.
    fn row_scalars(self) -> usize {
        match self {
            Kernel::BackwardDkdv => 2,
            Kernel::Forward | Kernel::BackwardDq => 0,
        }
    }
}

/// What a [`Plan`] must fit: the device's shared memory per cube in bytes and most units per
/// cube, and the most f32 values of rows a unit may hold ([`crate::attention_held_values`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) shared: usize,
    pub(crate) max_units: usize,
    pub(crate) held_values: usize,
}

impl Limits {
    /// The limits of `client`'s device (units along x, the kernels' only cube dimension).
    fn of<R: CubeRuntime>(client: &ComputeClient<R>) -> Limits {
        let hardware = &client.properties().hardware;
        Limits {
            shared: hardware.max_shared_memory_size,
            max_units: hardware.max_units_per_cube.min(hardware.max_cube_dim.0) as usize,
            held_values: switch::attention_held_values(),
        }
    }
}

/// How one kernel runs for a head width: `groups` units per row and tiles of `tile` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) groups: usize,
    pub(crate) tile: usize,
}

impl Plan {
    /// The plan of `kernel` for `head_dim` within `limits`: the fewest units per row (a power
    /// of two up to [`MAX_GROUPS`]) that hold at most `limits.held_values` each, then as many
    /// tile rows as the shared memory left after the exchange buffers takes (up to
    /// [`MAX_SHARED_BYTES`] and [`MAX_TILE`]). Where the cube would have more units than the
    /// device allows (Vulkan guarantees only 128), or the exchange leaves no room for a tile
    /// row (wgpu's default 16 KiB at width 160), fewer units per row, down to one; `None`
    /// when not even then a cube fits.
    pub(crate) fn new(kernel: Kernel, head_dim: usize, limits: Limits) -> Option<Plan> {
        let Limits {
            shared,
            max_units,
            held_values,
        } = limits;
        let mut groups = 1;
        while groups < MAX_GROUPS && kernel.rows_held() * part_width(head_dim, groups) > held_values
        {
            groups *= 2;
        }
        while groups > 1 && ROWS_PER_CUBE * groups > max_units {
            groups /= 2;
        }
        if ROWS_PER_CUBE > max_units {
            return None;
        }
        let f32_bytes = core::mem::size_of::<f32>();
        let shared = shared.min(MAX_SHARED_BYTES);
        loop {
            let exchange = exchange_len(groups, kernel.exchanged()) * f32_bytes;
            let per_row =
                (2 * tile_row_vectors(head_dim, groups) * LANES + kernel.row_scalars()) * f32_bytes;
            let tile = (shared.saturating_sub(exchange) / per_row).min(MAX_TILE);
            if tile > 0 {
                return Some(Plan { groups, tile });
            }
            if groups == 1 {
                return None;
            }
            groups /= 2;
        }
    }

    /// Shared memory of a cube under this plan, in bytes: the two row tiles, the per-row
    /// values of the dK/dV kernel's tiles and the exchange buffers.
    #[cfg(test)]
    fn shared_bytes(self, kernel: Kernel, head_dim: usize) -> usize {
        let per_row = 2 * tile_row_vectors(head_dim, self.groups) * LANES + kernel.row_scalars();
        let exchange = if self.groups > 1 {
            exchange_len(self.groups, kernel.exchanged())
        } else {
            0
        };
        (self.tile * per_row + exchange) * core::mem::size_of::<f32>()
    }

    /// Units of a cube: [`ROWS_PER_CUBE`] rows of `groups` units.
    pub(crate) fn cube_dim(self) -> CubeDim {
        CubeDim::new_1d((ROWS_PER_CUBE * self.groups) as u32)
    }
}

/// The plan of `kernel` on `client`'s device; the caller checked [`device_supports`].
fn plan_on<R: CubeRuntime>(client: &ComputeClient<R>, kernel: Kernel, head_dim: usize) -> Plan {
    Plan::new(kernel, head_dim, Limits::of(client)).expect("device_supports checked the limits")
}

/// Fewest query rows one dK/dV cube works through: below this, the cube's fixed work (its
/// key rows read, its partial sums written and added up) outweighs the rows it walks.
const MIN_SPLIT_ROWS: usize = 256;
/// Cubes the dK/dV kernel aims for on a device that does not report its multiprocessor
/// count (wgpu): enough to occupy a large GPU.
const DEFAULT_TARGET_CUBES: usize = 512;

/// How the dK/dV kernel splits the `len_q` query rows into ranges, each a third grid
/// dimension: `(splits, rows per range)`. A grid of `key_cubes` cubes (key-row blocks times
/// `batch * heads`) is multiplied until it reaches `target_cubes` (about four cubes per
/// multiprocessor), with every range but the last a whole number of `tile`s and, when there
/// is more than one, no range but the last shorter than [`MIN_SPLIT_ROWS`]. Self-attention
/// at SD 1.5 size already has enough key blocks (1 range); cross-attention (77 keys, 2
/// blocks per head) gets up to 16 ranges of 256 rows at 4096 queries.
pub(crate) fn query_splits(
    len_q: usize,
    key_cubes: usize,
    target_cubes: usize,
    tile: usize,
) -> (usize, usize) {
    let most = (len_q / MIN_SPLIT_ROWS).max(1);
    let wanted = target_cubes.div_ceil(key_cubes.max(1));
    let splits = wanted.clamp(1, most).min(u16::MAX as usize);
    let rows = len_q.div_ceil(splits).div_ceil(tile).max(1) * tile;
    (len_q.div_ceil(rows).max(1), rows)
}

/// `[batch, heads, tokens, head_dim]` of a 4-D tensor.
fn dims4<R: CubeRuntime>(tensor: &CubeTensor<R>) -> [usize; 4] {
    tensor.shape().dims::<4>()
}

/// `tensor` as the kernels read it: in its own strides when its rows (the head dimension)
/// are contiguous, as they are in the views that split a projection's output into heads
/// (`[batch, tokens, heads * head_dim]` seen as `[batch, heads, tokens, head_dim]`), which
/// are then read where they lie instead of copied; a contiguous copy otherwise.
fn with_contiguous_rows<R: CubeRuntime>(tensor: CubeTensor<R>) -> CubeTensor<R> {
    if tensor.meta.strides()[3] == 1 {
        tensor
    } else {
        into_contiguous(tensor)
    }
}

/// The order in memory, outermost first, of the axes of a `[batch, heads, tokens,
/// head_dim]` tensor with these strides: the first three by decreasing stride (ties in axis
/// order), the head dimension innermost.
pub(crate) fn memory_order(strides: &[usize]) -> [usize; 4] {
    let mut outer = [0, 1, 2];
    outer.sort_by_key(|&axis| core::cmp::Reverse(strides[axis]));
    [outer[0], outer[1], outer[2], 3]
}

/// An output (or gradient) shaped and laid out like `like`: an attention output written in
/// the layout of its queries comes out of the heads-to-tokens view (`swap_dims(1, 2)` then
/// `reshape`) the model applies without a copy, and so do the gradients of q, k and v on
/// their way back to the projections.
fn empty_like<R: CubeRuntime>(like: &CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    empty_in_order(
        like,
        &dims4(like),
        &memory_order(like.meta.strides()),
        dtype,
    )
}

/// One cube per [`ROWS_PER_CUBE`] rows, times `batch * heads`, times `splits`.
fn cube_count(rows: usize, batch_heads: usize, splits: usize) -> CubeCount {
    CubeCount::Static(
        rows.div_ceil(ROWS_PER_CUBE) as u32,
        batch_heads as u32,
        splits as u32,
    )
}

/// Whether the device can run the kernels on tensors of `dtype` with `head_dim` columns
/// (f16/bf16 need the device's support for the type).
pub(crate) fn device_supports<R: CubeRuntime>(
    device: &R::Device,
    dtype: DType,
    head_dim: usize,
) -> bool {
    let limits = Limits::of(&R::client(device));
    supports_dtype::<R>(device, dtype)
        && [Kernel::Forward, Kernel::BackwardDq, Kernel::BackwardDkdv]
            .iter()
            .all(|&kernel| Plan::new(kernel, head_dim, limits).is_some())
}

/// Forward pass: `(softmax(q k^T * scale) v, logsumexp of the scaled scores per row)`; the
/// output has q's dtype, the logsumexp `[batch, heads, len_q]` is f32.
pub(crate) fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [q, k, v] = [q, k, v].map(with_contiguous_rows);
    let [batch, heads, len_q, head_dim] = dims4(&q);
    let len_k = dims4(&k)[2];
    let client = q.client.clone();
    let dtype = q.dtype;
    let out = empty_like(&q, dtype);
    let lse = empty_on(&q, Shape::new([batch, heads, len_q]), DType::F32);
    let plan = plan_on(&client, Kernel::Forward, head_dim);
    flash_forward_kernel::launch::<R>(
        &client,
        cube_count(len_q, batch * heads, 1),
        plan.cube_dim(),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        scale,
        len_q as u32,
        len_k as u32,
        head_dim,
        plan.groups,
        plan.tile,
        dtype.into(),
    );
    (out, lse)
}

/// Backward pass from the forward's inputs, output and logsumexp and the output's
/// gradient: `(dq, dk, dv)` in the inputs' dtype.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    grad_out: CubeTensor<R>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let [q, k, v, out, grad_out] = [q, k, v, out, grad_out].map(with_contiguous_rows);
    let lse = into_contiguous(lse);
    let [batch, heads, len_q, head_dim] = dims4(&q);
    let len_k = dims4(&k)[2];
    let client = q.client.clone();
    let dtype = q.dtype;
    let grad_q = empty_like(&q, dtype);
    // Both in k's layout: the dK/dV kernel writes their partial sums in one layout.
    let grad_k = empty_like(&k, dtype);
    let grad_v = empty_like(&k, dtype);
    let delta = empty_on(&q, Shape::new([batch, heads, len_q]), DType::F32);
    let dq_plan = plan_on(&client, Kernel::BackwardDq, head_dim);
    let dkdv_plan = plan_on(&client, Kernel::BackwardDkdv, head_dim);

    flash_backward_dq_kernel::launch::<R>(
        &client,
        cube_count(len_q, batch * heads, 1),
        dq_plan.cube_dim(),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        out.into_tensor_arg(),
        grad_out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        grad_q.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        scale,
        len_q as u32,
        len_k as u32,
        head_dim,
        dq_plan.groups,
        dq_plan.tile,
        dtype.into(),
    );

    let key_cubes = len_k.div_ceil(ROWS_PER_CUBE) * batch * heads;
    let target_cubes = client
        .properties()
        .hardware
        .num_streaming_multiprocessors
        .map_or(DEFAULT_TARGET_CUBES, |sms| 4 * sms as usize);
    let (splits, split_rows) = query_splits(len_q, key_cubes, target_cubes, dkdv_plan.tile);
    let parts_shape = Shape::new([splits, batch, heads, len_k, head_dim]);
    let (part_k, part_v) = if splits == 1 {
        // One range: the kernel writes the gradients themselves, seen as one split.
        let split = |grad: &CubeTensor<R>| reshape(grad.clone(), parts_shape.clone());
        (split(&grad_k), split(&grad_v))
    } else {
        // f32 partial sums, each split laid out as the key gradient, so that adding them up
        // runs over memory.
        let [b, h, t, d] = memory_order(grad_k.meta.strides()).map(|axis| axis + 1);
        let parts = || empty_in_order(&k, &parts_shape, &[0, b, h, t, d], DType::F32);
        (parts(), parts())
    };
    let part_dtype = part_k.dtype;
    flash_backward_dkdv_kernel::launch::<R>(
        &client,
        cube_count(len_k, batch * heads, splits),
        dkdv_plan.cube_dim(),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        part_k.clone().into_tensor_arg(),
        part_v.clone().into_tensor_arg(),
        scale,
        len_q as u32,
        len_k as u32,
        split_rows as u32,
        head_dim,
        dkdv_plan.groups,
        dkdv_plan.tile,
        [dtype.into(), part_dtype.into()],
    );
    if splits > 1 {
        sum_splits(part_k, &grad_k, splits);
        sum_splits(part_v, &grad_v, splits);
    }
    (grad_q, grad_k, grad_v)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::DEFAULT_ATTENTION_HELD_VALUES;

    use super::{
        exchange_len, memory_order, part_width, query_splits, tile_row_vectors, Kernel, Limits,
        Plan, DEFAULT_TARGET_CUBES, LANES, MAX_SHARED_BYTES, MAX_TILE, MIN_SPLIT_ROWS,
        ROWS_PER_CUBE,
    };

    proptest! {
        /// The ranges cover the query rows exactly once (none empty), start on tile
        /// boundaries, are long enough to pay for themselves, and stop multiplying the grid
        /// once it reaches the target.
        #[test]
        fn query_ranges_cover_the_rows(
            len_q in 1usize..20_000,
            key_cubes in 1usize..2_000,
            target_cubes in 1usize..2_000,
            tile in 1usize..=64,
        ) {
            let (splits, rows) = query_splits(len_q, key_cubes, target_cubes, tile);
            prop_assert!(splits >= 1);
            prop_assert_eq!(rows % tile, 0);
            prop_assert!(splits * rows >= len_q, "rows left over");
            prop_assert!((splits - 1) * rows < len_q, "an empty range");
            prop_assert!(splits == 1 || rows >= MIN_SPLIT_ROWS, "ranges too short");
            prop_assert!(splits == 1 || (splits - 1) * key_cubes < target_cubes, "too many");
        }
    }

    /// A head view of SD 1.5's first projections (`[2, 4096, 320]` seen as `[2, 8, 4096,
    /// 40]`) lies tokens outside heads; a contiguous tensor in axis order; a batch broadcast
    /// with stride 0 innermost of the three, the head dimension always last.
    #[test]
    fn memory_orders() {
        assert_eq!(memory_order(&[4096 * 320, 40, 320, 1]), [0, 2, 1, 3]);
        assert_eq!(
            memory_order(&[8 * 4096 * 40, 4096 * 40, 40, 1]),
            [0, 1, 2, 3]
        );
        assert_eq!(memory_order(&[0, 77 * 40, 40, 1]), [1, 2, 0, 3]);
    }

    /// A CUDA device: 48 KiB planned for, 1024 units per cube, the default limit of held
    /// values.
    const CUDA: Limits = Limits {
        shared: MAX_SHARED_BYTES,
        max_units: 1024,
        held_values: DEFAULT_ATTENTION_HELD_VALUES,
    };

    proptest! {
        /// A plan fits the device's shared memory (and the 48 KiB planned for) and units per
        /// cube, its tile holds 1 to 64 rows, and it splits a row only as far as needed: with
        /// half as many units per row, each would hold more than the limit; the device's
        /// limits only ever take units away.
        #[test]
        fn plans_fit_and_split_no_further_than_needed(
            head_dim in 1usize..=256,
            shared in 1024usize..=100_000,
            max_units in prop::sample::select(&[32usize, 64, 128, 256, 1024][..]),
            held_values in 1usize..=700,
            kernel in prop::sample::select(&[
                Kernel::Forward,
                Kernel::BackwardDq,
                Kernel::BackwardDkdv,
            ][..]),
        ) {
            let limits = Limits { shared, max_units, held_values };
            let Some(plan) = Plan::new(kernel, head_dim, limits) else {
                // Only a device too small for one row of one unit per row has none.
                let one_row = (2 * tile_row_vectors(head_dim, 1) * LANES + kernel.row_scalars()
                    + exchange_len(1, kernel.exchanged()))
                    * core::mem::size_of::<f32>();
                prop_assert!(max_units < ROWS_PER_CUBE || shared < one_row, "no plan");
                return Ok(());
            };
            prop_assert!(plan.shared_bytes(kernel, head_dim) <= shared.min(MAX_SHARED_BYTES));
            prop_assert!(ROWS_PER_CUBE * plan.groups <= max_units);
            prop_assert!((1..=MAX_TILE).contains(&plan.tile));
            prop_assert!([1, 2, 4].contains(&plan.groups));
            if plan.groups > 1 {
                let fewer = kernel.rows_held() * part_width(head_dim, plan.groups / 2);
                prop_assert!(fewer > held_values);
            }
            let unlimited = Limits { held_values, ..CUDA };
            let unsplit = Plan::new(kernel, head_dim, unlimited).unwrap();
            prop_assert!(plan.groups <= unsplit.groups);
        }
    }

    /// The plans at SD's head widths on a CUDA device, as `tools/kernel_registers.sh`
    /// reports them with their registers (docs/performance.md): each unit holds at most 128
    /// values (160 for dK/dV at width 160, at the 4-unit limit); wgpu's default 16 KiB
    /// takes fewer units where the exchange would leave no room for a tile row, a device of
    /// 128 units per cube at most 2 per row, one of 32 none; a limit of 64 values splits
    /// width 40 too.
    #[test]
    fn sd_plans() {
        let plans = |kernel, limits| {
            [40, 64, 80, 160].map(|d| {
                let plan = Plan::new(kernel, d, limits).unwrap();
                (plan.groups, plan.tile)
            })
        };
        let forward = plans(Kernel::Forward, CUDA);
        assert_eq!(forward, [(1, 64), (1, 64), (2, 64), (4, 32)]);
        let dq = plans(Kernel::BackwardDq, CUDA);
        assert_eq!(dq, [(1, 64), (2, 64), (2, 64), (4, 25)]);
        let dkdv = plans(Kernel::BackwardDkdv, CUDA);
        assert_eq!(dkdv, [(2, 64), (2, 64), (4, 50), (4, 25)]);
        let small = Limits {
            shared: 16 * 1024,
            ..CUDA
        };
        let small = Plan::new(Kernel::BackwardDkdv, 160, small).unwrap();
        assert_eq!((small.groups, small.tile), (2, 6));
        let narrow = Limits {
            max_units: 128,
            ..CUDA
        };
        let narrow_plan = Plan::new(Kernel::BackwardDkdv, 160, narrow).unwrap();
        assert_eq!((narrow_plan.groups, narrow_plan.tile), (2, 31));
        let tiny = Limits {
            max_units: 32,
            ..CUDA
        };
        assert_eq!(Plan::new(Kernel::Forward, 40, tiny), None);
        let held_64 = Limits {
            held_values: 64,
            ..CUDA
        };
        assert_eq!(Plan::new(Kernel::Forward, 40, held_64).unwrap().groups, 2);
    }

    /// SD 1.5's largest cross-attention (batch 2, 8 heads, 4096 queries, 77 keys: 32 key
    /// cubes) on an H100 (132 multiprocessors): 16 ranges of 256 rows; its self-attention
    /// (4096 keys: 1024 key cubes) is left whole.
    #[test]
    fn sd15_shapes() {
        assert_eq!(query_splits(4096, 32, 4 * 132, 64), (16, 256));
        assert_eq!(query_splits(4096, 1024, 4 * 132, 64), (1, 4096));
    }

    /// The long-sequence integration test's width-40 shapes on wgpu (no multiprocessor
    /// count, tiles of 64 rows; batch 2 x 3 heads, so 6 key cubes at 7 keys and 12 at 77)
    /// really take the split path its doc promises: 3 ranges of 384 rows for 1000 queries,
    /// 2 of 320 for 576.
    #[test]
    fn integration_test_shapes_split() {
        assert_eq!(query_splits(1000, 6, DEFAULT_TARGET_CUBES, 64), (3, 384));
        assert_eq!(query_splits(576, 12, DEFAULT_TARGET_CUBES, 64), (2, 320));
    }
}
