//! GroupNorm plus SiLU alone, at the shapes of the UNet's ResNet blocks: the fused kernels of
//! `cidm-kernels` against the plain path (`cidm-diffusion`'s norm with the kernels switched
//! off), forward on the inference backend and forward plus backward on the training backend.
//! Before it is timed, every fused result (output, and for training the gradients of x, the
//! scale and the shift) is checked against the plain one on the same device (`check.rs`).

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::GroupNorm;
use cidm::kernels::{fused_group_norm, set_fused_group_norm, GroupNormOptions};

use crate::check::{forced, Comparison};
use crate::error::{BenchError, Result};
use crate::setup::{sync, Setup};
use crate::timing::{measure, Timing};
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;

/// One norm shape of the UNet (batch [`BATCH`], square feature maps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormShape {
    /// Channels of the feature map.
    pub channels: usize,
    /// Side of the feature map.
    pub side: usize,
    /// Groups (the config's `norm_num_groups`).
    pub groups: usize,
    /// Added to the variance (the config's `norm_eps`).
    pub epsilon: f64,
}

impl NormShape {
    /// `gn_c320_64x64`: the record name, as the reference prints it too.
    pub fn name(&self) -> String {
        format!("gn_c{}_{}x{}", self.channels, self.side, self.side)
    }
}

/// Distinct norm shapes of `setup`'s UNet's ResNet blocks: each down block's output channels
/// at its resolution, and the widest norm of all, the first ResNet of the last up block
/// (the second block's channels concatenated with the first's skip, at full resolution).
/// SD 1.5: 320 at 64x64, 640 at 32x32, 1280 at 16x16 and 8x8, 960 at 64x64.
pub fn shapes(setup: &Setup) -> Vec<NormShape> {
    let config = &setup.unet;
    let channels = &config.block_out_channels;
    let shape = |channels: usize, side: usize| NormShape {
        channels,
        side,
        groups: config.norm_num_groups,
        epsilon: config.norm_eps,
    };
    let mut all: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(block, &c)| shape(c, setup.latent >> block))
        .collect();
    if let [first, second, ..] = channels[..] {
        all.push(shape(first + second, setup.latent));
    }
    let mut shapes = Vec::new();
    for shape in all {
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    shapes
}

/// The norm with SiLU on the inference backend.
pub fn forward(shape: NormShape, reps: Reps) -> Comparison {
    let device = backend::device();
    let (x, norm) = inputs::<Selected>(shape, &device);
    let run = |fused: bool| Ok(vec![normalize(&norm, &x, fused).flatten(0, 3)]);
    let time = |fused: bool| {
        measure(reps.warmup, reps.reps, || {
            run(fused)?;
            sync::<Selected>(&device)
        })
    };
    compare(&norm, &x, run, time)
}

/// Forward plus backward on the training backend: the gradients of x, the scale and the
/// shift of `sum(out * w)` with a random `w`, so every gradient is non-trivial.
pub fn forward_backward(shape: NormShape, reps: Reps) -> Comparison {
    let device = backend::device();
    let (x, norm) = inputs::<Training>(shape, &device);
    let x = x.require_grad();
    let weight = Tensor::<Training, 4>::random(x.shape(), Distribution::Normal(0.0, 1.0), &device);
    let run = |fused: bool| {
        let out = normalize(&norm, &x, fused);
        let grads = (out.clone() * weight.clone()).sum().backward();
        let grad = |t: Tensor<Training, 1>| {
            t.grad(&grads)
                .map(Tensor::<Training, 1>::from_inner)
                .ok_or(BenchError::NoGradient)
        };
        let dx = x
            .grad(&grads)
            .map(|g| Tensor::<Training, 4>::from_inner(g).flatten(0, 3))
            .ok_or(BenchError::NoGradient)?;
        Ok(vec![
            out.flatten(0, 3),
            dx,
            grad(norm.gamma.val())?,
            grad(norm.beta.val())?,
        ])
    };
    let time = |fused: bool| {
        measure(reps.warmup, reps.reps, || {
            run(fused)?;
            sync::<Training>(&device)
        })
    };
    compare(&norm, &x, run, time)
}

/// The fused kernels' refusal of these inputs, checked with them switched on, then the
/// comparison of both paths.
fn compare<B: Backend>(
    norm: &GroupNorm<B>,
    x: &Tensor<B, 4>,
    run: impl Fn(bool) -> Result<Vec<Tensor<B, 1>>>,
    time: impl Fn(bool) -> Result<Timing>,
) -> Comparison {
    let refusal = || {
        let options = GroupNormOptions {
            groups: norm.num_groups,
            epsilon: norm.epsilon,
            silu: true,
        };
        forced(set_fused_group_norm, true, || {
            fused_group_norm(x, &norm.gamma.val(), &norm.beta.val(), options)
        })
        .err()
        .map(|unfused| unfused.to_string())
    };
    Comparison::new(refusal, x.dtype().size() < 4, run, time)
}

/// The model's norm and SiLU (`GroupNorm::forward_silu`) with the kernels forced on
/// (`fused`) or off.
fn normalize<B: Backend>(norm: &GroupNorm<B>, x: &Tensor<B, 4>, fused: bool) -> Tensor<B, 4> {
    forced(set_fused_group_norm, fused, || norm.forward_silu(x.clone()))
}

/// Standard-normal x, and a norm whose scale is drawn around 1 and shift around 0 (as
/// trained weights are), so neither the affine step nor its gradients are trivial.
fn inputs<B: Backend>(shape: NormShape, device: &B::Device) -> (Tensor<B, 4>, GroupNorm<B>) {
    let x = Tensor::random(
        [BATCH, shape.channels, shape.side, shape.side],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let weight = |mean| {
        let values = Tensor::random([shape.channels], Distribution::Normal(mean, 0.5), device);
        Param::from_tensor(values)
    };
    let norm = GroupNorm {
        gamma: weight(1.0),
        beta: weight(0.0),
        num_groups: shape.groups,
        epsilon: shape.epsilon,
    };
    (x, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::ConfigName;

    /// SD 1.5's ResNet norms: 32 groups, epsilon 1e-5, the four block widths at their
    /// resolutions and the 960 channels of the last up block's first ResNet at 64x64.
    #[test]
    fn sd15_shapes() {
        let setup = Setup::new(ConfigName::Sd15).unwrap();
        let got: Vec<_> = shapes(&setup)
            .iter()
            .map(|s| (s.channels, s.side, s.groups, s.epsilon))
            .collect();
        assert_eq!(
            got,
            [
                (320, 64, 32, 1e-5),
                (640, 32, 32, 1e-5),
                (1280, 16, 32, 1e-5),
                (1280, 8, 32, 1e-5),
                (960, 64, 32, 1e-5),
            ]
        );
        assert_eq!(shapes(&setup)[0].name(), "gn_c320_64x64");
    }
}
