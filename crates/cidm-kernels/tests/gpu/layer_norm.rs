//! The fused layer norm on wgpu (on CI: Mesa's lavapipe, a Vulkan driver on the CPU) against
//! the plain norm of `cidm-diffusion` on the Flex CPU backend, whose ops are checked against
//! diffusers and transformers by the core's golden tests: the output and the gradients of x,
//! gamma and beta. Row widths: SD 1.5's transformer widths 320 and 1280 and CLIP's 768 (cubes
//! of 128 and 256 units), narrow widths (1, 3, 40 in one warp of 32), 127 and 129 (32 and 64
//! units) and one far wider than a cube (3000);
//! row counts that leave the last range of the weights' partial sums short, and over 65535
//! rows (a grid spread over two dimensions); inputs with a mean of 1000; f16. Both sides
//! compute in f32 and sum in different orders, so they agree to rounding: 1e-4 relative to
//! the largest reference value.
use crate::common::{assert_close, assert_norm_close, Gpu, GpuPlain, NormInputs, TOL_F32};

use burn::backend::wgpu::WgpuDevice;
use burn::backend::Flex;
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use cidm_diffusion::nn::LayerNorm;
use cidm_kernels::{fused_layer_norm, layer_norm_dispatch_counts, LayerNormUnfused};

const EPS: f64 = 1e-5;

/// Inputs of x `shape`, normalised over its last dimension.
fn inputs<const D: usize>(shape: [usize; D], offset: f32) -> NormInputs<D> {
    NormInputs::new(shape, shape[D - 1], 7, offset)
}

/// `cidm_diffusion::nn::LayerNorm` with these weights, on x viewed as one batch of rows.
fn core_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let dim = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let norm = LayerNorm {
        weight: Param::from_tensor(gamma),
        bias: Param::from_tensor(beta),
        eps: EPS,
    };
    norm.forward(x.reshape([1, rows, dim])).reshape(dims)
}

/// The reference: the core's plain layer norm on Flex, f32.
fn reference<const D: usize>(inputs: &NormInputs<D>) -> [Vec<f32>; 4] {
    inputs.run::<Flex>(&Default::default(), DType::F32, core_norm)
}

/// The fused kernels, which must take x.
fn fused<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
) -> Tensor<B, D> {
    fused_layer_norm(&x, &gamma, &beta, EPS)
        .unwrap_or_else(|reason| panic!("the fused kernels did not run: {reason}"))
}

/// The fused kernels on `B` (which must take them) against the reference.
fn check<B: Backend, const D: usize>(inputs: &NormInputs<D>, device: &B::Device) {
    let got = inputs.run::<B>(device, DType::F32, fused);
    let what = format!("x {:?}", inputs.shape);
    assert_norm_close(&what, &got, &reference(inputs), TOL_F32);
}

/// Output and all three gradients through `Autodiff<Wgpu>` (the fused forward and backward
/// kernels under burn-fusion). A row of one value has variance 0 and normalises to 0 (only
/// the shift is left, and x gets no gradient); 4 x 33 = 132 rows make ranges of 32, 32, 32,
/// 32 and 4 rows in the weights' partial sums.
#[test]
fn forward_and_gradients_match_the_plain_norm() {
    let device = WgpuDevice::default();
    for shape in [
        [2, 64, 320],
        [2, 16, 1280],
        [1, 77, 768],
        [3, 5, 1],
        [2, 3, 3],
        [2, 3, 127],
        [1, 4, 129],
        [2, 2, 3000],
        [4, 33, 40],
    ] {
        check::<Gpu, 3>(&inputs(shape, 0.0), &device);
    }
}

/// Other ranks: a single row, a rank-2 batch of rows, and rank 4 (all but the last
/// dimension are rows).
#[test]
fn other_ranks_match_the_plain_norm() {
    let device = WgpuDevice::default();
    check::<Gpu, 1>(&inputs([320], 0.0), &device);
    check::<Gpu, 2>(&inputs([77, 64], 0.0), &device);
    check::<Gpu, 4>(&inputs([2, 3, 5, 40], 0.0), &device);
}

