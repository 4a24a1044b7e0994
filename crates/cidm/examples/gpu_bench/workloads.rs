//! The five workloads of issue 8, each built on the selected backend and timed by
//! [`measure`]: a guided UNet step, a LoRA training step, 50-step DPM-Solver++ sampling, elastic
//! weight aggregation over 10 tasks, and a regional step with 2 regions.

use burn::tensor::{Distribution, Tensor};

use cidm::backend::{self, Selected, Training};
use cidm::diffusion::pipeline::{apply_guidance, sample, SamplingSettings};
use cidm::diffusion::schedulers::SchedulerKind;
use cidm::diffusion::{Conditioning, PerLayer, UNet2DConditionModel};
use cidm::ewa::{Ewa, EwaConfig, EwaWeights, PromptConditioning, TaskEmbeddings, TokenRows};
use cidm::lora::{DenoisingBatch, LoraAdapter, LoraConfig, LoraTrainer, LoraTrainingConfig};
use cidm::regions::{BoundingBox, RegionalConfig, RegionalStep};

use crate::error::{BenchError, Result};
use crate::memory::{self, PeakMemory};
use crate::setup::{sd15_scheduler, sync, Setup, GUIDANCE};
use crate::timing::{measure, Timing};

/// LoRA rank of the trained adapter and of every EWA task.
const RANK: usize = 4;
/// Stored tasks EWA aggregates.
const TASKS: usize = 10;
/// Concept rows per task and layer in the task embeddings (a two-token concept).
const CONCEPT_ROWS: usize = 2;

/// Warm-up and timed repetitions of every workload.
#[derive(Debug, Clone, Copy)]
pub struct Reps {
    /// Untimed runs first.
    pub warmup: usize,
    /// Timed runs.
    pub reps: usize,
}

/// One LoRA training step (batch 1, rank 4 on the cross-attention q/k/v/out, AdamW with the
/// trainer's defaults and global-norm clipping) on the autodiff backend, and the peak memory
/// after it. Run it first: the memory reading is a high-water mark of the whole process.
pub fn lora_train_step(setup: &Setup, reps: Reps) -> Result<(Timing, Option<PeakMemory>)> {
    let device = backend::device();
    let unet = UNet2DConditionModel::<Training>::random(&setup.unet, &device)?;
    let adapter = LoraAdapter::init(&LoraConfig::new(RANK, RANK as f64), &unet, &device)?;
    let mut trainer = LoraTrainer::new(unet, &adapter, LoraTrainingConfig::default())?;
    let batch = DenoisingBatch {
        noisy_latents: setup.latents(1, &device),
        timesteps: setup.timestep(&device),
        conditioning: Conditioning::shared(setup.text(1, &device)),
        target: setup.latents(1, &device),
    };
    let timing = measure(reps.warmup, reps.reps, || {
        trainer.step(&batch)?;
        sync::<Training>(&device)
    })?;
    Ok((timing, memory::peak(&device)))
}

/// The plain UNet every inference workload shares.
pub fn base_unet(setup: &Setup) -> Result<UNet2DConditionModel<Selected>> {
    Ok(UNet2DConditionModel::random(
        &setup.unet,
        &backend::device(),
    )?)
}

/// One UNet step with classifier-free guidance: batch 2 (unconditional and conditional) in
/// one call, then the guidance combination.
pub fn unet_step_cfg(
    setup: &Setup,
    unet: &UNet2DConditionModel<Selected>,
    reps: Reps,
) -> Result<Timing> {
    let device = backend::device();
    let latents = setup.latents::<Selected>(2, &device);
    let cond = Conditioning::shared(setup.text(2, &device));
    let t = setup.timestep(&device);
    measure(reps.warmup, reps.reps, || {
        let noise = unet.forward(latents.clone(), t.clone(), &cond)?;
        let _guided = apply_guidance(noise, GUIDANCE);
        sync::<Selected>(&device)
    })
}

/// A whole sampling run through the core's loop: DPM-Solver++ 2M on SD 1.5's schedule,
/// `steps` steps, one latent with guidance 7.5 (each step one UNet call of batch 2), with the
/// loop's per-step finiteness check included (it is part of what a generation costs).
pub fn sampling(
    setup: &Setup,
    unet: &UNet2DConditionModel<Selected>,
    steps: usize,
    reps: Reps,
) -> Result<Timing> {
    let device = backend::device();
    let scheduler = sd15_scheduler();
    let settings = SamplingSettings {
        scheduler: &scheduler,
        kind: SchedulerKind::DpmSolverMultistep,
        steps,
        guidance_scale: GUIDANCE,
    };
    let cond = Conditioning::shared(setup.text(2, &device));
    let noise = setup.latents::<Selected>(1, &device);
    measure(reps.warmup, reps.reps, || {
        let _latents = sample(unet, noise.clone(), &cond, &settings, &mut |_, _| {})?;
        sync::<Selected>(&device)
    })
}

