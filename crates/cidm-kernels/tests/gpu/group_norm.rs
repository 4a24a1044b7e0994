//! The fused group norm (and group norm + SiLU) on wgpu (on CI: Mesa's lavapipe, a Vulkan
//! driver on the CPU) against the plain norm of `cidm-diffusion` on the Flex CPU backend,
//! whose ops are checked against diffusers by the core's golden tests: the output and the
//! gradients of x, gamma and beta. Shapes: Stable Diffusion's 32 groups at 64 and 320
//! channels (2 and 10 channels per group), odd sizes that fill no cube evenly, one group,
//! one channel per group, a rank-3 and a rank-2 input (one value per channel), and inputs
//! with a mean of 1000 (the variance must not lose its digits); x channels last, as a
//! convolution leaves it, and the output written channels last. Both sides compute in f32
//! and sum in different orders, so they agree to rounding: 1e-4 relative to the largest
//! reference value.
use crate::common::{assert_close, assert_norm_close, to_vec, Gpu, GpuPlain, NormInputs, TOL_F32};

use std::any::Any;

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use cidm_diffusion::nn::GroupNorm;
use cidm_kernels::{
    fused_group_norm, group_norm_dispatch_counts, GroupNormOptions, GroupNormUnfused,
};

const EPS: f64 = 1e-5;

/// One case: the inputs, and the norm's groups and activation.
struct Case<const D: usize> {
    inputs: NormInputs<D>,
    groups: usize,
    silu: bool,
}

impl<const D: usize> Case<D> {
    fn new(shape: [usize; D], groups: usize, silu: bool, offset: f32) -> Self {
        Self {
            inputs: NormInputs::new(shape, shape[1], groups as u64, offset),
            groups,
            silu,
        }
    }

    fn name(&self) -> String {
        format!(
            "x {:?} groups {} silu {}",
            self.inputs.shape, self.groups, self.silu
        )
    }

    /// The reference: the core's plain group norm on Flex, f32.
    fn reference(&self) -> [Vec<f32>; 4] {
        self.inputs
            .run::<Flex>(&Default::default(), DType::F32, |x, gamma, beta| {
                core_norm(x, gamma, beta, self.groups, self.silu)
            })
    }

    fn options(&self) -> GroupNormOptions {
        GroupNormOptions {
            groups: self.groups,
            epsilon: EPS,
            silu: self.silu,
        }
    }

    /// The fused kernels (which must take the case) on x, made channels last first when
    /// `x_last`.
    fn fused<B: Backend, const R: usize>(
        &self,
        x: Tensor<B, R>,
        gamma: Tensor<B, 1>,
        beta: Tensor<B, 1>,
        x_last: bool,
    ) -> Tensor<B, R> {
        let x = if x_last { channels_last(x) } else { x };
        fused_group_norm(&x, &gamma, &beta, self.options())
            .unwrap_or_else(|reason| panic!("the fused kernels did not run: {reason}"))
    }

    /// The fused kernels on `B` (which must take them) against the reference.
    fn check<B: Backend>(&self, device: &B::Device) {
        self.check_laid_out::<B>(device, &self.reference(), false, false);
    }

    /// [`Case::check`] with x channels last when `x_last` (made so by [`channels_last`]) and
    /// the output's gradient channels last when `grad_last` (the output goes through
    /// [`channels_last`] before the loss); else both NCHW-contiguous (burn's elementwise ops,
    /// the loss's among them, write so).
    /// `want` is [`Case::reference`], computed once for all layouts.
    fn check_laid_out<B: Backend>(
        &self,
        device: &B::Device,
        want: &[Vec<f32>; 4],
        x_last: bool,
        grad_last: bool,
    ) {
        let got = self.inputs.run::<B>(device, DType::F32, |x, gamma, beta| {
            let out = self.fused(x, gamma, beta, x_last);
            if grad_last {
                channels_last(out)
            } else {
                out
            }
        });
        let what = format!(
            "{}, x channels last {x_last}, gradient channels last {grad_last}",
            self.name()
        );
        assert_norm_close(&what, &got, want, TOL_F32);
    }
}

/// `cidm_diffusion::nn::GroupNorm` with these weights, then SiLU when `silu`.
fn core_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    groups: usize,
    silu: bool,
) -> Tensor<B, D> {
    let norm = GroupNorm {
        gamma: Param::from_tensor(gamma),
        beta: Param::from_tensor(beta),
        num_groups: groups,
        epsilon: EPS,
    };
    if silu {
        norm.forward_silu(x)
    } else {
        norm.forward(x)
    }
}

