//! Attention alone, at the shapes of the UNet's attention layers: the fused kernel of
//! `cidm-kernels` against the plain path (burn's attention, what runs without the kernel),
//! forward on the inference backend and forward plus backward on the training backend. Before
//! it is timed, every fused result (output, and for training the gradients of q, k and v) is
//! checked against the plain one on the same device (`check.rs`).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::attention_upcast;
use cidm::diffusion::unet::PerBlock;
use cidm::kernels::{fused_attention, set_fused_attention};

use crate::check::{forced, Comparison};
use crate::error::{BenchError, Result};
use crate::setup::{sync, Setup, TOKENS};
use crate::timing::{measure, Timing};
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;

/// One attention shape of the UNet (batch [`BATCH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Attention heads.
    pub heads: usize,
    /// Query rows (the pixels of the layer's resolution).
    pub len_q: usize,
    /// Key rows: the pixels again for self-attention, the text tokens for cross-attention.
    pub len_k: usize,
    /// Head width.
    pub head_dim: usize,
}

impl AttentionShape {
    /// `attn_q4096_k77_d40`: the record name, as the reference prints it too.
    pub fn name(&self) -> String {
        format!("attn_q{}_k{}_d{}", self.len_q, self.len_k, self.head_dim)
    }
}

/// The distinct attention shapes of `setup`'s UNet: for every down block with
/// cross-attention and for the mid block, its self-attention and its cross-attention (the up
/// blocks repeat the down blocks' shapes). SD 1.5: 4096 pixels at head width 40, 1024 at 80,
/// 256 and 64 at 160, each against themselves and against the 77 text tokens.
pub fn shapes(setup: &Setup) -> Result<Vec<AttentionShape>> {
    let config = &setup.unet;
    let blocks = config.block_out_channels.len();
    let heads: &PerBlock<usize> = config
        .num_attention_heads
        .as_ref()
        .unwrap_or(&config.attention_head_dim);
    let heads = heads.expand(blocks, "attention_head_dim", Path::new("gpu_bench"))?;
    let level = |block: usize| {
        let side = setup.latent >> block;
        let channels = config.block_out_channels[block];
        (side * side, heads[block], channels / heads[block])
    };
    let mut levels: Vec<_> = config
        .down_block_types
        .iter()
        .enumerate()
        .filter(|(_, kind)| kind.starts_with("CrossAttn"))
        .map(|(block, _)| level(block))
        .collect();
    levels.push(level(blocks - 1));
    let mut shapes = Vec::new();
    for (pixels, heads, head_dim) in levels {
        for len_k in [pixels, TOKENS] {
            let shape = AttentionShape {
                heads,
                len_q: pixels,
                len_k,
                head_dim,
            };
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    Ok(shapes)
}

/// Forward attention on the inference backend.
pub fn forward(shape: AttentionShape, reps: Reps) -> Comparison {
    let device = backend::device();
    let [q, k, v] = inputs::<Selected>(shape, &device);
    let run = |fused: bool| Ok(vec![attend(&q, &k, &v, fused)]);
    let time = |fused: bool| {
        measure(reps.warmup, reps.reps, || {
            run(fused)?;
            sync::<Selected>(&device)
        })
    };
    compare(&q, &k, &v, run, time)
}

/// Forward plus backward on the training backend: the gradients of q, k and v of
/// `sum(out * w)` with a random `w`, so every gradient is non-trivial.
pub fn forward_backward(shape: AttentionShape, reps: Reps) -> Comparison {
    let device = backend::device();
    let [q, k, v] = inputs::<Training>(shape, &device);
    let [q, k, v] = [q, k, v].map(Tensor::require_grad);
    let weight = Tensor::<Training, 4>::random(
        [BATCH, shape.heads, shape.len_q, shape.head_dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let run = |fused: bool| {
        let out = attend(&q, &k, &v, fused);
        let grads = (out.clone() * weight.clone()).sum().backward();
        let grad = |t: &Tensor<Training, 4>| {
            t.grad(&grads)
                .map(Tensor::<Training, 4>::from_inner)
                .ok_or(BenchError::NoGradient)
        };
        Ok(vec![out, grad(&q)?, grad(&k)?, grad(&v)?])
    };
    let time = |fused: bool| {
        measure(reps.warmup, reps.reps, || {
            run(fused)?;
            sync::<Training>(&device)
        })
    };
    compare(&q, &k, &v, run, time)
}

/// The fused kernel's refusal of these inputs, checked with the kernel switched on, then
/// the comparison of both paths.
fn compare<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    run: impl Fn(bool) -> Result<Vec<Tensor<B, 4>>>,
    time: impl Fn(bool) -> Result<Timing>,
) -> Comparison {
    let refusal = || {
        forced(set_fused_attention, true, || {
            fused_attention(q.clone(), k.clone(), v.clone(), options())
        })
        .err()
        .map(|unfused| unfused.reason.to_string())
    };
    Comparison::new(refusal, q.dtype().size() < 4, run, time)
}

/// The model's attention (`attention_upcast`) with the kernel forced on (`fused`) or off.
fn attend<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    fused: bool,
) -> Tensor<B, 4> {
    forced(set_fused_attention, fused, || {
        attention_upcast(q.clone(), k.clone(), v.clone(), options())
    })
}

/// Standard-normal q, k and v of `shape`: with the default scale `1/sqrt(head_dim)` the
/// scores have unit variance, so the softmax is neither uniform nor one-hot.
fn inputs<B: Backend>(shape: AttentionShape, device: &B::Device) -> [Tensor<B, 4>; 3] {
    let random = |len: usize| {
        Tensor::random(
            [BATCH, shape.heads, len, shape.head_dim],
            Distribution::Normal(0.0, 1.0),
            device,
        )
    };
    [
        random(shape.len_q),
        random(shape.len_k),
        random(shape.len_k),
    ]
}

/// No mask, default scale, not causal: the UNet's attention.
fn options() -> AttentionModuleOptions {
    AttentionModuleOptions::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::ConfigName;

    /// SD 1.5's attention layers: head width 40, 80, 160 at 64x64, 32x32, 16x16 latents and
    /// 160 again in the 8x8 mid block, 8 heads each, against the pixels and the 77 tokens.
    #[test]
    fn sd15_shapes() {
        let setup = Setup::new(ConfigName::Sd15).unwrap();
        let got: Vec<_> = shapes(&setup)
            .unwrap()
            .iter()
            .map(|s| (s.heads, s.len_q, s.len_k, s.head_dim))
            .collect();
        assert_eq!(
            got,
            [
                (8, 4096, 4096, 40),
                (8, 4096, 77, 40),
                (8, 1024, 1024, 80),
                (8, 1024, 77, 80),
                (8, 256, 256, 160),
                (8, 256, 77, 160),
                (8, 64, 64, 160),
                (8, 64, 77, 160),
            ]
        );
        assert_eq!(shapes(&setup).unwrap()[1].name(), "attn_q4096_k77_d40");
    }
}
