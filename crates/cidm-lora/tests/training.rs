//! Training on burn's autodiff backend: a few AdamW steps of a LoRA on the tiny UNet lower the
//! denoising loss on a fixed batch, and nothing but the adapter's factors changes.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::schedulers::{BetaSchedule, DdpmNoiser, SchedulerConfig};
use cidm_diffusion::{Conditioning, ModelDir, UNet2DConditionModel};
use cidm_lora::{
    attached_banks, DenoisingBatch, LoraAdapter, LoraConfig, LoraTrainer, LoraTrainingConfig,
};
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

fn factors(adapter: &LoraAdapter<AB>) -> Vec<Vec<f32>> {
    adapter
        .layers()
        .values()
        .flat_map(|f| [f.down.clone(), f.up.clone()])
        .map(|t| t.into_data().to_vec::<f32>().unwrap())
        .collect()
}

/// A trainer rebuilt from the trained adapter and its named optimizer state (new parameter
/// ids) takes exactly the step the original takes: what resuming from a checkpoint needs.
/// Without the state, AdamW's first step differs (bias correction starts over), which shows
/// the state is really used.
#[test]
fn optimizer_state_restores_into_a_rebuilt_trainer() {
    let device = Default::default();
    let unet = fixture_unet();
    let adapter = LoraAdapter::init(&LoraConfig::new(2, 2.0), &unet, &device).unwrap();
    let batch = DenoisingBatch::from_clean_latents(
        &sd15_noiser(),
        tensor(1, [1, 4, 8, 8], 1.0),
        tensor(2, [1, 4, 8, 8], 1.7),
        &[300],
        Conditioning::shared(tensor(3, [1, 5, 24], 1.7)),
    )
    .unwrap();
    let config = LoraTrainingConfig {
        learning_rate: 1e-2,
        ..LoraTrainingConfig::default()
    };
    let mut original = LoraTrainer::new(unet, &adapter, config.clone()).unwrap();
    for _ in 0..3 {
        original.step(&batch).unwrap();
    }
    let state = original.optimizer_state();
    assert_eq!(state.len(), 2 * adapter.layers().len());
    assert!(state.values().all(|m| m.time == 3));
    let trained = original.adapter().unwrap();

    let mut resumed = LoraTrainer::new(fixture_unet(), &trained, config.clone()).unwrap();
    resumed.load_optimizer_state(&state).unwrap();
    let mut fresh = LoraTrainer::new(fixture_unet(), &trained, config).unwrap();
    original.step(&batch).unwrap();
    resumed.step(&batch).unwrap();
    fresh.step(&batch).unwrap();
    let expected = factors(&original.adapter().unwrap());
    assert_eq!(factors(&resumed.adapter().unwrap()), expected);
    assert_ne!(factors(&fresh.adapter().unwrap()), expected);

    let mut wrong = state.clone();
    let (name, moments) = wrong.pop_first().unwrap();
    wrong.insert(format!("{name}.typo"), moments);
    assert!(resumed.load_optimizer_state(&wrong).is_err());
}

/// A fresh trainer on the fixture, its initial adapter, and a batch whose target is scaled by
/// `target_scale`.
fn fresh_trainer(target_scale: f32) -> (LoraTrainer<AB>, LoraAdapter<AB>, DenoisingBatch<AB>) {
    let device = Default::default();
    let unet = fixture_unet();
    let adapter = LoraAdapter::init(&LoraConfig::new(2, 2.0), &unet, &device).unwrap();
    let trainer = LoraTrainer::new(unet, &adapter, LoraTrainingConfig::default()).unwrap();
    let batch = DenoisingBatch {
        noisy_latents: tensor(1, [1, 4, 8, 8], 1.0),
        timesteps: Tensor::from_floats([10.0], &device),
        conditioning: Conditioning::shared(tensor(3, [1, 5, 24], 1.0)),
        target: tensor(2, [1, 4, 8, 8], 1.0).mul_scalar(target_scale),
    };
    (trainer, adapter, batch)
}

