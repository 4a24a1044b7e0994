//! Elastic weight aggregation's cost per generation against one UNet step of the small config
//! (batch 2, classifier-free guidance, the 10-task stack attached and gated), on Flex.
//!
//! Per generation EWA reads the prompt's 16 layer embeddings back to the host (all 77
//! positions, the worst case), computes the `code` weights of 10 tasks with 2 concept
//! positions each, and uploads the gates. Task embeddings are computed once per store and are
//! not part of a generation. The claim: EWA per generation < 1% of ONE UNet step.

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm_benches::small_unet_config;
use cidm_diffusion::{Conditioning, UNet2DConditionModel};
use cidm_ewa::{Ewa, EwaConfig, EwaWeights, TaskEmbeddings, TokenRows};
use cidm_lora::{LoraAdapter, LoraConfig};
use criterion::{criterion_group, criterion_main, Criterion};

type B = Flex;
const TASKS: usize = 10;
const TOKENS: usize = 77;

fn random_rows(rows: usize, dim: usize, seed: u64) -> TokenRows {
    // A small LCG: the values only need to be varied and reproducible.
    let mut state = seed.wrapping_add(1);
    let values = (0..rows * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    TokenRows::new(dim, values).expect("valid rows")
}

fn benches(c: &mut Criterion) {
    let device = Default::default();
    let config = small_unet_config();
    let dim = config.cross_attention_dim;
    let mut unet = UNet2DConditionModel::<B>::random(&config, &device).expect("valid config");
    let layers = unet.cross_attention_layers();
    let adapters: Vec<LoraAdapter<B>> = (0..TASKS as u64)
        .map(|seed| {
            LoraAdapter::init(
                &LoraConfig::new(4, 4.0).with_init_seed(seed),
                &unet,
                &device,
            )
            .expect("adapter")
        })
        .collect();
    let tasks = TaskEmbeddings::new(
        (0..TASKS)
            .map(|i| {
                (0..layers)
                    .map(|l| random_rows(2, dim, (i * layers + l) as u64))
                    .collect()
            })
            .collect(),
    )
    .expect("task embeddings");
    let ewa = Ewa::new(EwaConfig::default(), &adapters, tasks).expect("ewa");
    ewa.attach(&mut unet).expect("attach");
    let prompt: Vec<Tensor<B, 3>> = (0..layers)
        .map(|_| Tensor::random([1, TOKENS, dim], Distribution::Normal(0.0, 1.0), &device))
        .collect();

    let per_generation = || {
        let rows: Vec<TokenRows> = prompt
            .iter()
            .map(|t| {
                let values = t.clone().into_data().convert::<f32>().to_vec::<f32>();
                TokenRows::new(dim, values.expect("f32")).expect("rows")
            })
            .collect();
        let weights = EwaWeights::compute(ewa.config().variant, &rows, ewa.tasks()).expect("w");
        let gates = ewa.gates(&weights, &device).expect("gates");
        B::sync(&device).expect("sync");
        gates
    };
    c.bench_function("ewa_per_generation/10_tasks_16_layers_77_tokens", |b| {
        b.iter(per_generation)
    });

    let weights = EwaWeights::equal(layers, TASKS);
    let cond = Conditioning::shared(Tensor::random(
        [2, TOKENS, dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    ))
    .with_gates(ewa.gates(&weights, &device).expect("gates"));
    let size = config.sample_size.unwrap_or(32);
    let sample =
        Tensor::<B, 4>::random([2, 4, size, size], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<B, 1>::from_floats([500.0], &device);
    c.bench_function("unet_step_small_32x32_batch2_10_task_stack", |b| {
        b.iter(|| {
            let out = unet
                .forward(sample.clone(), t.clone(), &cond)
                .expect("valid inputs");
            B::sync(&device).expect("sync");
            out
        })
    });
}

criterion_group! {
    name = ewa;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(ewa);
