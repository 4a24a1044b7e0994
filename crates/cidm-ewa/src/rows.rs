//! Token embeddings on the host: the rows of a text-encoder output at chosen positions.
//! Weights are computed once per prompt from a few hundred rows, so host f64 arithmetic costs
//! nothing next to a UNet step and gives the same weights on every backend.

use serde::{Deserialize, Serialize};

use crate::error::{EwaError, Result};

/// `rows x dim` embeddings, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRows {
    dim: usize,
    values: Vec<f32>,
}

impl TokenRows {
    /// Rows from row-major `values`; errors when `dim` is zero, `values` is empty or not a
    /// whole number of rows, or holds NaN or infinity.
    pub fn new(dim: usize, values: Vec<f32>) -> Result<Self> {
        if dim == 0 || values.is_empty() || !values.len().is_multiple_of(dim) {
            return Err(EwaError::Shape {
                what: "token rows".into(),
                found: vec![values.len()],
                expected: format!("a positive multiple of the width {dim}"),
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(EwaError::NonFinite("token rows".into()));
        }
        Ok(Self { dim, values })
    }

    /// The width of each row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim
    }

    /// Row `i` (the caller keeps `i < rows()`).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Every row, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks_exact(self.dim)
    }

    /// The mean of the rows.
    pub fn mean(&self) -> Vec<f64> {
        let mut mean = vec![0.0f64; self.dim];
        for row in self.iter() {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        let n = self.rows() as f64;
        mean.iter_mut().for_each(|m| *m /= n);
        mean
    }
}
