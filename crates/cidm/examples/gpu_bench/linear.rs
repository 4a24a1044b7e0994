//! The transformer blocks' linear layers alone, at each transformer input of the UNet (the
//! layer norm's shapes, `layer_norm::shapes`): the attention's projections (the block's width
//! in and out), the feed-forward's projection (out: `2 x 4` times the width, GEGLU's two
//! halves) and its output (in: 4 times the width). The CPU linear layer of `cidm-kernels`
//! against burn's product and bias add (`cidm-diffusion`'s `nn::linear_forward` with it
//! switched off), timed and checked as `fused_op.rs` describes. The weight is frozen, as in
//! LoRA training: the training record checks x's gradient. Only Flex has the CPU linear
//! layer, so the records run on Flex alone (a GPU build keeps burn-cubecl's matmul, which
//! the UNet steps time).

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::linear_forward;
use cidm::kernels::{fused_linear, set_fused_linear};

use crate::check::{forced, Comparison};
use crate::error::Result;
use crate::fused_op::{self, BenchOp};
use crate::layer_norm::RowShape;
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;
/// The feed-forward's hidden width over the block's (diffusers' `mult`, 4).
const FF_MULT: usize = 4;

/// One linear layer: `[BATCH, tokens, d_in]` in, `[BATCH, tokens, d_out]` out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    /// Rows per sample.
    pub tokens: usize,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

impl LinearShape {
    /// `linear_t4096_i320_o320`: the record name, as the reference prints it too.
    pub fn name(&self) -> String {
        format!("linear_t{}_i{}_o{}", self.tokens, self.d_in, self.d_out)
    }
}

/// The three distinct linear layers of each transformer input: the attention's projection,
/// the feed-forward's projection and its output.
pub fn shapes(inputs: &[RowShape]) -> Vec<LinearShape> {
    let mut shapes = Vec::new();
    for &RowShape { tokens, dim } in inputs {
        for (d_in, d_out) in [(dim, dim), (dim, 2 * FF_MULT * dim), (FF_MULT * dim, dim)] {
            let shape = LinearShape {
                tokens,
                d_in,
                d_out,
            };
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    shapes
}

/// The layer on the inference backend.
pub fn forward(shape: LinearShape, reps: Reps) -> Comparison {
    let (x, layer) = inputs::<Selected>(shape, &backend::device());
    fused_op::forward(x, Layer(layer), reps)
}

/// Forward plus backward on the training backend.
pub fn forward_backward(shape: LinearShape, reps: Reps) -> Comparison {
    let (x, layer) = inputs::<Training>(shape, &backend::device());
    fused_op::forward_backward(x, Layer(layer), reps)
}

/// The model's linear layer (`nn::linear_forward`).
struct Layer<B: Backend>(Linear<B>);

impl<B: Backend> BenchOp<B, 3> for Layer<B> {
    fn apply(&self, x: &Tensor<B, 3>, fused: bool) -> Result<Tensor<B, 3>> {
        Ok(forced(set_fused_linear, fused, || {
            linear_forward(&self.0, x.clone())
        }))
    }

    fn params(&self) -> Vec<Tensor<B, 1>> {
        Vec::new()
    }

    fn output_dims(&self, [batch, tokens, _]: [usize; 3]) -> [usize; 3] {
        [batch, tokens, self.0.weight.dims()[1]]
    }

    fn refusal(&self, x: &Tensor<B, 3>) -> Option<String> {
        let x = x.clone().flatten::<2>(0, 1);
        let bias = self.0.bias.as_ref().map(|bias| bias.val());
        forced(set_fused_linear, true, || {
            fused_linear(&x, &self.0.weight.val(), bias.as_ref())
        })
        .err()
        .map(|unfused| unfused.to_string())
    }
}

/// Standard-normal x and a frozen layer with weights of the variance a trained layer keeps
/// its outputs at (`1 / d_in`) and a random bias.
fn inputs<B: Backend>(shape: LinearShape, device: &B::Device) -> (Tensor<B, 3>, Linear<B>) {
    let LinearShape {
        tokens,
        d_in,
        d_out,
    } = shape;
    let x = Tensor::random(
        [BATCH, tokens, d_in],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let std = (1.0 / d_in as f64).sqrt();
    let weight = Tensor::random([d_in, d_out], Distribution::Normal(0.0, std), device);
    let bias = Tensor::random([d_out], Distribution::Normal(0.0, 0.1), device);
    let layer = Linear {
        weight: Param::from_tensor(weight).set_require_grad(false),
        bias: Some(Param::from_tensor(bias).set_require_grad(false)),
    };
    (x, layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_norm;
    use crate::setup::{ConfigName, Setup};

    /// SD 1.5's first transformer input (4096 rows of 320): its attention projection 320 to
    /// 320, feed-forward projection 320 to 2560 and output 1280 to 320; twelve layers over
    /// the four inputs.
    #[test]
    fn sd15_names() {
        let setup = Setup::new(ConfigName::Sd15).unwrap();
        let shapes = shapes(&layer_norm::shapes(&setup));
        let names: Vec<_> = shapes.iter().map(LinearShape::name).collect();
        assert_eq!(
            names[..3],
            [
                "linear_t4096_i320_o320",
                "linear_t4096_i320_o2560",
                "linear_t4096_i1280_o320"
            ]
        );
        assert_eq!(names.len(), 12);
    }
}
