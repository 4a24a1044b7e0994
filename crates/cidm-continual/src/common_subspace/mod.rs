//! R2, the task-shared common subspace (METHOD.md section 3): every task's update should be a
//! task-specific transform of one shared subspace, `ΔW_i^l ≈ H_i^l W*^l`, so that what tasks
//! have in common is consolidated in `W*` instead of being overwritten.
//!
//! All matrices are in the paper's orientation: `ΔW`, `W*` `[out, in]`, `H` `[out, out]`.
//! A "layer" here is any adapted projection; a trainer adapting `to_k` and `to_v` of 16
//! cross-attention layers passes 32 entries per task.
//!
//! Two storages of `H_i` ([`crate::R2Variant`]): [`ExactCommonSubspace`] (dense, the paper)
//! and [`FactorisedCommonSubspace`] (`H_i = I + U_i V_i^T`). [`CommonSubspace`] picks one from
//! the config.

mod exact;
mod factorised;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_diffusion::precision::param_zeros;
use cidm_diffusion::totals::{add_all, sum_all};

pub use exact::{ExactCommonSubspace, ExactGradients};
pub use factorised::{FactorisedCommonSubspace, FactorisedGradients};

use crate::config::R2Variant;
use crate::delta::{check_deltas, LowRankDelta};
use crate::error::{Error, Result};

/// R2's state in the variant the config asks for.
#[derive(Debug, Clone)]
pub enum CommonSubspace<B: Backend> {
    /// Dense `H_i`.
    Exact(ExactCommonSubspace<B>),
    /// `H_i = I + U_i V_i^T`.
    Factorised(FactorisedCommonSubspace<B>),
}

impl<B: Backend> CommonSubspace<B> {
    /// `W* = 0` for layers of `[out, in]` shapes and no tasks yet.
    pub fn new(variant: R2Variant, shapes: &[[usize; 2]], device: &B::Device) -> Result<Self> {
        Ok(match variant {
            R2Variant::Exact => Self::Exact(ExactCommonSubspace::new(shapes, device)),
            R2Variant::Factorised { rank } => {
                Self::Factorised(FactorisedCommonSubspace::new(shapes, rank, device)?)
            }
        })
    }

    /// Adds the transform of a new task (`H = I`); `seed` draws the factorised variant's `V`.
    pub fn add_task(&mut self, seed: u64) {
        match self {
            Self::Exact(s) => s.add_task(),
            Self::Factorised(s) => s.add_task(seed),
        }
    }

    /// Drops task `position`'s transform (the task was removed from its store); `W*` stays.
    pub fn remove_task(&mut self, position: usize) -> Result<()> {
        if position >= self.tasks() {
            return Err(Error::InvalidInput(format!(
                "no task {position} among {} in R2's state",
                self.tasks()
            )));
        }
        match self {
            Self::Exact(s) => {
                s.h.remove(position);
            }
            Self::Factorised(s) => {
                s.u.remove(position);
                s.v.remove(position);
            }
        }
        Ok(())
    }

    /// Tasks registered so far.
    pub fn tasks(&self) -> usize {
        match self {
            Self::Exact(s) => s.h.len(),
            Self::Factorised(s) => s.u.len(),
        }
    }

    /// R2 over all tasks and layers, differentiable w.r.t. the deltas.
    ///
    /// # Shapes
    /// - deltas: `tasks` lists of `layers` deltas; output `[1]`
    pub fn r2(&self, deltas: &[Vec<LowRankDelta<B>>]) -> Result<Tensor<B, 1>> {
        match self {
            Self::Exact(s) => s.r2(deltas),
            Self::Factorised(s) => s.r2(deltas),
        }
    }

    /// Task `task`'s share of R2, `sum_l ||ΔW_task^l - H_task^l W*^l||_F^2`, differentiable
    /// w.r.t. `deltas`. Step 1 of the two-step update needs only the new task's share: the
    /// other tasks' terms do not depend on its parameters, so they add no gradient.
    ///
    /// # Shapes
    /// - deltas: `layers` deltas of task `task`; output `[1]`
    pub fn r2_of_task(&self, task: usize, deltas: &[LowRankDelta<B>]) -> Result<Tensor<B, 1>> {
        let (tasks, shapes) = match self {
            Self::Exact(s) => (s.h.len(), s.shapes()),
            Self::Factorised(s) => (s.u.len(), s.shapes()),
        };
        if task >= tasks {
            return Err(Error::InvalidInput(format!(
                "R2 of task {task}, but only {tasks} tasks are registered"
            )));
        }
        check_deltas(&[deltas.to_vec()], &shapes, 1)?;
        let device = deltas
            .first()
            .map(|d| d.up.device())
            .ok_or_else(|| Error::InvalidInput("R2 needs at least one layer".into()))?;
        let squares = deltas.iter().enumerate().map(|(l, delta)| {
            let mapped = match self {
                Self::Exact(s) => s.h[task][l].clone().matmul(s.w_star[l].clone()),
                Self::Factorised(s) => {
                    let w = s.w_star[l].clone();
                    w.clone()
                        + s.u[task][l]
                            .clone()
                            .matmul(s.v[task][l].clone().transpose().matmul(w))
                }
            };
            sum_all((delta.dense() - mapped).square())
        });
        Ok(add_all(squares).unwrap_or_else(|| param_zeros([1], &device)))
    }

    /// Step 2 of the two-step update: one descent step on the transforms and `W*`.
    pub fn descend(&mut self, deltas: &[Vec<LowRankDelta<B>>], lr: f64) -> Result<()> {
        match self {
            Self::Exact(s) => s.descend(deltas, lr),
            Self::Factorised(s) => s.descend(deltas, lr),
        }
    }
}

/// Floats R2's state holds for `tasks` tasks over layers of `[out, in]` shapes: `W*` plus
/// `out^2` (exact) or `2 * out * rank` (factorised) per task and layer. Transient residuals
/// (`out * in` per layer) come on top during a call.
pub fn state_floats(variant: R2Variant, shapes: &[[usize; 2]], tasks: usize) -> usize {
    let per_task: usize = shapes
        .iter()
        .map(|&[out, _]| match variant {
            R2Variant::Exact => out * out,
            R2Variant::Factorised { rank } => 2 * out * rank,
        })
        .sum();
    let shared: usize = shapes.iter().map(|&[out, inp]| out * inp).sum();
    shared + tasks * per_task
}

fn detached<B: Backend>(deltas: &[Vec<LowRankDelta<B>>]) -> Vec<Vec<LowRankDelta<B>>> {
    deltas
        .iter()
        .map(|task| task.iter().map(LowRankDelta::detach).collect())
        .collect()
}
