//! GEGLU alone, at the shapes of the UNet's feed-forward blocks (the projection's output,
//! `2 x 4` times the block's width per row, before the activation halves it): the fused
//! kernels of `cidm-kernels` against the plain path (`cidm-diffusion`'s `nn::geglu` with the
//! kernels switched off), timed and checked as `fused_op.rs` describes. The transformer
//! inputs are the layer norm's (`layer_norm::shapes`).

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::geglu;
use cidm::kernels::{fused_geglu, set_fused_geglu};

use crate::check::{forced, Comparison};
use crate::error::Result;
use crate::fused_op::{self, BenchOp};
use crate::layer_norm::RowShape;
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;
/// The feed-forward's hidden width over the block's (diffusers' `mult`, 4): the projection
/// gives twice that, the two halves of GEGLU.
const FF_MULT: usize = 4;

/// `geglu_t4096_d2560`: the record name of a transformer input (tokens, and the width of
/// GEGLU's input), as the reference prints it too.
pub fn name(shape: RowShape) -> String {
    format!("geglu_t{}_d{}", shape.tokens, width(shape))
}

/// Width of GEGLU's input for a transformer block of `shape`'s width.
fn width(shape: RowShape) -> usize {
    2 * FF_MULT * shape.dim
}

/// GEGLU on the inference backend.
pub fn forward(shape: RowShape, reps: Reps) -> Comparison {
    fused_op::forward(input::<Selected>(shape, &backend::device()), Geglu, reps)
}

/// Forward plus backward on the training backend.
pub fn forward_backward(shape: RowShape, reps: Reps) -> Comparison {
    fused_op::forward_backward(input::<Training>(shape, &backend::device()), Geglu, reps)
}

/// The model's GEGLU (`nn::geglu`).
struct Geglu;

impl<B: Backend> BenchOp<B, 3> for Geglu {
    fn apply(&self, x: &Tensor<B, 3>, fused: bool) -> Result<Tensor<B, 3>> {
        Ok(forced(set_fused_geglu, fused, || geglu(x.clone()))?)
    }

    fn params(&self) -> Vec<Tensor<B, 1>> {
        Vec::new()
    }

    fn output_dims(&self, [batch, tokens, width]: [usize; 3]) -> [usize; 3] {
        [batch, tokens, width / 2]
    }

    fn refusal(&self, x: &Tensor<B, 3>) -> Option<String> {
        forced(set_fused_geglu, true, || fused_geglu(x))
            .err()
            .map(|unfused| unfused.to_string())
    }
}

/// Standard-normal input: both halves spread over GELU's curved part and its tails.
fn input<B: Backend>(shape: RowShape, device: &B::Device) -> Tensor<B, 3> {
    Tensor::random(
        [BATCH, shape.tokens, width(shape)],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_norm::shapes;
    use crate::setup::{ConfigName, Setup};

    /// SD 1.5's feed-forwards: GEGLU on 2560 values per row at the 320-wide blocks (4096
    /// rows), 5120 at 640 and 10240 at 1280.
    #[test]
    fn sd15_names() {
        let setup = Setup::new(ConfigName::Sd15).unwrap();
        let names: Vec<_> = shapes(&setup).into_iter().map(name).collect();
        assert_eq!(
            names,
            [
                "geglu_t4096_d2560",
                "geglu_t1024_d5120",
                "geglu_t256_d10240",
                "geglu_t64_d10240"
            ]
        );
    }
}