/// 70000 rows, more than one grid dimension holds (65535): the row kernels' grid is spread
/// over two dimensions with a few idle cubes, and the weights' partial sums use 1000 ranges
/// of 70 rows.
#[test]
fn more_rows_than_a_grid_dimension() {
    check::<Gpu, 2>(&inputs([70_000, 5], 0.0), &WgpuDevice::default());
}

/// Rows of mean 1000 and spread 2, against the norm in f64 on the host from the same f32
/// inputs: the kernel's two passes (the mean, then the squared deviations from it) keep the
/// variance's digits, as the plain norm's do.
#[test]
fn a_large_mean_keeps_the_variance() {
    let device = WgpuDevice::default();
    let inputs = inputs([2, 16, 320], 1000.0);
    let got = inputs.run::<Gpu>(&device, DType::F32, |x, gamma, beta| {
        fused_layer_norm(&x, &gamma, &beta, EPS).expect("fused on Wgpu")
    });
    let dim = inputs.gamma.len();
    let mut want = Vec::with_capacity(inputs.x.len());
    for row in inputs.x.chunks(dim) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        for (d, &v) in row.iter().enumerate() {
            let xhat = (v as f64 - mean) / (var + EPS).sqrt();
            want.push((xhat * inputs.gamma[d] as f64 + inputs.beta[d] as f64) as f32);
        }
    }
    assert_close("output at mean 1000", &got[0], &want, TOL_F32);
}

/// Frozen weights (every norm of a LoRA-trained UNet): the backward skips their gradients'
/// kernels and must still give x its gradient, on both dispatch paths (each registers its
/// own backward operation).
#[test]
fn frozen_weights_still_give_x_its_gradient() {
    let device = WgpuDevice::default();
    for shape in [[2, 64, 320], [4, 33, 40]] {
        let inputs = inputs(shape, 0.0);
        let want = reference(&inputs);
        let on_fusion = inputs.run_frozen::<Gpu>(&device, fused);
        let on_cube = inputs.run_frozen::<GpuPlain>(&device, fused);
        for (path, got) in [("fusion", on_fusion), ("plain cube", on_cube)] {
            let what = format!("x {shape:?}, frozen weights, {path}");
            assert_close(&format!("output {what}"), &got[0], &want[0], TOL_F32);
            assert_close(&format!("dx {what}"), &got[1], &want[1], TOL_F32);
        }
    }
}

/// burn-cubecl's backend without fusion takes the kernels directly (another dispatch path).
#[test]
fn plain_cube_backend_matches_the_plain_norm() {
    check::<GpuPlain, 3>(&inputs([2, 64, 320], 0.0), &WgpuDevice::default());
}

/// Without autodiff (inference, as in sampling) on both dispatch paths: the forward alone.
#[test]
fn inference_matches_the_plain_norm() {
    let device = WgpuDevice::default();
    let inputs = inputs([2, 256, 640], 0.0);
    let want = &reference(&inputs)[0];
    let got = inputs.infer::<Gpu>(&device, |x, gamma, beta| {
        fused_layer_norm(&x, &gamma, &beta, EPS).expect("fused on Wgpu")
    });
    assert_close("inference under fusion", &got, want, TOL_F32);
    let got = inputs.infer::<GpuPlain>(&device, |x, gamma, beta| {
        fused_layer_norm(&x, &gamma, &beta, EPS).expect("fused without fusion")
    });
    assert_close("inference without fusion", &got, want, TOL_F32);
}

