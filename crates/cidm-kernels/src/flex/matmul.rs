//! Matrix products over strided views of slices, for loops that own their blocks: the `gemm`
//! crate, which Flex's own matmul runs on. [`product`] runs on the calling thread, for loops
//! that parallelise over blocks themselves (the attention's blocks of query rows), or on
//! rayon's pool (the convolution's tiles).

use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;

use super::contiguous;

/// A `[rows, columns]` matrix read from a slice: element `(i, j)` at `i * row_stride + j *
/// column_stride`.
#[derive(Debug, Clone, Copy)]
pub(super) struct View<'a> {
    values: &'a [f32],
    rows: usize,
    columns: usize,
    row_stride: usize,
    column_stride: usize,
}

impl<'a> View<'a> {
    /// The matrix with element `(i, j)` at `i * row_stride + j * column_stride`.
    pub(super) fn new(
        values: &'a [f32],
        [rows, columns]: [usize; 2],
        [row_stride, column_stride]: [usize; 2],
    ) -> Self {
        Self {
            values,
            rows,
            columns,
            row_stride,
            column_stride,
        }
    }

    /// The matrix stored row-major, `row_stride` values apart (`columns` for dense rows).
    pub(super) fn strided(values: &'a [f32], rows: usize, columns: usize, stride: usize) -> Self {
        Self::new(values, [rows, columns], [stride, 1])
    }

    /// The matrix stored row-major with dense rows.
    pub(super) fn rows(values: &'a [f32], rows: usize, columns: usize) -> Self {
        Self::strided(values, rows, columns, columns)
    }

    /// The matrix whose transpose `[columns, rows]` is stored row-major with dense rows.
    pub(super) fn transposed(values: &'a [f32], rows: usize, columns: usize) -> Self {
        Self::new(values, [rows, columns], [1, rows])
    }

    /// `[rows, columns]`.
    pub(super) fn dims(&self) -> [usize; 2] {
        [self.rows, self.columns]
    }

    /// The transpose, `[columns, rows]`, of the same values.
    pub(super) fn t(self) -> Self {
        Self {
            rows: self.columns,
            columns: self.rows,
            row_stride: self.column_stride,
            column_stride: self.row_stride,
            ..self
        }
    }

    /// The `count` rows from row `first` on (as many as there are past `first`, if fewer).
    pub(super) fn rows_from(self, first: usize, count: usize) -> Self {
        let first = first.min(self.rows);
        let offset = (first * self.row_stride).min(self.values.len());
        Self {
            values: &self.values[offset..],
            rows: count.min(self.rows - first),
            ..self
        }
    }

    /// Row `i`'s values, in order (`i < rows`).
    pub(super) fn row(&self, i: usize) -> impl Iterator<Item = f32> + '_ {
        (0..self.columns).map(move |j| self.values[i * self.row_stride + j * self.column_stride])
    }

    /// Whether every element lies inside the slice.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.columns == 0
            || (self.rows - 1) * self.row_stride + (self.columns - 1) * self.column_stride
                < self.values.len()
    }
}

/// A Flex tensor whose matrices (its last two axes) [`View`]s read where they lie: the
/// tensor itself where no stride is negative (a transpose, a slice, the heads of a reshaped
/// projection) and, when asked for, its rows are dense; else a contiguous copy (a flipped
/// tensor). Copying the model's views contiguous before each product was about 1% of an SD
/// 1.5 UNet step on the CPU.
#[derive(Debug, Clone)]
pub(super) struct Matrices(FlexTensor);

impl Matrices {
    /// `tensor` (f32, at least 2-D) as it can be read in place; with `dense_rows`, only
    /// where its last axis is dense (or of length one).
    pub(super) fn new(tensor: &FlexTensor, dense_rows: bool) -> Self {
        let (shape, strides) = (tensor.shape(), tensor.layout().strides());
        let last = shape.len() - 1;
        let dense = !dense_rows || strides[last] == 1 || shape[last] == 1;
        if dense && strides.iter().all(|&s| s >= 0) {
            Self(tensor.clone())
        } else {
            Self(contiguous(tensor))
        }
    }

    /// The tensor read.
    pub(super) fn tensor(&self) -> &FlexTensor {
        &self.0
    }

