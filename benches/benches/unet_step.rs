//! One UNet denoising step (batch 2, as classifier-free guidance runs) of the small config on
//! burn's two CPU backends, Flex and NdArray: the faster is the facade's default CPU backend.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm_benches::small_unet_config;
use cidm_diffusion::{Conditioning, UNet2DConditionModel};
use criterion::{criterion_group, criterion_main, Criterion};

fn step<B: Backend>(c: &mut Criterion, name: &str) {
    let device = B::Device::default();
    let config = small_unet_config();
    let unet =
        UNet2DConditionModel::<B>::random(&config, &device).expect("the small config is valid");
    let size = config.sample_size.unwrap_or(32);
    let sample =
        Tensor::<B, 4>::random([2, 4, size, size], Distribution::Normal(0.0, 1.0), &device);
    let context = Tensor::<B, 3>::random(
        [2, 77, config.cross_attention_dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let cond = Conditioning::shared(context);
    let t = Tensor::<B, 1>::from_floats([500.0], &device);
    c.bench_function(&format!("unet_step_small_32x32_batch2/{name}"), |b| {
        b.iter(|| {
            let out = unet
                .forward(sample.clone(), t.clone(), &cond)
                .expect("valid inputs");
            B::sync(&device).expect("backend sync");
            out
        })
    });
}

fn benches(c: &mut Criterion) {
    step::<burn::backend::Flex>(c, "flex");
    step::<burn::backend::NdArray>(c, "ndarray");
}

criterion_group! {
    name = unet;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(unet);
