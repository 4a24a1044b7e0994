//! Training on burn's autodiff backend: a few AdamW steps of a LoRA on the tiny UNet lower the
//! denoising loss on a fixed batch, and nothing but the adapter's factors changes.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::schedulers::{BetaSchedule, DdpmNoiser, SchedulerConfig};
use cidm_diffusion::{Conditioning, ModelDir, UNet2DConditionModel};
use cidm_lora::{DenoisingBatch, LoraAdapter, LoraConfig, LoraTrainer, LoraTrainingConfig};
use common::uniform;

type AB = Autodiff<Flex>;

fn tensor<const D: usize>(seed: u64, shape: [usize; D], scale: f32) -> Tensor<AB, D> {
    let count = shape.iter().product();
    Tensor::from_data(
        TensorData::new(uniform(seed, count, scale), shape),
        &Default::default(),
    )
}

fn fixture_unet() -> UNet2DConditionModel<AB> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/sd1-model");
    UNet2DConditionModel::from_model_dir(&ModelDir::open(root).unwrap(), None, &Default::default())
        .unwrap()
}

/// SD 1.5's noise schedule (scaled-linear betas, 1000 steps, epsilon prediction).
fn sd15_noiser() -> DdpmNoiser {
    DdpmNoiser::new(&SchedulerConfig {
        beta_start: 0.00085,
        beta_end: 0.012,
        beta_schedule: BetaSchedule::ScaledLinear,
        ..SchedulerConfig::default()
    })
    .unwrap()
}

#[test]
fn a_few_steps_lower_the_loss_and_only_train_the_adapter() {
    let device = Default::default();
    let unet = fixture_unet();
    let base_q = unet.transformer_blocks()[0]
        .attn2
        .to_q
        .base
        .weight
        .val()
        .into_data();
    let base_out_bias = unet.transformer_blocks()[3]
        .attn2
        .to_out
        .base
        .bias
        .as_ref()
        .unwrap()
        .val()
        .into_data();
    let adapter = LoraAdapter::init(&LoraConfig::new(4, 4.0), &unet, &device).unwrap();

    let batch = DenoisingBatch::from_clean_latents(
        &sd15_noiser(),
        tensor(1, [2, 4, 8, 8], 1.0),
        tensor(2, [2, 4, 8, 8], 1.7),
        &[150, 600],
        Conditioning::shared(tensor(3, [2, 5, 24], 1.7)),
    )
    .unwrap();
    let config = LoraTrainingConfig {
        learning_rate: 1e-2,
        ..LoraTrainingConfig::default()
    };
    let mut trainer = LoraTrainer::new(unet, &adapter, config).unwrap();
    let reports: Vec<_> = (0..8).map(|_| trainer.step(&batch).unwrap()).collect();
    let losses: Vec<f32> = reports.iter().map(|r| r.loss).collect();
    eprintln!(
        "losses {losses:?}, grad norms {:?}",
        reports.iter().map(|r| r.grad_norm).collect::<Vec<_>>()
    );
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.95 * first, "loss went from {first} to {last}");
    assert!(reports
        .iter()
        .all(|r| r.grad_norm > 0.0 && r.grad_norm.is_finite()));

    let trained = trainer.adapter().unwrap();
    assert_eq!(trained.config(), adapter.config());
    let moved: f32 = trained
        .layers()
        .values()
        .map(|f| f.up.clone().abs().max().into_scalar())
        .fold(0.0, f32::max);
    assert!(moved > 0.0, "the up factors did not move from zero");

    let unet = trainer.into_unet();
    assert_eq!(
        unet.transformer_blocks()[0]
            .attn2
            .to_q
            .base
            .weight
            .val()
            .into_data(),
        base_q
    );
    assert_eq!(
        unet.transformer_blocks()[3]
            .attn2
            .to_out
            .base
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data(),
        base_out_bias
    );
}

#[test]
fn a_bad_batch_is_an_error_and_changes_nothing() {
    let device = Default::default();
    let unet = fixture_unet();
    let adapter = LoraAdapter::init(&LoraConfig::default(), &unet, &device).unwrap();
    let mut trainer = LoraTrainer::new(unet, &adapter, LoraTrainingConfig::default()).unwrap();
    let batch = DenoisingBatch {
        noisy_latents: tensor(1, [2, 4, 8, 8], 1.0),
        timesteps: Tensor::from_floats([10.0, 20.0], &device),
        conditioning: Conditioning::shared(tensor(3, [2, 5, 24], 1.0)),
        target: tensor(2, [2, 4, 8, 4], 1.0),
    };
    assert!(trainer.step(&batch).is_err());
    let bad_context = DenoisingBatch {
        conditioning: Conditioning::shared(tensor(3, [2, 5, 7], 1.0)),
        target: tensor(2, [2, 4, 8, 8], 1.0),
        ..batch
    };
    assert!(trainer.step(&bad_context).is_err());
    assert_eq!(
        trainer.adapter().unwrap().layers().len(),
        adapter.layers().len()
    );
    let bad = LoraTrainingConfig {
        learning_rate: -1.0,
        ..LoraTrainingConfig::default()
    };
    assert!(LoraTrainer::new(fixture_unet(), &adapter, bad).is_err());
}
