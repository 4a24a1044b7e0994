//! The fused GEGLU on wgpu (on CI: Mesa's lavapipe, a Vulkan driver on the CPU) against the
//! plain ops of `cidm-diffusion`'s `nn::geglu` on the Flex CPU backend (`hidden * gelu(gate)`
//! from the two halves; Flex differentiates GELU exactly, as PyTorch does): the output and
//! x's gradient. Widths: SD 1.5's feed-forward (2 x 1280 at
//! width 320), odd halves, a half of one value; values spread over [-4, 4) so that GELU's
//! curved part and both tails are covered. Both sides compute in f32; they agree to 1e-5
//! relative to the largest reference value (erf is a polynomial approximation on the GPU
//! side, within 1.5e-7).
use crate::common::{assert_close, to_vec, values, Gpu, GpuPlain};

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use cidm_diffusion::loading::{SafetensorsWeights, VarBuilder};
use cidm_diffusion::nn::geglu;
use cidm_diffusion::unet::FeedForward;
use cidm_kernels::{fused_geglu, geglu_dispatch_counts, GegluUnfused};
use safetensors::tensor::TensorView;

/// Both sides compute in f32 from the same inputs; the GPU's erf is a polynomial within
/// 1.5e-7 of the true one.
const TOL: f32 = 1e-5;

/// x of `shape` with values in [-4, 4), and the weights `w` of the loss `sum(out * w)`.
struct Inputs<const D: usize> {
    shape: [usize; D],
    x: Vec<f32>,
    w: Vec<f32>,
}

impl<const D: usize> Inputs<D> {
    fn new(shape: [usize; D]) -> Self {
        let len = shape.iter().product();
        let seed = shape.iter().fold(11, |s, &d| s * 31 + d as u64);
        let mut out = shape;
        out[D - 1] /= 2;
        Self {
            shape,
            x: values(seed, len).iter().map(|v| 2.0 * v).collect(),
            w: values(seed + 1, out.iter().product()),
        }
    }

    /// The output's shape: half the last dimension.
    fn out_shape(&self) -> [usize; D] {
        let mut out = self.shape;
        out[D - 1] /= 2;
        out
    }

    /// Output and x's gradient through `geglu` on `Autodiff<B>`, x cast to `dtype`.
    fn run<B: Backend>(
        &self,
        device: &B::Device,
        dtype: DType,
        geglu: impl FnOnce(Tensor<Autodiff<B>, D>) -> Tensor<Autodiff<B>, D>,
    ) -> [Vec<f32>; 2] {
        let tensor = |data: &[f32], shape| {
            Tensor::<Autodiff<B>, D>::from_data(TensorData::new(data.to_vec(), shape), device)
                .cast(dtype)
        };
        let x = tensor(&self.x, self.shape).require_grad();
        let out = geglu(x.clone());
        let grads = (out.clone() * tensor(&self.w, self.out_shape()))
            .cast(DType::F32)
            .sum()
            .backward();
        [to_vec(out), to_vec(x.grad(&grads).expect("gradient of x"))]
    }

    /// The reference: the plain ops on Flex, f32.
    fn reference(&self) -> [Vec<f32>; 2] {
        self.run::<Flex>(&Default::default(), DType::F32, |x| {
            geglu(x).expect("an even width")
        })
    }

    /// The fused kernels on `B` (which must take them) against the reference.
    fn check<B: Backend>(&self, device: &B::Device) {
        let got = self.run::<B>(device, DType::F32, |x| {
            fused_geglu(&x)
                .unwrap_or_else(|reason| panic!("the fused kernels did not run: {reason}"))
        });
        for (name, (g, w)) in ["output", "dx"]
            .iter()
            .zip(got.iter().zip(&self.reference()))
        {
            assert_close(&format!("{name} x {:?}", self.shape), g, w, TOL);
        }
    }
}

/// Output and gradient through `Autodiff<Wgpu>` (the fused kernels under burn-fusion) at SD
/// 1.5's width (320 channels: halves of 1280), odd halves, a half of one value, ranks 2 and 4.
#[test]
fn forward_and_gradient_match_the_plain_ops() {
    let device = WgpuDevice::default();
    Inputs::new([2, 64, 2560]).check::<Gpu>(&device);
    Inputs::new([3, 5, 14]).check::<Gpu>(&device);
    Inputs::new([7, 2]).check::<Gpu>(&device);
    Inputs::new([2, 3, 4, 6]).check::<Gpu>(&device);
}

/// burn-cubecl's backend without fusion takes the kernels directly (another dispatch path).
#[test]
fn plain_cube_backend_matches_the_plain_ops() {
    Inputs::new([2, 16, 160]).check::<GpuPlain>(&WgpuDevice::default());
}