    /// The matrix at `leading`, the indices of every axis but the last two (none for a
    /// 2-D tensor).
    pub(super) fn at(&self, leading: &[usize]) -> View<'_> {
        let (shape, layout) = (self.0.shape(), self.0.layout());
        let strides = layout.strides();
        let stride = |axis: usize| strides[axis].unsigned_abs();
        let rank = strides.len();
        let start = layout.start_offset()
            + (leading.iter().enumerate())
                .map(|(axis, i)| i * stride(axis))
                .sum::<usize>();
        View::new(
            &self.0.storage::<f32>()[start..],
            [shape[rank - 2], shape[rank - 1]],
            [stride(rank - 2), stride(rank - 1)],
        )
    }
}

/// A `[rows, columns]` matrix written into a slice, row-major with rows `row_stride >=
/// columns` values apart, so that no two elements share a value.
#[derive(Debug)]
pub(super) struct ViewMut<'a> {
    values: &'a mut [f32],
    rows: usize,
    columns: usize,
    row_stride: usize,
}

impl<'a> ViewMut<'a> {
    /// The matrix stored row-major, `row_stride` values apart.
    pub(super) fn rows(values: &'a mut [f32], rows: usize, columns: usize, stride: usize) -> Self {
        Self {
            values,
            rows,
            columns,
            row_stride: stride,
        }
    }

    /// Whether every element lies inside the slice, each at its own place.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.columns == 0
            || (self.row_stride >= self.columns
                && (self.rows - 1) * self.row_stride + self.columns <= self.values.len())
    }
}

/// Products of fewer multiply-adds than this run on the calling thread even where the caller
/// allows the pool: rayon's hand-off costs more than it saves below it (Flex's own matmul
/// uses the same threshold).
pub(super) const PARALLEL_WORK: usize = 192 * 192 * 192;

