//! What the records of the fused one-input operations (GroupNorm + SiLU, LayerNorm, GEGLU)
//! share: the model's operation timed with its fused kernels forced on and off, forward on
//! the inference backend and forward plus backward on the training backend. Before it is
//! timed, every fused result (output, and for training the gradients of x and of the
//! operation's parameters) is checked against the plain one on the same device (`check.rs`).

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};

use crate::check::Comparison;
use crate::error::{BenchError, Result};
use crate::setup::sync;
use crate::timing::measure;
use crate::workloads::Reps;

/// An operation of the model on one input as the benchmark runs it.
pub trait BenchOp<B: Backend, const D: usize> {
    /// The operation on `x`, its fused kernels forced on (`fused`) or off.
    fn apply(&self, x: &Tensor<B, D>, fused: bool) -> Result<Tensor<B, D>>;
    /// Its parameters (a norm's scale and shift), whose gradients training checks.
    fn params(&self) -> Vec<Tensor<B, 1>>;
    /// The output's dimensions for an input of `dims` (a norm's are the input's).
    fn output_dims(&self, dims: [usize; D]) -> [usize; D] {
        dims
    }
    /// Why the fused kernels refuse `x` (asked with them switched on), or `None`.
    fn refusal(&self, x: &Tensor<B, D>) -> Option<String>;
}

/// The operation on the inference backend.
pub fn forward<N: BenchOp<Selected, D>, const D: usize>(
    x: Tensor<Selected, D>,
    op: N,
    reps: Reps,
) -> Comparison {
    let device = backend::device();
    let run = |fused: bool| Ok(vec![op.apply(&x, fused)?.flatten::<1>(0, D - 1)]);
    let time = |fused: bool| {
        measure(reps.warmup, reps.reps, || {
            run(fused)?;
            sync::<Selected>(&device)
        })
    };
    Comparison::new(|| op.refusal(&x), x.dtype().size() < 4, run, time)
}

/// Forward plus backward on the training backend: the gradients of x and of the parameters
/// of `sum(out * w)` with a random `w`, so every gradient is non-trivial.
pub fn forward_backward<N: BenchOp<Training, D>, const D: usize>(
    x: Tensor<Training, D>,
    op: N,
    reps: Reps,
) -> Comparison {
    let device = backend::device();
    let x = x.require_grad();
    let out_dims = op.output_dims(x.dims());
    let weight = Tensor::<Training, D>::random(out_dims, Distribution::Normal(0.0, 1.0), &device);
    let run = |fused: bool| {
        let out = op.apply(&x, fused)?;
        let grads = (out.clone() * weight.clone()).sum().backward();
        let grad = |t: Tensor<Training, 1>| {
            t.grad(&grads)
                .map(Tensor::<Training, 1>::from_inner)
                .ok_or(BenchError::NoGradient)
        };
        let dx = x
            .grad(&grads)
            .map(|g| Tensor::<Training, D>::from_inner(g).flatten::<1>(0, D - 1))
            .ok_or(BenchError::NoGradient)?;
        let mut results = vec![out.flatten::<1>(0, D - 1), dx];
        for param in op.params() {
            results.push(grad(param)?);
        }
        Ok(results)
    };
    let time = |fused: bool| {
        measure(reps.warmup, reps.reps, || {
            run(fused)?;
            sync::<Training>(&device)
        })
    };
    Comparison::new(|| op.refusal(&x), x.dtype().size() < 4, run, time)
}

/// A parameter of `len` values drawn from N(`mean`, 0.5^2), as trained norm weights are
/// spread (scale around 1, shift around 0), so neither the affine step nor its gradients are
/// trivial.
pub fn weight<B: Backend>(len: usize, mean: f64, device: &B::Device) -> Tensor<B, 1> {
    Tensor::random([len], Distribution::Normal(mean, 0.5), device)
}
