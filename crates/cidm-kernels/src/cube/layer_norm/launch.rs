//! Host side of the layer-norm kernels: grids and launches on burn's `CubeTensor`s.

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::kernel::{
    layer_norm_forward_kernel, layer_norm_input_grad_kernel, layer_norm_param_partials_kernel,
};
use crate::autodiff_node::NormGrads;
use crate::cube::host::{empty_on, sum_splits};
use crate::fused_ops::layer_norm::LayerNormParams;

/// Units (columns) per cube of the weights' partial sums.
pub(super) const COLUMN_UNITS: u32 = 64;
/// Fewest rows one unit of the partial sums walks: shorter ranges would cost more in
/// partial sums written and added up than they save.
const MIN_SPLIT_ROWS: usize = 32;
/// Most ranges of rows: bounds the partial sums (`splits * dim` f32 each for the scale and
/// the shift) and the loop that adds them up.
const MAX_SPLITS: usize = 1024;

/// `(splits, rows_per_split)` for the weights' partial sums of `rows` rows: ranges of
/// [`MIN_SPLIT_ROWS`] rows, longer where that would make more than [`MAX_SPLITS`]. SD 1.5's
/// largest transformer input, 2 x 4096 tokens of 320 values, gives 256 ranges of 32 rows,
/// times 5 cubes of 64 columns.
fn row_splits(rows: usize) -> (usize, usize) {
    let per_split = MIN_SPLIT_ROWS.max(rows.div_ceil(MAX_SPLITS));
    (rows.div_ceil(per_split), per_split)
}

/// Fewest and most units of a row's cube.
pub(super) const MIN_ROW_UNITS: usize = 32;
pub(super) const MAX_ROW_UNITS: usize = 256;

/// Units of the cube that walks a row of `dim` values: a power of two giving each unit about
/// 2 to 4 values, from 32 (one warp, for rows of up to 128 values) to 256 (past 1024
/// values, more per unit). SD 1.5: 128 units for its 320-value rows, 256 for 640 and 1280,
/// and for CLIP's 768. A fixed 128 would leave most units of a narrow row's cube idle.
fn row_units(dim: usize) -> usize {
    dim.div_ceil(4)
        .next_power_of_two()
        .clamp(MIN_ROW_UNITS, MAX_ROW_UNITS)
}

/// One cube of `units` units per row (spread over two grid dimensions past 65535 rows).
fn row_grid<R: CubeRuntime>(
    client: &ComputeClient<R>,
    rows: usize,
    units: usize,
) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(units as u32);
    (
        calculate_cube_count_elemwise(client, rows * units, dim),
        dim,
    )
}

/// Forward pass on x `[rows, dim]`: `(out, mean, rstd)`, the output in x's dtype and shape,
/// the statistics f32 `[rows]`.
pub(crate) fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    params: LayerNormParams,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let (x, gamma, beta) = (
        into_contiguous(x),
        into_contiguous(gamma),
        into_contiguous(beta),
    );
    let [rows, dim] = x.shape().dims::<2>();
    let client = x.client.clone();
    let dtype = x.dtype;
    let out = empty_on(&x, x.shape(), dtype);
    let mean = empty_on(&x, Shape::new([rows]), DType::F32);
    let rstd = empty_on(&x, Shape::new([rows]), DType::F32);
    let units = row_units(dim);
    let (count, cube_dim) = row_grid(&client, rows, units);
    layer_norm_forward_kernel::launch::<R>(
        &client,
        count,
        cube_dim,
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        1.0 / dim as f32,
        params.epsilon,
        units,
        dtype.into(),
    );
    (out, mean, rstd)
}

/// Backward pass from the forward's input, scale and statistics and the output's gradient:
/// dx and, if `affine`, `[dgamma, dbeta]`, in the inputs' dtype.
pub(crate) fn backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    mean: CubeTensor<R>,
    rstd: CubeTensor<R>,
    grad_out: CubeTensor<R>,
    affine: bool,
) -> NormGrads<CubeTensor<R>> {
    let (x, gamma, grad_out) = (
        into_contiguous(x),
        into_contiguous(gamma),
        into_contiguous(grad_out),
    );
    let (mean, rstd) = (into_contiguous(mean), into_contiguous(rstd));
    let [rows, dim] = x.shape().dims::<2>();
    let client = x.client.clone();
    let dtype = x.dtype;
    let grad_x = empty_on(&x, x.shape(), dtype);
    let param_shape = gamma.shape();

    let units = row_units(dim);
    let (count, cube_dim) = row_grid(&client, rows, units);
    layer_norm_input_grad_kernel::launch::<R>(
        &client,
        count,
        cube_dim,
        x.clone().into_tensor_arg(),
        gamma.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        grad_out.clone().into_tensor_arg(),
        grad_x.clone().into_tensor_arg(),
        1.0 / dim as f32,
        units,
        dtype.into(),
    );
    if !affine {
        return (grad_x, None);
    }
    let grad_gamma = empty_on(&x, param_shape.clone(), dtype);
    let grad_beta = empty_on(&x, param_shape, dtype);
    let (splits, rows_per_split) = row_splits(rows);
    let part_gamma = empty_on(&x, Shape::new([splits, dim]), DType::F32);
    let part_beta = empty_on(&x, Shape::new([splits, dim]), DType::F32);
    layer_norm_param_partials_kernel::launch::<R>(
        &client,
        CubeCount::Static(dim.div_ceil(COLUMN_UNITS as usize) as u32, splits as u32, 1),
        CubeDim::new_1d(COLUMN_UNITS),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        rstd.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        part_gamma.clone().into_tensor_arg(),
        part_beta.clone().into_tensor_arg(),
        dim as u32,
        rows_per_split as u32,
        dtype.into(),
    );
    sum_splits(part_gamma, &grad_gamma, splits);
    sum_splits(part_beta, &grad_beta, splits);
    (grad_x, Some([grad_gamma, grad_beta]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{row_splits, row_units, MAX_SPLITS, MIN_SPLIT_ROWS};

    /// SD 1.5's shapes: 2 x 4096 rows in 256 ranges of 32; CLIP's 77 tokens in 3 ranges.
    #[test]
    fn sd15_splits() {
        assert_eq!(row_splits(8192), (256, 32));
        assert_eq!(row_splits(77), (3, 32));
        assert_eq!(row_splits(1), (1, 32));
    }

    /// SD 1.5's UNet rows (320, 640, 1280) and CLIP's (768); narrow rows get one warp, wide
    /// ones the most.
    #[test]
    fn units_by_width() {
        let units: Vec<_> = [320, 640, 1280, 768, 1, 128, 129, 3000]
            .map(row_units)
            .to_vec();
        assert_eq!(units, [128, 256, 256, 256, 32, 32, 64, 256]);
    }

    proptest! {
        /// The ranges cover every row once (the last one not empty), are never shorter than
        /// the minimum unless there are fewer rows, and never more than the maximum.
        #[test]
        fn ranges_cover_the_rows(rows in 1usize..5_000_000) {
            let (splits, per_split) = row_splits(rows);
            prop_assert!((1..=MAX_SPLITS).contains(&splits));
            prop_assert!(per_split >= MIN_SPLIT_ROWS);
            prop_assert!((splits - 1) * per_split < rows);
            prop_assert!(splits * per_split >= rows);
        }
    }
}