/// A UNet with 10 random rank-4 task adapters stacked by EWA and attached, the EWA state, and
/// a prompt's 16 (or however many cross-attention layers) layer embeddings `[1, 77, dim]`.
pub struct EwaModel {
    /// The UNet with the stacked bank attached.
    pub unet: UNet2DConditionModel<Selected>,
    /// The aggregation state (task embeddings, stacked adapters).
    pub ewa: Ewa<Selected>,
    /// One prompt's text per cross-attention layer.
    pub prompt: Vec<Tensor<Selected, 3>>,
}

impl EwaModel {
    /// Stacks 10 random adapters onto a copy of `base` with random task embeddings.
    pub fn new(setup: &Setup, base: &UNet2DConditionModel<Selected>) -> Result<Self> {
        let device = backend::device();
        let mut unet = base.clone();
        let layers = unet.cross_attention_layers();
        let adapters = (0..TASKS as u64)
            .map(|seed| {
                LoraAdapter::init(
                    &LoraConfig::new(RANK, RANK as f64).with_init_seed(seed),
                    &unet,
                    &device,
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let random_rows = || -> Result<TokenRows> {
            let values = Tensor::<Selected, 2>::random(
                [CONCEPT_ROWS, setup.text_dim],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| BenchError::ReadBack(format!("{e:?}")))?;
            Ok(TokenRows::new(setup.text_dim, values)?)
        };
        let tasks = (0..TASKS)
            .map(|_| (0..layers).map(|_| random_rows()).collect())
            .collect::<Result<Vec<Vec<TokenRows>>>>()?;
        let ewa = Ewa::new(EwaConfig::default(), &adapters, TaskEmbeddings::new(tasks)?)?;
        ewa.attach(&mut unet)?;
        let prompt = (0..layers).map(|_| setup.text(1, &device)).collect();
        Ok(Self { unet, ewa, prompt })
    }

    /// A prompt's per-layer EWA weights (`code` variant) and gates: the prompt's layer
    /// embeddings are read back at all 77 positions (the worst case), one read per layer as
    /// `EncodedBatch::rows` does, weighed against the tasks on the host, and the gates uploaded.
    pub fn prompt_gates(&self) -> Result<PerLayer<Tensor<Selected, 2>>> {
        let device = backend::device();
        let rows = self
            .prompt
            .iter()
            .map(|t| {
                let [_, _, dim] = t.dims();
                let values = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| BenchError::ReadBack(format!("{e:?}")))?;
                Ok(TokenRows::new(dim, values)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let weights = EwaWeights::compute(self.ewa.config().variant, &rows, self.ewa.tasks())?;
        Ok(self.ewa.gates(&weights, &device)?)
    }
}

/// EWA's per-prompt work alone: the weights and gates of one prompt.
pub fn ewa_weights(model: &EwaModel, reps: Reps) -> Result<Timing> {
    let device = backend::device();
    measure(reps.warmup, reps.reps, || {
        let _gates = model.prompt_gates()?;
        sync::<Selected>(&device)
    })
}

/// EWA end to end for one step: the prompt's weights and gates, then one guided UNet step
/// (batch 2) with the 10-task bank gated by them. Compare with the plain guided step for what
/// EWA adds.
pub fn ewa_step_cfg(setup: &Setup, model: &EwaModel, reps: Reps) -> Result<Timing> {
    let device = backend::device();
    let latents = setup.latents::<Selected>(2, &device);
    let text = setup.text::<Selected>(2, &device);
    let t = setup.timestep(&device);
    measure(reps.warmup, reps.reps, || {
        let cond = Conditioning::shared(text.clone()).with_gates(model.prompt_gates()?);
        let noise = model.unet.forward(latents.clone(), t.clone(), &cond)?;
        let _guided = apply_guidance(noise, GUIDANCE);
        sync::<Selected>(&device)
    })
}

/// One regional step with 2 regions (left and right halves of the image), each with its own
/// prompt and EWA gates over the 10 tasks: one UNet call on `[uncond, global, region 1,
/// region 2]` with regional cross-attention in every layer, then the noise composition.
pub fn regional_step(setup: &Setup, model: &EwaModel, reps: Reps) -> Result<Timing> {
    let device = backend::device();
    let layers = model.unet.cross_attention_layers();
    let weights = EwaWeights::equal(layers, TASKS);
    let prompt = || -> Result<PromptConditioning<Selected>> {
        Ok(PromptConditioning {
            text: PerLayer::Shared(setup.text(1, &device)),
            gates: model.ewa.gates(&weights, &device)?,
            weights: weights.clone(),
        })
    };
    let global = prompt()?;
    let uncond = PerLayer::Shared(setup.text::<Selected>(1, &device));
    let regions = vec![
        (prompt()?, BoundingBox::new(0.0, 0.0, 0.5, 1.0)?),
        (prompt()?, BoundingBox::new(0.5, 0.0, 1.0, 1.0)?),
    ];
    let step = RegionalStep::new(
        &model.unet,
        &uncond,
        &global,
        &regions,
        [setup.latent, setup.latent],
        &RegionalConfig::default(),
    )?;
    let latents = setup.latents::<Selected>(1, &device);
    let t = setup.timestep(&device);
    measure(reps.warmup, reps.reps, || {
        let _noise = step.predict(&model.unet, latents.clone(), t.clone(), GUIDANCE)?;
        sync::<Selected>(&device)
    })
}