/// Output and all three gradients through `Autodiff<Wgpu>` (the fused forward and backward
/// kernels under burn-fusion), with and without SiLU, for 4-D shapes, with x and the output's
/// gradient each NCHW-contiguous or channels last (a convolution's output), all read as they
/// are; `[2, 64, 48, 48]` in 8 groups has 18432 values per group, statistics in three chunks,
/// the last one short.
#[test]
fn forward_and_gradients_match_the_plain_norm() {
    let device = WgpuDevice::default();
    let shapes = [
        ([2, 64, 8, 8], 32),
        ([2, 320, 16, 16], 32),
        ([2, 64, 48, 48], 8),
        ([3, 12, 7, 9], 4),
        ([1, 5, 3, 11], 1),
        ([2, 6, 1, 300], 6),
    ];
    let layouts = [(false, false), (false, true), (true, false), (true, true)];
    for (shape, groups) in shapes {
        for silu in [false, true] {
            let case = Case::new(shape, groups, silu, 0.0);
            let want = case.reference();
            for (x_last, grad_last) in layouts {
                case.check_laid_out::<Gpu>(&device, &want, x_last, grad_last);
            }
        }
    }
}

/// Rank 3 (`[batch, channels, tokens]`) and rank 2 (one value per channel, so a group of
/// one channel has variance 0 and normalises to 0: only the shift is left).
#[test]
fn other_ranks_match_the_plain_norm() {
    let device = WgpuDevice::default();
    Case::new([2, 8, 77], 4, true, 0.0).check::<Gpu>(&device);
    Case::new([3, 8], 4, false, 0.0).check::<Gpu>(&device);
    Case::new([3, 8], 8, true, 0.0).check::<Gpu>(&device);
}

/// Values of mean 1000 and spread 2: `E[x^2] - E[x]^2` in f32 would keep about one digit of
/// the variance; the kernels sum values shifted by each group's first value. Checked against
/// the norm in f64 on the host, from the same f32 inputs: the plain f32 norm is itself off by
/// about 2e-4 here (its f32 mean of values near 1000), so it is no reference for this case.
/// Groups of 8 x 48 x 48 = 18432 values: three chunks of the statistics (8192, 8192, 2048),
/// whose sums share the group's shift.
#[test]
fn a_large_mean_keeps_the_variance() {
    let device = WgpuDevice::default();
    let case = Case::new([2, 32, 48, 48], 4, false, 1000.0);
    let inputs = &case.inputs;
    let got = inputs.run::<Gpu>(&device, DType::F32, |x, gamma, beta| {
        fused_group_norm(&x, &gamma, &beta, case.options()).expect("fused on Wgpu")
    });
    let [batch, channels, h, w] = inputs.shape;
    let per_group = channels / case.groups * h * w;
    let mut want = vec![0.0f32; inputs.x.len()];
    for (block, values) in inputs.x.chunks(per_group).enumerate() {
        let n = per_group as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        for (i, &v) in values.iter().enumerate() {
            let index = block * per_group + i;
            let c = (index / (h * w)) % channels;
            let xhat = (v as f64 - mean) / (var + EPS).sqrt();
            want[index] = (xhat * inputs.gamma[c] as f64 + inputs.beta[c] as f64) as f32;
        }
    }
    assert_eq!(want.len(), batch * channels * h * w);
    assert_close("output at mean 1000", &got[0], &want, TOL_F32);
}

/// x `[b, c, ...]` laid out channels last, as burn-cubecl's convolutions write their
/// outputs: permuted to `[b, ..., c]`, made dense in that order (a reshape of the permuted
/// view to `[b, positions, c]` copies it) and seen in x's axis order again. The values are
/// x's.
fn channels_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let mut order = [0; D];
    for (position, axis) in order.iter_mut().enumerate().skip(1) {
        *axis = if position + 1 == D { 1 } else { position + 1 };
    }
    let mut inverse = [0; D];
    for (position, &axis) in order.iter().enumerate() {
        inverse[axis] = position;
    }
    let positions = dims.iter().skip(2).product::<usize>();
    x.permute(order)
        .reshape([dims[0], positions, dims[1]])
        .reshape(order.map(|axis| dims[axis]))
        .permute(inverse)
}

/// The strides of a tensor of burn-cubecl's wgpu backend, plain or under autodiff.
fn strides<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Vec<usize> {
    let TensorPrimitive::Float(primitive) = x.clone().into_primitive() else {
        panic!("a float tensor");
    };
    let primitive: &dyn Any = &primitive;
    let tensor = primitive
        .downcast_ref::<FloatTensor<GpuPlain>>()
        .or_else(|| {
            primitive
                .downcast_ref::<FloatTensor<Autodiff<GpuPlain>>>()
                .map(|tensor| &tensor.primitive)
        })
        .expect("a tensor of the plain wgpu backend");
    tensor.meta.strides().to_vec()
}