/// f16 at SD 1.5's widest transformer rows (1280 values), with a mean of 8 so that a sum of
/// squares in f16 would overflow 65504: where the adapter supports f16 shaders the kernels
/// run, with f32 statistics, and the output and gradients, rounded to f16, agree with the f32
/// reference on the same f16-rounded inputs to 1e-2; where it does not, the call comes back
/// with the device reason. The test prints which of the two it checked.
#[test]
fn half_precision_at_sd15_width() {
    let device = WgpuDevice::default();
    let mut inputs = inputs([2, 64, 1280], 8.0);
    inputs.round_to_f16();
    let probe = Tensor::<Gpu, 1>::ones([1280], &device).cast(DType::F16);
    let x = Tensor::<Gpu, 2>::zeros([1, 1280], &device).cast(DType::F16);
    match fused_layer_norm(&x, &probe, &probe, EPS) {
        Err(reason) => {
            assert_eq!(reason, LayerNormUnfused::Device { dtype: DType::F16 });
            eprintln!("f16 NOT TESTED on this adapter: it has no f16 shader support ({reason})");
        }
        Ok(_) => {
            let got = inputs.run::<Gpu>(&device, DType::F16, |x, gamma, beta| {
                let out = fused_layer_norm(&x, &gamma, &beta, EPS).expect("fused f16");
                assert_eq!(out.dtype(), DType::F16);
                out
            });
            assert_norm_close("f16", &got, &reference(&inputs), 1e-2);
            eprintln!("f16 tested: the adapter supports f16 shaders");
        }
    }
}

/// The core's `LayerNorm` takes the fused kernel on wgpu (the dispatch counter grows by one
/// per norm) and agrees with itself on Flex, where it runs its plain ops.
#[test]
fn the_core_norm_runs_the_kernels() {
    let device = WgpuDevice::default();
    let inputs = inputs([2, 77, 64], 0.0);
    let before = layer_norm_dispatch_counts().fused;
    let got = inputs.run::<Gpu>(&device, DType::F32, core_norm);
    assert!(
        layer_norm_dispatch_counts().fused > before,
        "LayerNorm on wgpu did not take the fused kernels"
    );
    assert_norm_close("core", &got, &reference(&inputs), TOL_F32);
}

/// What the kernels do not take is refused with its reason while the caller keeps its
/// inputs: a CPU backend, weights of another dtype than x, weights of the wrong length, an
/// empty tensor, a negative epsilon.
#[test]
fn unsupported_inputs_are_refused() {
    let cpu = Default::default();
    let x = Tensor::<Flex, 2>::ones([3, 4], &cpu);
    let w = Tensor::<Flex, 1>::ones([4], &cpu);
    assert_eq!(
        fused_layer_norm(&x, &w, &w, EPS).err(),
        Some(LayerNormUnfused::Backend)
    );

    let device = WgpuDevice::default();
    let x = Tensor::<Gpu, 2>::ones([3, 4], &device);
    let w = Tensor::<Gpu, 1>::ones([4], &device);
    let w16 = w.clone().cast(DType::F16);
    assert_eq!(
        fused_layer_norm(&x, &w, &w16, EPS).err(),
        Some(LayerNormUnfused::DType {
            x: DType::F32,
            gamma: DType::F32,
            beta: DType::F16
        })
    );
    let short = Tensor::<Gpu, 1>::ones([3], &device);
    assert_eq!(
        fused_layer_norm(&x, &short, &w, EPS).err(),
        Some(LayerNormUnfused::Shape {
            rows: 3,
            dim: 4,
            gamma: 3,
            beta: 4
        })
    );
    let empty = Tensor::<Gpu, 2>::ones([0, 4], &device);
    assert!(matches!(
        fused_layer_norm(&empty, &w, &w, EPS).err(),
        Some(LayerNormUnfused::Shape { rows: 0, .. })
    ));
    assert!(matches!(
        fused_layer_norm(&x, &w, &w, -1.0).err(),
        Some(LayerNormUnfused::Epsilon { .. })
    ));
    assert_eq!(
        crate::common::to_vec(x),
        vec![1.0; 12],
        "x stays the caller's"
    );
}
