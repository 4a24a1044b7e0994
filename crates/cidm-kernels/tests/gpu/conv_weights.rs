//! Convolution weights on the kernels' backends: `nn::conv_weight` stores them channels-last
//! there (burn-cubecl's convolutions read weights so and copy NCHW-contiguous ones on every
//! call), with the same values and the same convolution as the NCHW weights on Flex.
use std::path::PathBuf;

use crate::common::{assert_close, to_vec, values, Gpu, GpuPlain};

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use cidm_diffusion::loading::{ModelDir, VarBuilder};
use cidm_diffusion::nn::conv2d;
use cidm_kernels::on_cube_backend;

/// The base model's `conv_in`: 4 latent channels to its first block's 32, 3 x 3.
const CONV_IN: [usize; 4] = [32, 4, 3, 3];

/// The base model's `conv_in`, loaded on `B` through the core's `conv2d`.
fn load_conv_in<B: Backend>(device: &B::Device) -> Conv2d<B> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/shapes-base/unet");
    let weights = ModelDir::weights(&root, "diffusion_pytorch_model", None).expect("weights");
    let vb = VarBuilder::<B>::from_weights(&weights, device).pp("conv_in");
    let [out, input, kernel, _] = CONV_IN;
    conv2d(&vb, input, out, kernel, 1, 1).expect("conv_in loads")
}

/// The layer's output on `B` for a fixed input, and its weight's values.
fn conv_in<B: Backend>(device: &B::Device) -> [Vec<f32>; 2] {
    let conv = load_conv_in::<B>(device);
    let shape = [2, CONV_IN[1], 8, 8];
    let len = shape.iter().product();
    let x = Tensor::<B, 4>::from_data(TensorData::new(values(7, len), shape), device);
    [to_vec(conv.forward(x)), to_vec(conv.weight.val())]
}

/// The probe behind the layout knows the backends the kernels dispatch to (wgpu plain, under
/// fusion, under autodiff) and no other.
#[test]
fn the_probe_knows_the_kernels_backends() {
    let device = WgpuDevice::default();
    assert!(on_cube_backend(&Tensor::<Gpu, 1>::zeros([3], &device)));
    assert!(on_cube_backend(&Tensor::<GpuPlain, 1>::zeros([3], &device)));
    assert!(on_cube_backend(&Tensor::<Autodiff<Gpu>, 1>::zeros(
        [3],
        &device
    )));
    assert!(!on_cube_backend(&Tensor::<Flex, 1>::zeros(
        [3],
        &Default::default()
    )));
}

/// On wgpu the weight lies channels-last in memory (strides of `[out, kh, kw, in]`, seen as
/// `[out, in, kh, kw]`); its values and the layer's output equal Flex's, whose weight is NCHW.
#[test]
fn channels_last_weights_keep_values_and_output() {
    let device = WgpuDevice::default();
    let conv = load_conv_in::<GpuPlain>(&device);
    let TensorPrimitive::Float(weight) = conv.weight.val().into_primitive() else {
        panic!("a float weight");
    };
    let strides: Vec<usize> = weight.meta.strides().iter().copied().collect();
    let [_, c, kh, kw] = CONV_IN;
    assert_eq!(
        strides,
        [c * kh * kw, 1, kw * c, c],
        "channels-last strides"
    );

    let want = conv_in::<Flex>(&Default::default());
    for got in [conv_in::<Gpu>(&device), conv_in::<GpuPlain>(&device)] {
        assert_eq!(got[1], want[1], "weight values");
        assert_close("conv_in output", &got[0], &want[0], 1e-5);
    }
}