/// The strides of a dense `[b, c, h, w]` tensor in channels-last order.
fn channels_last_strides([_, c, h, w]: [usize; 4]) -> Vec<usize> {
    vec![h * w * c, 1, w * c, c]
}

/// The kernels read x channels last as it is and write the output channels last whatever
/// x's layout, so that the next convolution takes it without a copy: strides checked on
/// burn-cubecl's backend without fusion (whose tensors show them), with and without
/// autodiff, for x in either layout; values as well.
#[test]
fn outputs_are_written_channels_last() {
    let device = WgpuDevice::default();
    let case = Case::new(LAYOUT_SHAPE, 32, true, 0.0);
    let want = case.reference();
    for x_last in [false, true] {
        let what = format!("x channels last {x_last}");
        let got = case.inputs.infer::<GpuPlain>(&device, |x, gamma, beta| {
            norm_with_strides(x, gamma, beta, case.options(), x_last, &what)
        });
        assert_close(&format!("inference, {what}"), &got, &want[0], TOL_F32);
        let got = case
            .inputs
            .run::<GpuPlain>(&device, DType::F32, |x, gamma, beta| {
                norm_with_strides(x, gamma, beta, case.options(), x_last, &what)
            });
        assert_norm_close(&format!("autodiff, {what}"), &got, &want, TOL_F32);
    }
}

/// The shape of [`outputs_are_written_channels_last`].
const LAYOUT_SHAPE: [usize; 4] = [2, 64, 8, 8];

/// The fused norm of x `[2, 64, 8, 8]` on the plain wgpu backend (with or without autodiff),
/// x made channels last first when `x_last`, asserting the strides of x and of the output.
fn norm_with_strides<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    options: GroupNormOptions,
    x_last: bool,
    what: &str,
) -> Tensor<B, 4> {
    let (x, x_strides) = if x_last {
        (channels_last(x), channels_last_strides(LAYOUT_SHAPE))
    } else {
        (x, vec![64 * 8 * 8, 8 * 8, 8, 1])
    };
    assert_eq!(strides(&x), x_strides, "x, {what}");
    let out = fused_group_norm(&x, &gamma, &beta, options).expect("fused");
    let out_strides = channels_last_strides(LAYOUT_SHAPE);
    assert_eq!(strides(&out), out_strides, "output, {what}");
    out
}

/// Frozen weights (every norm of a LoRA-trained UNet): the backward skips their gradients'
/// kernel and must still give x its gradient, on both dispatch paths (each registers its
/// own backward operation), with x NCHW-contiguous and channels last.
#[test]
fn frozen_weights_still_give_x_its_gradient() {
    let device = WgpuDevice::default();
    for (shape, groups) in [([2, 64, 8, 8], 32), ([3, 12, 7, 9], 4)] {
        let case = Case::new(shape, groups, true, 0.0);
        let want = case.reference();
        for x_last in [false, true] {
            let fused = (case.inputs)
                .run_frozen::<Gpu>(&device, |x, gamma, beta| case.fused(x, gamma, beta, x_last));
            let plain = case
                .inputs
                .run_frozen::<GpuPlain>(&device, |x, gamma, beta| {
                    case.fused(x, gamma, beta, x_last)
                });
            for (path, got) in [("fusion", fused), ("plain cube", plain)] {
                let what = format!(
                    "{}, frozen weights, x channels last {x_last}, {path}",
                    case.name()
                );
                assert_close(&format!("output {what}"), &got[0], &want[0], TOL_F32);
                assert_close(&format!("dx {what}"), &got[1], &want[1], TOL_F32);
            }
        }
    }
}

/// burn-cubecl's backend without fusion takes the kernels directly (another dispatch path).
#[test]
fn plain_cube_backend_matches_the_plain_norm() {
    Case::new([2, 64, 8, 8], 32, true, 0.0).check::<GpuPlain>(&WgpuDevice::default());
}

/// Without autodiff (inference, as in sampling) on both dispatch paths: the forward alone.
#[test]
fn inference_matches_the_plain_norm() {
    let device = WgpuDevice::default();
    let case = Case::new([2, 320, 8, 8], 32, true, 0.0);
    let want = &case.reference()[0];
    let got = case.inputs.infer::<Gpu>(&device, |x, gamma, beta| {
        fused_group_norm(&x, &gamma, &beta, case.options()).expect("fused on Wgpu")
    });
    assert_close("inference under fusion", &got, want, TOL_F32);
    let got = case.inputs.infer::<GpuPlain>(&device, |x, gamma, beta| {
        fused_group_norm(&x, &gamma, &beta, case.options()).expect("fused without fusion")
    });
    assert_close("inference without fusion", &got, want, TOL_F32);
}