/// A NaN in the batch is a typed error and updates nothing.
#[test]
fn a_non_finite_loss_is_an_error_and_changes_nothing() {
    let (mut trainer, adapter, batch) = fresh_trainer(f32::NAN);
    let error = trainer.step(&batch).unwrap_err();
    assert!(
        matches!(error, cidm_lora::LoraError::NonFiniteLoss { .. }),
        "{error}"
    );
    assert!(trainer.optimizer_state().is_empty());
    assert_eq!(factors(&trainer.adapter().unwrap()), factors(&adapter));
}

/// A finite loss whose gradients are not (as an f16 overflow in the backward pass gives) is the
/// same error and updates nothing either. The extra term `sqrt(sum(up^2))` is 0 at the initial
/// up factors (all 0), and its gradient `0.5 / sqrt(0) * 2 up` is `inf * 0 = NaN`.
#[test]
fn a_non_finite_gradient_is_an_error_and_changes_nothing() {
    let (mut trainer, adapter, batch) = fresh_trainer(1.0);
    let error = trainer
        .step_with(&batch, |unet| {
            let (_, bank) = attached_banks(unet).into_iter().next().unwrap();
            Ok(Some(bank.up.val().powi_scalar(2).sum().sqrt()))
        })
        .map(|(report, _)| report)
        .unwrap_err();
    let cidm_lora::LoraError::NonFiniteLoss {
        denoise,
        regularizer,
        grad_norm,
    } = error
    else {
        panic!("expected NonFiniteLoss, got {error}");
    };
    assert!(denoise.is_finite() && regularizer == 0.0, "{error}");
    assert!(grad_norm.is_nan(), "{error}");
    assert!(trainer.optimizer_state().is_empty());
    assert_eq!(factors(&trainer.adapter().unwrap()), factors(&adapter));
}

/// `0.5 * sum(down^2)` of the first attached bank: a term with a known value and gradient.
fn half_squared_first_down(unet: &UNet2DConditionModel<AB>) -> Tensor<AB, 1> {
    let (_, bank) = attached_banks(unet).into_iter().next().unwrap();
    bank.down.val().powi_scalar(2).sum().mul_scalar(0.5)
}

/// The report holds the step's own numbers, read back in one piece: the denoising loss, the
/// extra term's value, and the global L2 norm of the factors' gradients of their sum, each
/// computed again here with burn's autodiff on the model as it was before the step.
#[test]
fn the_report_holds_the_loss_terms_and_the_gradient_norm() {
    let (mut trainer, _, batch) = fresh_trainer(1.0);
    let unet = trainer.unet().clone();
    let prediction = unet
        .forward(
            batch.noisy_latents.clone(),
            batch.timesteps.clone(),
            &batch.conditioning,
        )
        .unwrap();
    let denoise = (prediction - batch.target.clone()).powi_scalar(2).mean();
    let term = half_squared_first_down(&unet);
    let grads = (denoise.clone() + term.clone()).backward();
    let squared_norm: f32 = attached_banks(&unet)
        .iter()
        .flat_map(|(_, bank)| [bank.down.val(), bank.up.val()])
        .filter_map(|factor| factor.grad(&grads))
        .map(|g| g.powi_scalar(2).sum().into_scalar())
        .sum();
    let expected = [
        denoise.into_scalar(),
        term.into_scalar(),
        squared_norm.sqrt(),
    ];

    let (report, _) = trainer
        .step_with(&batch, |unet| Ok(Some(half_squared_first_down(unet))))
        .unwrap();
    let got = [report.loss, report.regularizer, report.grad_norm];
    for (name, (got, want)) in ["loss", "regularizer", "grad_norm"]
        .iter()
        .zip(got.into_iter().zip(expected))
    {
        assert!(want > 0.0, "{name}: {want}");
        assert!(
            (got - want).abs() <= 1e-4 * want,
            "{name}: {got} against {want}"
        );
    }
}
