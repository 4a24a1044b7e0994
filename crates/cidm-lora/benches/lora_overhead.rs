//! What unmerged adapters cost: one UNet forward (batch 2, 32x32 latents, 77 text tokens) of
//! the workspace's small benchmark config on Flex, without adapters, with a rank-4 LoRA on all
//! 64 cross-attention projections, and with a gated stack of four such LoRAs (rank 16, the
//! elastic-weight-aggregation path). A merged adapter costs exactly the base forward.
//!
//! The adapters' share of a UNet forward is small enough to drown in the noise of a shared
//! machine, so a second group times the largest adapted projection alone (`to_q` of the first
//! cross-attention, 2 x 1024 tokens of width 32) with and without its bank; the UNet-level
//! overhead is about 64 such differences (the other projections see fewer tokens).

use burn::backend::Flex as B;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm_benches::small_unet_config;
use cidm_diffusion::{Conditioning, PerLayer, UNet2DConditionModel};
use cidm_lora::{LoraAdapter, LoraConfig, LoraStack};
use criterion::{criterion_group, criterion_main, Criterion};

fn forward(c: &mut Criterion) {
    let device = Default::default();
    let config = small_unet_config();
    let base = UNet2DConditionModel::<B>::random(&config, &device).expect("valid config");
    let size = config.sample_size.unwrap_or(32);
    let sample =
        Tensor::<B, 4>::random([2, 4, size, size], Distribution::Normal(0.0, 1.0), &device);
    let context = Tensor::<B, 3>::random(
        [2, 77, config.cross_attention_dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let t = Tensor::<B, 1>::from_floats([500.0], &device);
    let plain = Conditioning::shared(context);

    let adapters: Vec<LoraAdapter<B>> = (0..4)
        .map(|seed| {
            let lora = LoraConfig::new(4, 4.0).with_init_seed(seed);
            LoraAdapter::init(&lora, &base, &device).expect("targets exist")
        })
        .collect();
    let mut with_lora = base.clone();
    adapters[0].attach(&mut with_lora).expect("adapter fits");
    let stack = LoraStack::new(&adapters).expect("adapters stack");
    let mut with_stack = base.clone();
    stack.attach(&mut with_stack).expect("stack fits");
    let weights =
        Tensor::<B, 2>::from_floats([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]], &device);
    let gates = stack.gates(weights).expect("one weight per adapter");
    let gated = plain.clone().with_gates(PerLayer::Shared(gates));

    let mut group = c.benchmark_group("unet_forward_small_32x32_batch2");
    for (name, unet, cond) in [
        ("base", &base, &plain),
        ("lora_rank4_cross_attention", &with_lora, &plain),
        ("stack_4x_rank4_gated", &with_stack, &gated),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let out = unet
                    .forward(sample.clone(), t.clone(), cond)
                    .expect("valid inputs");
                B::sync(&device).expect("backend sync");
                out
            })
        });
    }
    group.finish();
}

fn projection(c: &mut Criterion) {
    let device = Default::default();
    let base = UNet2DConditionModel::<B>::random(&small_unet_config(), &device).expect("valid");
    let adapter = LoraAdapter::init(&LoraConfig::new(4, 4.0), &base, &device).expect("fits");
    let mut with_lora = base.clone();
    adapter.attach(&mut with_lora).expect("adapter fits");
    let plain = base.transformer_blocks()[0].attn2.to_q.clone();
    let adapted = with_lora.transformer_blocks()[0].attn2.to_q.clone();
    let x = Tensor::<B, 3>::random(
        [2, 1024, plain.d_in()],
        Distribution::Normal(0.0, 1.0),
        &device,
    );

    let mut group = c.benchmark_group("cross_attention_to_q_2x1024x32");
    for (name, layer) in [("base", &plain), ("lora_rank4", &adapted)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let out = layer.forward(x.clone(), None);
                B::sync(&device).expect("backend sync");
                out
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = unet;
    config = Criterion::default().sample_size(10);
    targets = forward
}
criterion_group!(single, projection);
criterion_main!(unet, single);
