//! R2 with low-rank per-task transforms `H_i = I + U_i V_i^T`, for when dense `[out, out]`
//! transforms per task and layer cost too much (docs/continual.md has the numbers).
//!
//! `H_i W*` is computed as `W* + U_i (V_i^T W*)`, so no `[out, out]` matrix is ever formed;
//! the per-layer residual `[out, in]` exists only transiently.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::precision::{param_from_data, param_zeros};
use cidm_diffusion::totals::{add_all, sum_all};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::detached;
use crate::delta::{check_deltas, LowRankDelta};
use crate::error::{Error, Result};

/// The shared subspace `W*` per layer and `H_i = I + U_i V_i^T` per task and layer.
///
/// # Shapes
/// - w_star: `layers` tensors `[out_l, in_l]`
/// - u, v: `tasks` lists of `layers` tensors `[out_l, rank]`
#[derive(Debug, Clone)]
pub struct FactorisedCommonSubspace<B: Backend> {
    /// `W*^l`, shared by all tasks.
    pub w_star: Vec<Tensor<B, 2>>,
    /// `U_i^l`, one list per task.
    pub u: Vec<Vec<Tensor<B, 2>>>,
    /// `V_i^l`, one list per task.
    pub v: Vec<Vec<Tensor<B, 2>>>,
    rank: usize,
}

/// The closed-form gradients of the factorised R2 (chain rule through `H = I + U V^T`).
#[derive(Debug, Clone)]
pub struct FactorisedGradients<B: Backend> {
    /// `dR2/dW* = -2 sum_i H_i^T R_i`, with `R_i = ΔW_i - H_i W*`.
    pub w_star: Vec<Tensor<B, 2>>,
    /// `dR2/dU_i = dR2/dH_i V_i = -2 R_i (V_i^T W*)^T`.
    pub u: Vec<Vec<Tensor<B, 2>>>,
    /// `dR2/dV_i = (dR2/dH_i)^T U_i = -2 W* (R_i^T U_i)`.
    pub v: Vec<Vec<Tensor<B, 2>>>,
}

impl<B: Backend> FactorisedCommonSubspace<B> {
    /// `W* = 0` for layers of `[out, in]` shapes, corrections of rank `rank`, no tasks yet.
    pub fn new(shapes: &[[usize; 2]], rank: usize, device: &B::Device) -> Result<Self> {
        if rank == 0 {
            return Err(Error::InvalidInput(
                "the factorised R2 variant needs rank >= 1".into(),
            ));
        }
        Ok(Self {
            w_star: shapes.iter().map(|&s| param_zeros(s, device)).collect(),
            u: Vec::new(),
            v: Vec::new(),
            rank,
        })
    }

    /// A state from its parts (as read back from a file); every list must have one tensor
    /// per layer of `w_star`'s shapes and `u`, `v` `[out_l, rank]`.
    pub fn from_parts(
        w_star: Vec<Tensor<B, 2>>,
        u: Vec<Vec<Tensor<B, 2>>>,
        v: Vec<Vec<Tensor<B, 2>>>,
        rank: usize,
    ) -> Result<Self> {
        let fits = |tasks: &[Vec<Tensor<B, 2>>]| {
            tasks.iter().all(|task| {
                task.len() == w_star.len()
                    && task
                        .iter()
                        .zip(&w_star)
                        .all(|(t, w)| t.dims() == [w.dims()[0], rank])
            })
        };
        if rank == 0 || u.len() != v.len() || !fits(&u) || !fits(&v) {
            return Err(Error::InvalidInput(format!(
                "factorised R2 state: {} layers, {} U and {} V task lists of rank {rank} do not fit",
                w_star.len(),
                u.len(),
                v.len()
            )));
        }
        Ok(Self { w_star, u, v, rank })
    }

    /// `[out, in]` per layer.
    pub fn shapes(&self) -> Vec<[usize; 2]> {
        self.w_star.iter().map(|w| w.dims()).collect()
    }

