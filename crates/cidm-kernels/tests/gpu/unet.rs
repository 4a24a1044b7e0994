//! The whole UNet with every fused kernel on wgpu (on CI: Mesa's lavapipe) against the same
//! UNet's plain ops on Flex: the committed base model (`assets/shapes-base`, a trained tiny
//! Stable Diffusion) run forward and backward on both, so the kernels are checked together
//! inside a real network (attention, GroupNorm + SiLU, LayerNorm and GEGLU, under fusion and
//! autodiff), not only one by one. The output and the gradients of the latents and of the
//! text embedding (which reaches the network through the cross-attention's keys and values)
//! of `sum(out * w)` must agree; every kernel's dispatch counter must grow.
use std::path::PathBuf;

use crate::common::{assert_close, to_vec, values, Gpu};

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::loading::ModelDir;
use cidm_diffusion::unet::UNet2DConditionModel;
use cidm_diffusion::Conditioning;
use cidm_kernels::{
    dispatch_counts, geglu_dispatch_counts, group_norm_dispatch_counts, layer_norm_dispatch_counts,
    DispatchCounts,
};

/// Latents of the base model (8 x 8, 4 channels), a batch of two.
const LATENTS: [usize; 4] = [2, 4, 8, 8];
/// Text embeddings: CLIP's 77 tokens of the base model's 32 values.
const TEXT: [usize; 3] = [2, 77, 32];

fn base_model() -> ModelDir {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/shapes-base");
    ModelDir::open(root).expect("the committed base model")
}

/// Output, and the gradients of the latents and of the text, of `sum(out * w)` through the
/// base UNet on `Autodiff<B>`.
fn run<B: Backend>(device: &B::Device) -> [Vec<f32>; 3] {
    let unet = UNet2DConditionModel::<Autodiff<B>>::from_model_dir(&base_model(), None, device)
        .expect("the base UNet loads");
    let tensor = |seed, shape: &[usize], scale: f32| {
        let len = shape.iter().product();
        let data: Vec<f32> = values(seed, len).iter().map(|v| v * scale).collect();
        TensorData::new(data, shape.to_vec())
    };
    let latents =
        Tensor::<Autodiff<B>, 4>::from_data(tensor(1, &LATENTS, 0.5), device).require_grad();
    let text = Tensor::<Autodiff<B>, 3>::from_data(tensor(2, &TEXT, 0.5), device).require_grad();
    let timesteps = Tensor::<Autodiff<B>, 1>::from_floats([500.0, 80.0], device);
    let weight = Tensor::<Autodiff<B>, 4>::from_data(tensor(3, &LATENTS, 1.0), device);
    let out = unet
        .forward(
            latents.clone(),
            timesteps,
            &Conditioning::shared(text.clone()),
        )
        .expect("a forward of valid inputs");
    let grads = (out.clone() * weight).sum().backward();
    [
        to_vec(out),
        to_vec(latents.grad(&grads).expect("gradient of the latents")),
        to_vec(text.grad(&grads).expect("gradient of the text")),
    ]
}

fn counts() -> [DispatchCounts; 4] {
    [
        dispatch_counts(),
        group_norm_dispatch_counts(),
        layer_norm_dispatch_counts(),
        geglu_dispatch_counts(),
    ]
}

/// The fused UNet agrees with the plain one to 1e-5 relative to the largest value of each
/// result (f32 on both sides, summed in different orders through some thirty layers; the
/// output agrees to 1e-6, the latents' gradient misses 1e-6 by a little), and every kernel
/// ran.
#[test]
fn the_unet_with_fused_kernels_matches_the_plain_unet() {
    let want = run::<Flex>(&Default::default());
    let before = counts();
    let got = run::<Gpu>(&WgpuDevice::default());
    let after = counts();
    for (kernel, (b, a)) in ["attention", "group norm", "layer norm", "GEGLU"]
        .iter()
        .zip(before.iter().zip(&after))
    {
        assert!(a.fused > b.fused, "the UNet did not run the fused {kernel}");
    }
    for (name, (g, w)) in ["output", "d latents", "d text"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        assert_close(name, g, w, 1e-5);
    }
}