/// `dst = alpha * lhs rhs`, or with `accumulate` `dst += alpha * lhs rhs`, over strided views;
/// with `parallel`, on rayon's pool when the product has at least [`PARALLEL_WORK`]
/// multiply-adds (gemm splits it between its threads), else on the calling thread.
///
/// # Panics
/// When the views' dimensions do not chain (`lhs` `[m, k]`, `rhs` `[k, n]`, `dst` `[m, n]`)
/// or a view reaches outside its slice: the callers build the views from their buffers'
/// dimensions, so either is a bug there, and the check is what keeps the product inside
/// the slices.
pub(super) fn product(
    dst: ViewMut,
    lhs: View,
    rhs: View,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
) {
    let (m, k, n) = (lhs.rows, lhs.columns, rhs.columns);
    assert!(
        rhs.rows == k && dst.rows == m && dst.columns == n,
        "product of [{m}, {k}] by [{}, {n}] into [{}, {}]",
        rhs.rows,
        dst.rows,
        dst.columns
    );
    assert!(
        lhs.fits() && rhs.fits() && dst.fits(),
        "product of [{m}, {k}] by [{k}, {n}] reaches outside its slices"
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = if parallel && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `fits` checked above that every element gemm reads, `lhs` at `i * lhs.row_stride
    // + l * lhs.column_stride`, `rhs` at `l * rhs.row_stride + j * rhs.column_stride`, and
    // every one it reads or writes, `dst` at `i * dst.row_stride + j`, for `i < m`, `j < n`,
    // `l < k`, lies inside its slice, and that no two elements of `dst` share a value (its
    // rows are at least `n` apart), so gemm's threads write disjoint values; `dst` is
    // borrowed mutably, so nothing else reads or writes it meanwhile. gemm computes `dst = a
    // * dst + b * lhs rhs`, reading `dst` only when told to (`accumulate`, with `a = 1`). The
    // strides are below the slices' lengths, so they fit `isize`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.values.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.values.as_ptr(),
            lhs.column_stride as isize,
            lhs.row_stride as isize,
            rhs.values.as_ptr(),
            rhs.column_stride as isize,
            rhs.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{product, View, ViewMut, PARALLEL_WORK};

    /// `[[1, 2, 3], [4, 5, 6]]` times `[[1, 0], [0, 1], [1, 1]]` is `[[4, 5], [10, 11]]`, with
    /// either factor given as its transpose; `alpha` scales the product, and `accumulate`
    /// adds it to what `dst` held.
    #[test]
    fn products_of_known_matrices() {
        let lhs = View::rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let lhs_t = View::transposed(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0], 2, 3);
        let rhs = View::rows(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2);
        let rhs_t = View::transposed(&[1.0, 0.0, 1.0, 0.0, 1.0, 1.0], 3, 2);
        for (lhs, rhs) in [(lhs, rhs), (lhs_t, rhs), (lhs, rhs_t), (lhs_t, rhs_t)] {
            let mut dst = [9.0f32; 4];
            product(
                ViewMut::rows(&mut dst, 2, 2, 2),
                lhs,
                rhs,
                1.0,
                false,
                false,
            );
            assert_eq!(dst, [4.0, 5.0, 10.0, 11.0]);
            assert_eq!(lhs.row(1).collect::<Vec<_>>(), [4.0, 5.0, 6.0]);
        }
        let mut dst = [1.0f32; 4];
        product(ViewMut::rows(&mut dst, 2, 2, 2), lhs, rhs, 0.5, true, false);
        assert_eq!(dst, [3.0, 3.5, 6.0, 6.5]);
    }

    /// The same product with the factors and the result as blocks of wider rows (the
    /// convolution's tiles): only the block's values change.
    #[test]
    fn strided_blocks() {
        // lhs [[1, 2, 3], [4, 5, 6]] in rows of 4; rhs [[1, 0], [0, 1], [1, 1]] in rows of 3.
        let lhs = [1.0, 2.0, 3.0, -1.0, 4.0, 5.0, 6.0, -1.0];
        let rhs = [1.0, 0.0, -1.0, 0.0, 1.0, -1.0, 1.0, 1.0, -1.0];
        let mut dst = [7.0f32; 6];
        let view = ViewMut::rows(&mut dst, 2, 2, 3);
        let (a, b) = (View::strided(&lhs, 2, 3, 4), View::strided(&rhs, 3, 2, 3));
        product(view, a, b, 1.0, false, true);
        assert_eq!(dst, [4.0, 5.0, 7.0, 10.0, 11.0, 7.0]);
    }

    /// A product large enough for rayon's pool ([`PARALLEL_WORK`] multiply-adds) gives what
    /// the calling thread alone gives, into strided rows: gemm splits the output between its
    /// threads, each value summed in the same order.
    #[test]
    fn products_on_the_pool_equal_the_calling_threads() {
        let (m, k, n) = (200, 190, 210);
        assert!(m * k * n >= PARALLEL_WORK);
        let lhs: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.25).collect();
        let run = |parallel| {
            let mut dst = vec![-1.0f32; m * (n + 3)];
            let view = ViewMut::rows(&mut dst, m, n, n + 3);
            product(
                view,
                View::rows(&lhs, m, k),
                View::rows(&rhs, k, n),
                1.0,
                false,
                parallel,
            );
            dst
        };
        let (pool, alone) = (run(true), run(false));
        assert_eq!(pool, alone);
        assert!(alone.chunks(n + 3).all(|row| row[n..] == [-1.0; 3]));
    }

    /// `t` and `rows_from` as the attention uses them on a strided head: rows 1..3 of `[[1,
    /// 2], [3, 4], [5, 6]]` (rows 3 apart) times the transpose of `[[1, 0], [0, 1], [1, 1]]`
    /// is `[[3, 4, 7], [5, 6, 11]]`; `rows_from` past the end gives no rows.
    #[test]
    fn transposed_and_row_ranges_of_views() {
        let head = [1.0, 2.0, -1.0, 3.0, 4.0, -1.0, 5.0, 6.0];
        let other = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let rows = View::strided(&head, 3, 2, 3).rows_from(1, 5);
        assert_eq!(rows.dims(), [2, 2]);
        let mut dst = [0.0f32; 6];
        let (rhs, result) = (
            View::rows(&other, 3, 2).t(),
            ViewMut::rows(&mut dst, 2, 3, 3),
        );
        product(result, rows, rhs, 1.0, false, false);
        assert_eq!(dst, [3.0, 4.0, 7.0, 5.0, 6.0, 11.0]);
        assert_eq!(View::strided(&head, 3, 2, 3).rows_from(4, 2).dims(), [0, 2]);
    }

    /// Factors whose dimensions do not chain.
    #[test]
    #[should_panic(expected = "product of [2, 3] by [2, 2] into [2, 2]")]
    fn factors_that_do_not_chain_are_refused() {
        let mut dst = [0.0f32; 4];
        let (a, b) = (View::rows(&[0.0; 6], 2, 3), View::rows(&[0.0; 4], 2, 2));
        product(ViewMut::rows(&mut dst, 2, 2, 2), a, b, 1.0, false, false);
    }

    /// A view whose last row runs past its slice, or a result whose rows overlap.
    #[test]
    #[should_panic(expected = "reaches outside its slices")]
    fn views_outside_their_slices_are_refused() {
        let mut dst = [0.0f32; 4];
        let view = ViewMut::rows(&mut dst, 2, 2, 1);
        let (a, b) = (View::rows(&[0.0; 6], 2, 3), View::rows(&[0.0; 6], 3, 2));
        product(view, a, b, 1.0, false, false);
    }
}
