//! One thread's matrix product over slices, for loops that parallelise over blocks themselves
//! (the attention's blocks of query rows): the `gemm` crate, which Flex's own matmul runs on.

/// A factor of [`matmul`]: its values, and whether they are the factor itself (row-major)
/// or its transpose (row-major, multiplied as `A^T`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Factor<'a> {
    /// The factor, row-major.
    Rows(&'a [f32]),
    /// The factor's transpose, row-major.
    Transposed(&'a [f32]),
}

impl Factor<'_> {
    fn values(&self) -> &[f32] {
        match self {
            Factor::Rows(values) | Factor::Transposed(values) => values,
        }
    }

    /// `(column stride, row stride)` in elements of the `[rows, columns]` factor.
    fn strides(&self, rows: usize, columns: usize) -> (isize, isize) {
        match self {
            Factor::Rows(_) => (1, columns as isize),
            Factor::Transposed(_) => (rows as isize, 1),
        }
    }
}

/// `dst = alpha * lhs rhs`, or with `accumulate` `dst += alpha * lhs rhs`, for a row-major
/// `dst` `[m, n]`, `lhs` `[m, k]` and `rhs` `[k, n]`, on the calling thread.
///
/// # Panics
/// When a slice's length is not the product of its dimensions: the callers slice their
/// buffers by these dimensions, so a mismatch is a bug there, and the check is what keeps
/// the product inside the slices.
pub(super) fn matmul(
    dst: &mut [f32],
    lhs: Factor,
    rhs: Factor,
    [m, k, n]: [usize; 3],
    alpha: f32,
    accumulate: bool,
) {
    let (lhs_len, rhs_len) = (lhs.values().len(), rhs.values().len());
    assert!(
        dst.len() == m * n && lhs_len == m * k && rhs_len == k * n,
        "matmul of [{m}, {k}] by [{k}, {n}] on slices of {lhs_len}, {rhs_len} and {} values",
        dst.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let (lhs_cs, lhs_rs) = lhs.strides(m, k);
    let (rhs_cs, rhs_rs) = rhs.strides(k, n);
    // SAFETY: with the lengths checked above, every element `gemm` reads, `lhs` at
    // `i * lhs_rs + l * lhs_cs` (`i * k + l` or `l * m + i`), `rhs` at `l * rhs_rs + j *
    // rhs_cs` (`l * n + j` or `j * k + l`) and `dst` at `i * n + j`, and every one it writes,
    // `dst[i * n + j]`, for `i < m`, `j < n`, `l < k`, lies inside its slice; `dst` is
    // borrowed mutably, so nothing else reads or writes it meanwhile. gemm computes
    // `dst = a * dst + b * lhs rhs`, reading `dst` only when told to (`accumulate`, with
    // `a = 1`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.values().as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.values().as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{matmul, Factor};

    /// `[[1, 2, 3], [4, 5, 6]]` times `[[1, 0], [0, 1], [1, 1]]` is `[[4, 5], [10, 11]]`, with
    /// either factor given as its transpose; `alpha` scales the product, and `accumulate`
    /// adds it to what `dst` held.
    #[test]
    fn products_of_known_matrices() {
        let lhs = Factor::Rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let lhs_t = Factor::Transposed(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let rhs = Factor::Rows(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let rhs_t = Factor::Transposed(&[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
        for (lhs, rhs) in [(lhs, rhs), (lhs_t, rhs), (lhs, rhs_t), (lhs_t, rhs_t)] {
            let mut dst = [9.0f32; 4];
            matmul(&mut dst, lhs, rhs, [2, 3, 2], 1.0, false);
            assert_eq!(dst, [4.0, 5.0, 10.0, 11.0]);
        }
        let mut dst = [1.0f32; 4];
        matmul(&mut dst, lhs, rhs, [2, 3, 2], 0.5, true);
        assert_eq!(dst, [3.0, 3.5, 6.0, 6.5]);
    }

    #[test]
    #[should_panic(expected = "matmul of [2, 3] by [3, 2]")]
    fn wrong_lengths_are_refused() {
        let mut dst = [0.0f32; 4];
        let (lhs, rhs) = (Factor::Rows(&[0.0; 6]), Factor::Rows(&[0.0; 5]));
        matmul(&mut dst, lhs, rhs, [2, 3, 2], 1.0, false);
    }
}
