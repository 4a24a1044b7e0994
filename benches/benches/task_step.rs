//! One CIDM training step of the small config (the UNet of `unet_step`, a 2-layer 64-wide CLIP
//! text encoder, batch 2 at 32x32 latents, rank 4 on the 64 cross-attention projections), on
//! Flex with autodiff: task 1 (denoising loss only) and task 2 (with R1, R2 and R2's descent),
//! so the regularizers' share of a step can be read off.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use cidm_benches::small_unet_config;
use cidm_continual::data::CachedLatent;
use cidm_continual::{
    LatentCache, Method, TaskContext, TaskTrainer, TaskTrainingConfig, TaskWords,
};
use cidm_diffusion::schedulers::{DdpmNoiser, SchedulerConfig};
use cidm_diffusion::{CLIPTextConfig, CLIPTextModel, CLIPTokenizer, UNet2DConditionModel};
use cidm_lora::LoraAdapter;
use criterion::{criterion_group, criterion_main, Criterion};

type AB = Autodiff<Flex>;

fn context(old_tasks: Vec<LoraAdapter<AB>>) -> TaskContext<AB> {
    let device = Default::default();
    let tokenizer = CLIPTokenizer::from_folder(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/cidm-diffusion/tests/fixtures/pipeline-model/tokenizer"),
    )
    .expect("the fixture tokenizer loads");
    let text_config = CLIPTextConfig {
        vocab_size: tokenizer.vocab_size(),
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        ..CLIPTextConfig::sd15()
    };
    let latent = |seed: f64| CachedLatent {
        mean: Tensor::random([1, 4, 32, 32], Distribution::Normal(seed, 1.0), &device),
        std: Tensor::full([1, 4, 32, 32], 0.1, &device),
        caption: "a photo of a <king1> king".into(),
    };
    TaskContext {
        tokenizer,
        text_encoder: CLIPTextModel::random(&text_config, &device).expect("valid config"),
        unet: UNet2DConditionModel::random(&small_unet_config(), &device).expect("valid config"),
        noiser: DdpmNoiser::new(&SchedulerConfig::default()).expect("default schedule"),
        data: LatentCache {
            entries: vec![latent(0.0), latent(0.5)],
            latent_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
        },
        old_tasks,
        subspace: None,
    }
}

fn benches(c: &mut Criterion) {
    let config = TaskTrainingConfig {
        method: Method::Cidm,
        steps: usize::MAX,
        ..TaskTrainingConfig::default()
    };
    let words = |w: &str| TaskWords {
        words: vec![w.into()],
        classes: vec!["king".into()],
    };
    let mut first = TaskTrainer::new(context(Vec::new()), words("<king1>"), config.clone())
        .expect("task 1 starts");
    c.bench_function("task_step_small_batch2/task1_denoise_only", |b| {
        b.iter(|| first.step().expect("finite loss"))
    });
    let (learner, subspace) = first.finish().expect("task 1 ends");
    let mut second_context = context(vec![learner.adapter]);
    second_context.subspace = subspace;
    let mut second =
        TaskTrainer::new(second_context, words("<king2>"), config).expect("task 2 starts");
    c.bench_function("task_step_small_batch2/task2_cidm_r1_r2", |b| {
        b.iter(|| second.step().expect("finite loss"))
    });
}

criterion_group! {
    name = task_step;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(task_step);
