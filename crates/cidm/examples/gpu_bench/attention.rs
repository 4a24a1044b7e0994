//! Attention alone, at the shapes of the UNet's attention layers: the fused kernel of
//! `cidm-kernels` against the plain path (burn's attention, what runs without the kernel),
//! forward on the inference backend and forward plus backward on the training backend. Before
//! it is timed, every fused result (output, and for training the gradients of q, k and v) is
//! checked against the plain one on the same device, so the GPU run tests the kernel too.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::nn::attention_upcast;
use cidm::diffusion::unet::PerBlock;
use cidm::kernels::{fused_attention, set_fused_attention};

use crate::error::{BenchError, Result};
use crate::setup::{sync, Setup, TOKENS};
use crate::timing::{measure, Timing};
use crate::workloads::Reps;

/// Batch of every shape: the two halves of a guided step.
const BATCH: usize = 2;
/// Largest `max |fused - plain| / max |plain|` accepted in f32: both sum in f32, in
/// different orders (and the plain matmuls may use TF32 tensor cores on a GPU).
const TOL_F32: f64 = 5e-3;
/// The same in f16/bf16, where both round their results to 11 (8) significant bits.
const TOL_HALF: f64 = 2e-2;

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

/// Whether this build has the fused kernels (the `wgpu` or `cuda` feature); without them
/// only the plain path is timed.
const FUSED_BUILD: bool = cfg!(any(feature = "wgpu", feature = "cuda"));

/// The two records of one shape and pass: the fused kernel (with its check) and the plain
/// path.
pub struct Comparison {
    /// The fused kernel's timing and its largest relative deviation from the plain path;
    /// `None` in a build without the kernels.
    pub fused: Option<Result<(Timing, f64)>>,
    /// The plain path's timing.
    pub plain: Result<Timing>,
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

/// Checks that the fused kernel takes these inputs (the reason when not), compares its
/// results with the plain path's, and times both.
fn compare<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    run: impl Fn(bool) -> Result<Vec<Tensor<B, 4>>>,
    time: impl Fn(bool) -> Result<Timing>,
) -> Comparison {
    let fused = FUSED_BUILD.then(|| {
        let check = forced(true, || {
            fused_attention(q.clone(), k.clone(), v.clone(), options())
        });
        if let Err(unfused) = check {
            return Err(BenchError::Unfused(unfused.reason.to_string()));
        }
        let deviation = max_deviation(run(true)?, run(false)?)?;
        let tolerance = if q.dtype().size() < 4 {
            TOL_HALF
        } else {
            TOL_F32
        };
        if deviation.is_nan() || deviation > tolerance {
            return Err(BenchError::Mismatch {
                deviation,
                tolerance,
            });
        }
        Ok((time(true)?, deviation))
    });
    Comparison {
        fused,
        plain: time(false),
    }
}

/// The model's attention (`attention_upcast`) with the kernel forced on (`fused`) or off.
fn attend<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    fused: bool,
) -> Tensor<B, 4> {
    forced(fused, || {
        attention_upcast(q.clone(), k.clone(), v.clone(), options())
    })
}

/// Runs `work` with the kernel switch forced to `fused`, then hands the switch back to
/// `CIDM_FUSED_ATTENTION`: the records compare both paths whatever the variable says, so a
/// whole run under `CIDM_FUSED_ATTENTION=0` (timing the UNet steps without the kernel) still
/// checks and times the kernel here.
fn forced<T>(fused: bool, work: impl FnOnce() -> T) -> T {
    set_fused_attention(Some(fused));
    let result = work();
    set_fused_attention(None);
    result
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

/// The largest `max |a - b| / max |b|` over pairs of tensors (NaN if any value is not
/// finite).
fn max_deviation<B: Backend>(fused: Vec<Tensor<B, 4>>, plain: Vec<Tensor<B, 4>>) -> Result<f64> {
    let mut worst = 0.0f64;
    for (a, b) in fused.into_iter().zip(plain) {
        let (a, b) = (host(a)?, host(b)?);
        // Checked first: `f64::max` would drop a NaN.
        if a.iter().chain(&b).any(|x| !x.is_finite()) {
            return Ok(f64::NAN);
        }
        let scale = b.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
        let diff = a.iter().zip(&b).fold(0.0f64, |m, (&x, &y)| {
            m.max((f64::from(x) - f64::from(y)).abs())
        });
        worst = worst.max(diff / scale.max(f64::MIN_POSITIVE));
    }
    Ok(worst)
}

fn host<B: Backend>(tensor: Tensor<B, 4>) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| BenchError::ReadBack(format!("{e:?}")))
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

    /// Identical results deviate by 0; one value off by 1% of the largest deviates by 0.01;
    /// a NaN anywhere (here not the last value) is reported as NaN, not hidden by `max`.
    #[test]
    fn deviation() {
        let device = Default::default();
        let t = |v: [f32; 4]| Tensor::<Selected, 1>::from_floats(v, &device).reshape([1, 1, 2, 2]);
        let base = t([1.0, -2.0, 0.5, 0.0]);
        assert_eq!(
            max_deviation(vec![base.clone()], vec![base.clone()]).unwrap(),
            0.0
        );
        let off = t([1.0, -2.0, 0.52, 0.0]);
        let d = max_deviation(vec![off], vec![base.clone()]).unwrap();
        assert!((d - 0.01).abs() < 1e-6, "{d}");
        let nan = t([1.0, f32::NAN, 0.5, 0.0]);
        assert!(max_deviation(vec![nan], vec![base]).unwrap().is_nan());
    }
}