/// f16 at the largest groups of Stable Diffusion 1.5 (its up blocks' 640-channel ResNets at
/// 64x64: 81920 values per group, whose sum of squares, about 1.3e5 here, overflows f16's
/// 65504): where the adapter supports f16 shaders the
/// kernels run, with f32 statistics, and the output and gradients, rounded to f16, agree with
/// the f32 reference on the same f16-rounded inputs to 1e-2; where it does not, the call comes
/// back with the device reason. The test prints which of the two it checked.
#[test]
fn half_precision_at_sd15_size() {
    let device = WgpuDevice::default();
    let mut case = Case::new([1, 640, 64, 64], 32, true, 0.5);
    case.inputs.round_to_f16();
    let probe = Tensor::<Gpu, 1>::ones([640], &device).cast(DType::F16);
    let x = Tensor::<Gpu, 4>::zeros([1, 640, 1, 1], &device).cast(DType::F16);
    match fused_group_norm(&x, &probe, &probe, case.options()) {
        Err(reason) => {
            assert_eq!(reason, GroupNormUnfused::Device { dtype: DType::F16 });
            eprintln!("f16 NOT TESTED on this adapter: it has no f16 shader support ({reason})");
        }
        Ok(_) => {
            let want = case.reference();
            let got = case
                .inputs
                .run::<Gpu>(&device, DType::F16, |x, gamma, beta| {
                    let out =
                        fused_group_norm(&x, &gamma, &beta, case.options()).expect("fused f16");
                    assert_eq!(out.dtype(), DType::F16);
                    out
                });
            assert_norm_close("f16", &got, &want, 1e-2);
            eprintln!("f16 tested: the adapter supports f16 shaders");
        }
    }
}

/// The core's `GroupNorm` takes the fused kernels on wgpu (the dispatch counter grows by one
/// per norm) and agrees with itself on Flex, where it runs its plain ops.
#[test]
fn the_core_norm_runs_the_kernels() {
    let device = WgpuDevice::default();
    let case = Case::new([2, 64, 8, 8], 32, true, 0.0);
    let before = group_norm_dispatch_counts().fused;
    let got = case
        .inputs
        .run::<Gpu>(&device, DType::F32, |x, gamma, beta| {
            core_norm(x, gamma, beta, 32, true)
        });
    assert!(
        group_norm_dispatch_counts().fused > before,
        "GroupNorm on wgpu did not take the fused kernels"
    );
    assert_norm_close("core", &got, &case.reference(), TOL_F32);
}

/// What the kernels do not take is refused with its reason while the caller keeps its
/// inputs: a CPU backend, weights of another dtype than x, groups that do not divide the
/// channels, weights of the wrong length.
#[test]
fn unsupported_inputs_are_refused() {
    let options = |groups| GroupNormOptions {
        groups,
        epsilon: EPS,
        silu: false,
    };
    let cpu = Default::default();
    let x = Tensor::<Flex, 4>::ones([1, 4, 2, 2], &cpu);
    let w = Tensor::<Flex, 1>::ones([4], &cpu);
    assert_eq!(
        fused_group_norm(&x, &w, &w, options(2)).err(),
        Some(GroupNormUnfused::Backend)
    );

    let device = WgpuDevice::default();
    let x = Tensor::<Gpu, 4>::ones([1, 4, 2, 2], &device);
    let w = Tensor::<Gpu, 1>::ones([4], &device);
    let w16 = w.clone().cast(DType::F16);
    assert_eq!(
        fused_group_norm(&x, &w16, &w, options(2)).err(),
        Some(GroupNormUnfused::DType {
            x: DType::F32,
            gamma: DType::F16,
            beta: DType::F32
        })
    );
    assert!(matches!(
        fused_group_norm(&x, &w, &w, options(3)).err(),
        Some(GroupNormUnfused::Shape { groups: 3, .. })
    ));
    let short = Tensor::<Gpu, 1>::ones([2], &device);
    assert!(matches!(
        fused_group_norm(&x, &short, &w, options(2)).err(),
        Some(GroupNormUnfused::Shape { gamma: 2, .. })
    ));
    assert_eq!(to_vec(x), vec![1.0; 16], "x stays the caller's");
}
