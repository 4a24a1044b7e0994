//! One regional step (U + 2 samples in one batched UNet call, regional cross-attention in
//! every layer, noise composition) against one plain classifier-free-guidance step (2
//! samples), small config at 32x32 latents on Flex, with a 2-task EWA stack gated in both.
//! The claim: a regional step with U regions costs about (U + 2) / 2 plain steps, no more;
//! `unet_batch` measures the UNet on U + 2 samples without regions, to separate the cost of
//! the batch from the cost of regional attention.

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm_benches::small_unet_config;
use cidm_diffusion::pipeline::apply_guidance;
use cidm_diffusion::{Conditioning, PerLayer, UNet2DConditionModel};
use cidm_ewa::{Ewa, EwaConfig, EwaWeights, PromptConditioning, TaskEmbeddings, TokenRows};
use cidm_lora::{LoraAdapter, LoraConfig};
use cidm_regions::{BoundingBox, RegionalConfig, RegionalStep};
use criterion::{criterion_group, criterion_main, Criterion};

type B = Flex;
const TOKENS: usize = 77;

fn benches(c: &mut Criterion) {
    let device = Default::default();
    let config = small_unet_config();
    let dim = config.cross_attention_dim;
    let size = config.sample_size.unwrap_or(32);
    let mut unet = UNet2DConditionModel::<B>::random(&config, &device).expect("valid config");
    let layers = unet.cross_attention_layers();
    let adapters: Vec<LoraAdapter<B>> = (0..2)
        .map(|seed| {
            LoraAdapter::init(
                &LoraConfig::new(4, 4.0).with_init_seed(seed),
                &unet,
                &device,
            )
            .expect("adapter")
        })
        .collect();
    let rows = TokenRows::new(dim, vec![1.0; dim]).expect("rows");
    let tasks = TaskEmbeddings::new(vec![vec![rows; layers]; 2]).expect("tasks");
    let ewa = Ewa::new(EwaConfig::default(), &adapters, tasks).expect("ewa");
    ewa.attach(&mut unet).expect("attach");
    let weights = EwaWeights::equal(layers, 2);
    let prompt = || PromptConditioning {
        text: PerLayer::Layers(
            (0..layers)
                .map(|_| Tensor::random([1, TOKENS, dim], Distribution::Normal(0.0, 1.0), &device))
                .collect(),
        ),
        gates: ewa.gates(&weights, &device).expect("gates"),
        weights: weights.clone(),
    };
    let global = prompt();
    let uncond = prompt().text;
    let latents =
        Tensor::<B, 4>::random([1, 4, size, size], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<B, 1>::from_floats([500.0], &device);

    let plain = Conditioning {
        text: PerLayer::Layers(
            (0..layers)
                .map(|l| Tensor::cat(vec![uncond.get(l).clone(), global.text.get(l).clone()], 0))
                .collect(),
        ),
        gates: Some(global.gates.clone()),
        regions: None,
    };
    c.bench_function("plain_cfg_step/small_32x32", |b| {
        b.iter(|| {
            let noise = unet
                .forward(latents.clone().repeat_dim(0, 2), t.clone(), &plain)
                .expect("valid inputs");
            let out = apply_guidance(noise, 7.5);
            B::sync(&device).expect("sync");
            out
        })
    });

    for regions in [1usize, 2, 4] {
        let boxes: Vec<(PromptConditioning<B>, BoundingBox)> = (0..regions)
            .map(|u| {
                let x0 = u as f64 / regions as f64;
                let x1 = (u + 1) as f64 / regions as f64;
                (prompt(), BoundingBox::new(x0, 0.0, x1, 1.0).expect("box"))
            })
            .collect();
        let step = RegionalStep::new(
            &unet,
            &uncond,
            &global,
            &boxes,
            [size, size],
            &RegionalConfig::default(),
        )
        .expect("regional step");
        // The same batch without regions: what U + 2 samples cost the UNet by themselves.
        let batch = regions + 2;
        let same_batch = Conditioning {
            text: PerLayer::Layers(
                (0..layers)
                    .map(|l| global.text.get(l).clone().repeat_dim(0, batch))
                    .collect(),
            ),
            gates: Some(global.gates.clone()),
            regions: None,
        };
        c.bench_function(&format!("unet_batch/small_32x32_{batch}_samples"), |b| {
            b.iter(|| {
                let out = unet
                    .forward(latents.clone().repeat_dim(0, batch), t.clone(), &same_batch)
                    .expect("valid inputs");
                B::sync(&device).expect("sync");
                out
            })
        });
        c.bench_function(
            &format!("regional_step/small_32x32_{regions}_regions"),
            |b| {
                b.iter(|| {
                    let out = step
                        .predict(&unet, latents.clone(), t.clone(), 7.5)
                        .expect("valid inputs");
                    B::sync(&device).expect("sync");
                    out
                })
            },
        );
    }
}

criterion_group! {
    name = regions;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(regions);