    /// Rank of the corrections `U_i V_i^T`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Adds a task with `U = 0` (so `H = I`) and `V ~ N(0, 1/out)` drawn on the host from a
    /// ChaCha8 stream seeded by `seed`: with both zero the gradients of `U` and `V` would
    /// vanish and `H` would stay the identity forever.
    pub fn add_task(&mut self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut us, mut vs) = (Vec::new(), Vec::new());
        for w in &self.w_star {
            let out = w.dims()[0];
            let device = w.device();
            let std = 1.0 / (out as f32).sqrt();
            let values: Vec<f32> = (0..out * self.rank)
                .map(|_| {
                    Normal::new(0.0f32, std)
                        .map(|n| n.sample(&mut rng))
                        .unwrap_or(0.0)
                })
                .collect();
            us.push(param_zeros([out, self.rank], &device));
            vs.push(param_from_data(
                TensorData::new(values, [out, self.rank]),
                &device,
            ));
        }
        self.u.push(us);
        self.v.push(vs);
    }

    /// `R2 = sum_i sum_l ||ΔW_i^l - H_i^l W*^l||_F^2`, differentiable w.r.t. the deltas.
    ///
    /// # Shapes
    /// - deltas: `tasks` lists of `layers` deltas; output `[1]`
    pub fn r2(&self, deltas: &[Vec<LowRankDelta<B>>]) -> Result<Tensor<B, 1>> {
        check_deltas(deltas, &self.shapes(), self.u.len())?;
        let device = self.w_star.first().map(|w| w.device()).unwrap_or_default();
        let squares = self.residuals(deltas).into_iter().flatten();
        Ok(add_all(squares.map(|r| sum_all(r.square())))
            .unwrap_or_else(|| param_zeros([1], &device)))
    }

    /// The closed-form gradients at the current `U`, `V`, `W*`, deltas held fixed.
    pub fn gradients(&self, deltas: &[Vec<LowRankDelta<B>>]) -> Result<FactorisedGradients<B>> {
        check_deltas(deltas, &self.shapes(), self.u.len())?;
        let residuals = self.residuals(&detached(deltas));
        let mut grad_u = Vec::new();
        let mut grad_v = Vec::new();
        for ((us, vs), rs) in self.u.iter().zip(&self.v).zip(&residuals) {
            let mut task_u = Vec::new();
            let mut task_v = Vec::new();
            for (((u, v), r), w) in us.iter().zip(vs).zip(rs).zip(&self.w_star) {
                let vt_w = v.clone().transpose().matmul(w.clone());
                task_u.push(r.clone().matmul(vt_w.transpose()).mul_scalar(-2.0));
                let rt_u = r.clone().transpose().matmul(u.clone());
                task_v.push(w.clone().matmul(rt_u).mul_scalar(-2.0));
            }
            grad_u.push(task_u);
            grad_v.push(task_v);
        }
        let w_star = (0..self.w_star.len())
            .map(|l| {
                self.u
                    .iter()
                    .zip(&self.v)
                    .zip(&residuals)
                    .map(|((u, v), r)| {
                        let r = r[l].clone();
                        let ut_r = u[l].clone().transpose().matmul(r.clone());
                        r + v[l].clone().matmul(ut_r)
                    })
                    .fold(self.w_star[l].zeros_like(), |a, b| a + b)
                    .mul_scalar(-2.0)
            })
            .collect();
        Ok(FactorisedGradients {
            w_star,
            u: grad_u,
            v: grad_v,
        })
    }

    /// Step 2: one gradient-descent step on every `U_i`, `V_i` and `W*`, all gradients taken
    /// at the current point.
    pub fn descend(&mut self, deltas: &[Vec<LowRankDelta<B>>], lr: f64) -> Result<()> {
        let grads = self.gradients(deltas)?;
        let step = |x: &mut Tensor<B, 2>, g: Tensor<B, 2>| *x = x.clone() - g.mul_scalar(lr);
        for (w, g) in self.w_star.iter_mut().zip(grads.w_star) {
            step(w, g);
        }
        for (task, grads) in self.u.iter_mut().zip(grads.u) {
            task.iter_mut().zip(grads).for_each(|(x, g)| step(x, g));
        }
        for (task, grads) in self.v.iter_mut().zip(grads.v) {
            task.iter_mut().zip(grads).for_each(|(x, g)| step(x, g));
        }
        Ok(())
    }

    /// `ΔW_i^l - W*^l - U_i^l (V_i^l^T W*^l)` for every task and layer.
    fn residuals(&self, deltas: &[Vec<LowRankDelta<B>>]) -> Vec<Vec<Tensor<B, 2>>> {
        deltas
            .iter()
            .zip(self.u.iter().zip(&self.v))
            .map(|(task, (us, vs))| {
                task.iter()
                    .zip(us.iter().zip(vs))
                    .zip(&self.w_star)
                    .map(|((d, (u, v)), w)| {
                        let vt_w = v.clone().transpose().matmul(w.clone());
                        d.dense() - w.clone() - u.clone().matmul(vt_w)
                    })
                    .collect()
            })
            .collect()
    }
}
