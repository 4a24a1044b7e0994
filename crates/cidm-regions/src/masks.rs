//! Box masks at the attention resolutions: at an `h x w` grid, a box covers the cells whose
//! whole extent lies inside it, so the first row and column are the box's start rounded up and
//! the end is its end rounded down (METHOD.md section 5). A tolerance of 1e-9 cells absorbs
//! float error in `coordinate * size` (0.3 * 10 is 3.0000000000000004, which must still
//! start at cell 3).

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::spec::BoundingBox;

const CELL_TOLERANCE: f64 = 1e-9;

/// The rows and columns a box covers on an `[h, w]` grid (possibly empty ranges).
pub fn box_cells(bbox: &BoundingBox, [h, w]: [usize; 2]) -> (Range<usize>, Range<usize>) {
    let [x0, y0, x1, y1] = bbox.coords();
    let span = |start: f64, end: f64, n: usize| {
        let n_f = n as f64;
        let first = ((start * n_f - CELL_TOLERANCE).ceil().max(0.0) as usize).min(n);
        let last = ((end * n_f + CELL_TOLERANCE).floor().max(0.0) as usize).min(n);
        first..last.max(first)
    };
    (span(y0, y1, h), span(x0, x1, w))
}

/// The 0/1 mask of a box on an `[h, w]` grid, row-major.
pub fn box_mask(bbox: &BoundingBox, size: [usize; 2]) -> Vec<f32> {
    let [h, w] = size;
    let (rows, cols) = box_cells(bbox, size);
    let mut mask = vec![0.0f32; h * w];
    for r in rows {
        mask[r * w + cols.start..r * w + cols.end].fill(1.0);
    }
    mask
}

/// The row-major positions (`row * w + column`, increasing) a box covers on an `[h, w]` grid:
/// what the core's regional cross-attention takes.
pub fn box_positions(bbox: &BoundingBox, size: [usize; 2]) -> Vec<usize> {
    let (rows, cols) = box_cells(bbox, size);
    rows.flat_map(|r| cols.clone().map(move |c| r * size[1] + c))
        .collect()
}

/// The masks of all boxes on an `[h, w]` grid as one tensor `[boxes, h * w]`.
pub fn box_masks<B: Backend>(
    boxes: &[BoundingBox],
    size: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    let values: Vec<f32> = boxes.iter().flat_map(|b| box_mask(b, size)).collect();
    Tensor::from_data(
        TensorData::new(values, [boxes.len(), size[0] * size[1]]),
        device,
    )
}
