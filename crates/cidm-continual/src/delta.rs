//! A task's low-rank weight update `ΔW = A B` in the paper's orientation, the unit R2 works
//! on.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// One layer's low-rank update `ΔW = A B` (the paper's orientation).
///
/// From the core's `LowRankBank` (`down` `[in, r]`, `up` `[r, out]`, `scale`), the paper's
/// factors are `up = (scale * bank.up)^T` and `down = bank.down^T`.
///
/// # Shapes
/// - up (A): `[out, rank]`
/// - down (B): `[rank, in]`
#[derive(Debug, Clone)]
pub struct LowRankDelta<B: Backend> {
    /// A, `[out, rank]`.
    pub up: Tensor<B, 2>,
    /// B, `[rank, in]`.
    pub down: Tensor<B, 2>,
}

impl<B: Backend> LowRankDelta<B> {
    /// A delta from its factors; errors when the ranks disagree.
    pub fn new(up: Tensor<B, 2>, down: Tensor<B, 2>) -> Result<Self> {
        if up.dims()[1] != down.dims()[0] {
            return Err(Error::Shape {
                what: "down factor".into(),
                found: down.dims().to_vec(),
                expected: format!("[{}, in] (the up factor's rank)", up.dims()[1]),
            });
        }
        Ok(Self { up, down })
    }

    /// `[out, in]`: the dense shape of `ΔW`.
    pub fn shape(&self) -> [usize; 2] {
        [self.up.dims()[0], self.down.dims()[1]]
    }

    /// The dense `ΔW = A B`.
    ///
    /// # Shapes
    /// - output: `[out, in]`
    pub fn dense(&self) -> Tensor<B, 2> {
        self.up.clone().matmul(self.down.clone())
    }

    /// The same delta cut from the autodiff graph (R2's step 2 holds `ΔW` fixed).
    pub fn detach(&self) -> Self {
        Self {
            up: self.up.clone().detach(),
            down: self.down.clone().detach(),
        }
    }
}

/// Checks `deltas` (tasks x layers) against the per-layer `[out, in]` shapes and task count.
pub(crate) fn check_deltas<B: Backend>(
    deltas: &[Vec<LowRankDelta<B>>],
    shapes: &[[usize; 2]],
    tasks: usize,
) -> Result<()> {
    if deltas.len() != tasks {
        return Err(Error::Shape {
            what: "R2 task deltas".into(),
            found: vec![deltas.len()],
            expected: format!("{tasks} tasks (one per H_i)"),
        });
    }
    for (i, task) in deltas.iter().enumerate() {
        if task.len() != shapes.len() {
            return Err(Error::Shape {
                what: format!("deltas of task {i}"),
                found: vec![task.len()],
                expected: format!("{} layers", shapes.len()),
            });
        }
        for (l, (delta, shape)) in task.iter().zip(shapes).enumerate() {
            if delta.up.dims()[1] != delta.down.dims()[0] || delta.shape() != *shape {
                return Err(Error::Shape {
                    what: format!("delta of task {i}, layer {l} (up, down)"),
                    found: [delta.up.dims(), delta.down.dims()].concat(),
                    expected: format!("up [{}, r], down [r, {}]", shape[0], shape[1]),
                });
            }
        }
    }
    Ok(())
}