/// Without autodiff (inference) on both dispatch paths: the forward alone.
#[test]
fn inference_matches_the_plain_ops() {
    let device = WgpuDevice::default();
    let inputs = Inputs::new([2, 32, 640]);
    let want = &inputs.reference()[0];
    let x = || TensorData::new(inputs.x.clone(), inputs.shape);
    let fused = Tensor::<Gpu, 3>::from_data(x(), &device);
    let got = to_vec(fused_geglu(&fused).expect("fused on Wgpu"));
    assert_close("inference under fusion", &got, want, TOL);
    let fused = Tensor::<GpuPlain, 3>::from_data(x(), &device);
    let got = to_vec(fused_geglu(&fused).expect("fused without fusion"));
    assert_close("inference without fusion", &got, want, TOL);
}

/// f16: where the adapter supports f16 shaders the kernels run with f32 arithmetic, and the
/// output and gradient, rounded to f16, agree with the f32 reference on the same f16-rounded
/// inputs to 1e-2; where it does not, the call comes back with the device reason. The test
/// prints which of the two it checked.
#[test]
fn half_precision() {
    let device = WgpuDevice::default();
    let mut inputs = Inputs::new([2, 64, 2560]);
    for data in [&mut inputs.x, &mut inputs.w] {
        for x in data.iter_mut() {
            *x = half::f16::from_f32(*x).to_f32();
        }
    }
    let probe = Tensor::<Gpu, 2>::zeros([1, 2], &device).cast(DType::F16);
    match fused_geglu(&probe) {
        Err(reason) => {
            assert_eq!(reason, GegluUnfused::Device { dtype: DType::F16 });
            eprintln!("f16 NOT TESTED on this adapter: it has no f16 shader support ({reason})");
        }
        Ok(_) => {
            let got = inputs.run::<Gpu>(&device, DType::F16, |x| {
                let out = fused_geglu(&x).expect("fused f16");
                assert_eq!(out.dtype(), DType::F16);
                out
            });
            for (name, (g, w)) in ["output", "dx"]
                .iter()
                .zip(got.iter().zip(&inputs.reference()))
            {
                assert_close(&format!("f16 {name}"), g, w, 1e-2);
            }
            eprintln!("f16 tested: the adapter supports f16 shaders");
        }
    }
}

/// The core's `FeedForward` takes the fused kernel on wgpu (the dispatch counter grows) and
/// gives the output it gives on Flex, where it runs the plain ops, from the same weights
/// (written to a safetensors file and loaded on both backends).
#[test]
fn the_core_feed_forward_runs_the_kernel() {
    let (dim, inner) = (32, 128);
    let names = [
        ("net.0.proj.weight", vec![2 * inner, dim]),
        ("net.0.proj.bias", vec![2 * inner]),
        ("net.2.weight", vec![dim, inner]),
        ("net.2.bias", vec![dim]),
    ];
    let data: Vec<Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, (_, shape))| {
            let len = shape.iter().product();
            let scale = 1.0 / (shape[shape.len() - 1] as f32).sqrt();
            values(20 + i as u64, len)
                .iter()
                .flat_map(|v| (v * scale).to_le_bytes())
                .collect()
        })
        .collect();
    let views = names.iter().zip(&data).map(|((name, shape), bytes)| {
        let view = TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap();
        (*name, view)
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ff.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let weights = SafetensorsWeights::open(&path).unwrap();

    let x = TensorData::new(values(5, 2 * 10 * dim), [2, 10, dim]);
    let cpu = Default::default();
    let on_cpu = FeedForward::<Flex>::new(&VarBuilder::from_weights(&weights, &cpu), dim)
        .expect("feed-forward on Flex");
    let want = to_vec(on_cpu.forward(Tensor::from_data(x.clone(), &cpu)));
    let device = WgpuDevice::default();
    let on_gpu = FeedForward::<Gpu>::new(&VarBuilder::from_weights(&weights, &device), dim)
        .expect("feed-forward on wgpu");
    let before = geglu_dispatch_counts().fused;
    let got = to_vec(on_gpu.forward(Tensor::from_data(x, &device)));
    assert!(
        geglu_dispatch_counts().fused > before,
        "FeedForward on wgpu did not take the fused kernel"
    );
    assert_close("core feed-forward", &got, &want, 1e-4);
}

/// What the kernels do not take is refused with its reason while the caller keeps its
/// input: a CPU backend, an odd width, f64.
#[test]
fn unsupported_inputs_are_refused() {
    let cpu = Default::default();
    let x = Tensor::<Flex, 2>::ones([3, 4], &cpu);
    assert_eq!(fused_geglu(&x).err(), Some(GegluUnfused::Backend));

    let device = WgpuDevice::default();
    let odd = Tensor::<Gpu, 2>::ones([3, 5], &device);
    assert_eq!(
        fused_geglu(&odd).err(),
        Some(GegluUnfused::Shape { rows: 3, width: 5 })
    );
    assert_eq!(to_vec(odd), vec![1.0; 15], "x stays the caller's");
}
