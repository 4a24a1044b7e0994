//! R2 with dense per-task transforms `H_i` `[out, out]`, exactly as the paper states it.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_diffusion::precision::{param_zeros, to_param_dtype};
use cidm_diffusion::totals::{add_all, sum_all};

use super::detached;
use crate::delta::{check_deltas, LowRankDelta};
use crate::error::Result;

/// The task-shared subspace `W*` per layer and dense `H_i` per task and layer.
///
/// # Shapes
/// - w_star: `layers` tensors `[out_l, in_l]`
/// - h: `tasks` lists of `layers` tensors `[out_l, out_l]`
#[derive(Debug, Clone)]
pub struct ExactCommonSubspace<B: Backend> {
    /// `W*^l`, shared by all tasks.
    pub w_star: Vec<Tensor<B, 2>>,
    /// `H_i^l`, one list per task.
    pub h: Vec<Vec<Tensor<B, 2>>>,
}

/// The closed-form gradients of R2 (METHOD.md section 3, step 2).
#[derive(Debug, Clone)]
pub struct ExactGradients<B: Backend> {
    /// `dR2/dW*^l = -2 sum_i H_i^T (ΔW_i - H_i W*)`.
    pub w_star: Vec<Tensor<B, 2>>,
    /// `dR2/dH_i^l = -2 (ΔW_i - H_i W*) W*^T`.
    pub h: Vec<Vec<Tensor<B, 2>>>,
}

impl<B: Backend> ExactCommonSubspace<B> {
    /// `W* = 0` for layers of `[out, in]` shapes, and no tasks yet. Starting from zero makes
    /// the first step move `W*` toward the mean update of the tasks.
    pub fn new(shapes: &[[usize; 2]], device: &B::Device) -> Self {
        Self {
            w_star: shapes.iter().map(|&s| param_zeros(s, device)).collect(),
            h: Vec::new(),
        }
    }

    /// `[out, in]` per layer.
    pub fn shapes(&self) -> Vec<[usize; 2]> {
        self.w_star.iter().map(|w| w.dims()).collect()
    }

    /// Adds a task with `H = I` on every layer (the new task starts as the shared subspace).
    pub fn add_task(&mut self) {
        let h = self
            .w_star
            .iter()
            .map(|w| to_param_dtype(Tensor::eye(w.dims()[0], &w.device())))
            .collect();
        self.h.push(h);
    }

    /// `R2 = sum_i sum_l ||ΔW_i^l - H_i^l W*^l||_F^2`, differentiable w.r.t. the deltas (step 1
    /// of the two-step update trains `ΔW_g` on it with `H` and `W*` fixed).
    ///
    /// # Shapes
    /// - deltas: `tasks` lists of `layers` deltas; output `[1]`
    pub fn r2(&self, deltas: &[Vec<LowRankDelta<B>>]) -> Result<Tensor<B, 1>> {
        check_deltas(deltas, &self.shapes(), self.h.len())?;
        let squares = self.residuals(deltas).into_iter().flatten();
        Ok(add_all(squares.map(|r| sum_all(r.square()))).unwrap_or_else(|| self.zero()))
    }

    /// The closed-form gradients at the current `H`, `W*`, with the deltas held fixed.
    pub fn gradients(&self, deltas: &[Vec<LowRankDelta<B>>]) -> Result<ExactGradients<B>> {
        check_deltas(deltas, &self.shapes(), self.h.len())?;
        let residuals = self.residuals(&detached(deltas));
        let h = residuals
            .iter()
            .map(|task| {
                task.iter()
                    .zip(&self.w_star)
                    .map(|(r, w)| r.clone().matmul(w.clone().transpose()).mul_scalar(-2.0))
                    .collect()
            })
            .collect();
        let w_star = (0..self.w_star.len())
            .map(|l| {
                self.h
                    .iter()
                    .zip(&residuals)
                    .map(|(h, r)| h[l].clone().transpose().matmul(r[l].clone()))
                    .fold(self.w_star[l].zeros_like(), |a, b| a + b)
                    .mul_scalar(-2.0)
            })
            .collect();
        Ok(ExactGradients { w_star, h })
    }

    /// Step 2: one gradient-descent step on every `H_i` and `W*` (both gradients taken at the
    /// current point), `x <- x - lr * dR2/dx`. The paper's printed "+" would ascend.
    pub fn descend(&mut self, deltas: &[Vec<LowRankDelta<B>>], lr: f64) -> Result<()> {
        let grads = self.gradients(deltas)?;
        for (w, g) in self.w_star.iter_mut().zip(grads.w_star) {
            *w = w.clone() - g.mul_scalar(lr);
        }
        for (task, task_grads) in self.h.iter_mut().zip(grads.h) {
            for (h, g) in task.iter_mut().zip(task_grads) {
                *h = h.clone() - g.mul_scalar(lr);
            }
        }
        Ok(())
    }

    /// `ΔW_i^l - H_i^l W*^l` for every task and layer.
    fn residuals(&self, deltas: &[Vec<LowRankDelta<B>>]) -> Vec<Vec<Tensor<B, 2>>> {
        deltas
            .iter()
            .zip(&self.h)
            .map(|(task, h)| {
                task.iter()
                    .zip(h)
                    .zip(&self.w_star)
                    .map(|((d, h), w)| d.dense() - h.clone().matmul(w.clone()))
                    .collect()
            })
            .collect()
    }

    fn zero(&self) -> Tensor<B, 1> {
        let device = self.w_star.first().map(|w| w.device()).unwrap_or_default();
        param_zeros([1], &device)
    }
}
