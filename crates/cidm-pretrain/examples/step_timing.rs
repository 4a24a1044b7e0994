//! Measures what the shapes-world demo pays per step on a base model directory: one LoRA
//! training step (rank 4 on every cross-attention q/k/v/out, batch 2, the frozen text
//! encoder's forward included) and one guided sampling step (batch 1, CFG: a UNet call on 2
//! latents plus the scheduler update), averaged after warm-up runs.
//!
//! Usage: `cargo run -p cidm-pretrain --example step_timing -- <model dir> [repeats]`

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use cidm_diffusion::pipeline::{sample, SamplingSettings};
use cidm_diffusion::schedulers::{DdpmNoiser, SchedulerKind};
use cidm_diffusion::{Conditioning, GenerationRequest, StableDiffusion};
use cidm_lora::{DenoisingBatch, LoraAdapter, LoraConfig, LoraTrainer, LoraTrainingConfig};

type AB = Autodiff<Flex>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On the pool's threads, as `cidm demo` runs (see `cidm_kernels::on_cpu_pool`).
    cidm_kernels::on_cpu_pool(|| measure().map_err(|e| e.to_string()))?;
    Ok(())
}

/// Times the steps and prints them.
fn measure() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: step_timing <model dir> [repeats]")?,
    );
    let repeats: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let device = Default::default();
    let model = StableDiffusion::<AB>::from_model_dir(&dir, None, &device)?;
    let [c, s] = [
        model.unet.config().in_channels,
        model.unet.config().sample_size.unwrap_or(8),
    ];

    // LoRA training step, batch 2.
    let adapter = LoraAdapter::init(&LoraConfig::new(4, 4.0), &model.unet, &device)?;
    let adapter_params = adapter.parameter_count();
    let mut trainer =
        LoraTrainer::new(model.unet.clone(), &adapter, LoraTrainingConfig::default())?;
    let noiser = DdpmNoiser::new(&model.scheduler)?;
    let prompts = ["a photo of a red star", "a blue ring on the left"];
    let mut step = || -> Result<(), Box<dyn std::error::Error>> {
        let text = model.encode_prompts(&prompts, 0)?.embeddings.detach();
        let latents =
            Tensor::<AB, 4>::random([2, c, s, s], Distribution::Normal(0.0, 1.0), &device);
        let noise = Tensor::<AB, 4>::random([2, c, s, s], Distribution::Normal(0.0, 1.0), &device);
        let batch = DenoisingBatch::from_clean_latents(
            &noiser,
            latents,
            noise,
            &[300, 700],
            Conditioning::shared(text),
        )?;
        trainer.step(&batch)?;
        Ok(())
    };
    for _ in 0..3 {
        step()?;
    }
    let clock = Instant::now();
    for _ in 0..repeats {
        step()?;
    }
    let lora_ms = clock.elapsed().as_secs_f64() * 1e3 / repeats as f64;

    // Guided sampling on the inner backend: 25 DPM-Solver++ steps of one image.
    let model = StableDiffusion::<Flex>::from_model_dir(&dir, None, &device)?;
    let request = GenerationRequest {
        prompts: vec!["a red star on the left".into()],
        width: s * model.vae_scale_factor(),
        height: s * model.vae_scale_factor(),
        steps: 25,
        ..GenerationRequest::default()
    };
    let conditioning = model.conditioning(&request)?;
    let settings = SamplingSettings {
        scheduler: &model.scheduler,
        kind: SchedulerKind::DpmSolverMultistep,
        steps: 25,
        guidance_scale: 7.5,
    };
    let run = || {
        let latents =
            Tensor::<Flex, 4>::random([1, c, s, s], Distribution::Normal(0.0, 1.0), &device);
        sample(
            &model.unet,
            latents,
            &conditioning,
            &settings,
            &mut |_, _| {},
        )
    };
    run()?;
    let clock = Instant::now();
    let runs = repeats.div_ceil(5).max(1);
    for _ in 0..runs {
        run()?;
    }
    let sample_ms = clock.elapsed().as_secs_f64() * 1e3 / (runs * 25) as f64;
    println!(
        "LoRA training step (batch 2, rank 4, {adapter_params} parameters): {lora_ms:.1} ms\n\
         guided sampling step (batch 1, CFG): {sample_ms:.2} ms"
    );
    Ok(())
}
