//! LoRA training of an f16 model, what a GPU build with the `f16` feature runs, emulated on
//! the CPU: the Flex device's default float type is set to f16 before anything is created, so
//! the loaded UNet is f16 as on `Cuda<f16>`. The adapter's factors and AdamW's moments must
//! stay f32 (`cidm_diffusion::precision`). With f16 factors, AdamW's `sqrt(v) + 1e-8` is
//! `0 + 0` for a zero gradient: the first step turned every down factor (whose gradient is 0
//! while the up factors are 0) into NaN and the up factors into inf, and the second step's
//! loss was NaN. One test in this binary: the device's default dtype is set once per process.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, FloatDType, IntDType, Tensor, TensorData};
use cidm_diffusion::schedulers::{BetaSchedule, DdpmNoiser, SchedulerConfig};
use cidm_diffusion::{Conditioning, ModelDir, UNet2DConditionModel};
use cidm_lora::{DenoisingBatch, LoraAdapter, LoraConfig, LoraTrainer, LoraTrainingConfig};
use common::uniform;

type AB = Autodiff<Flex>;

/// The learning rate of the f32 training test (`training.rs`), so both lower the loss alike.
const LR: f64 = 1e-2;
/// AdamW's default decoupled weight decay.
const WEIGHT_DECAY: f64 = 0.01;

fn tensor<const D: usize>(seed: u64, shape: [usize; D], scale: f32) -> Tensor<AB, D> {
    let count = shape.iter().product();
    Tensor::from_data(
        TensorData::new(uniform(seed, count, scale), shape),
        &Default::default(),
    )
}

fn host(tensor: Tensor<AB, 2>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn an_f16_model_trains_f32_factors() {
    let device = Default::default();
    burn::tensor::set_default_dtypes::<Flex>(&device, FloatDType::F16, IntDType::I64)
        .expect("the first use of the device");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/sd1-model");
    let unet =
        UNet2DConditionModel::<AB>::from_model_dir(&ModelDir::open(root).unwrap(), None, &device)
            .unwrap();
    let base = &unet.transformer_blocks()[0].attn2.to_q.base.weight;
    assert_eq!(
        base.val().dtype(),
        DType::F16,
        "the model is f16, as on Cuda<f16>"
    );

    let adapter = LoraAdapter::init(&LoraConfig::new(4, 4.0), &unet, &device).unwrap();
    for factors in adapter.layers().values() {
        assert_eq!(
            (factors.down.dtype(), factors.up.dtype()),
            (DType::F32, DType::F32)
        );
    }
    let noiser = DdpmNoiser::new(&SchedulerConfig {
        beta_start: 0.00085,
        beta_end: 0.012,
        beta_schedule: BetaSchedule::ScaledLinear,
        ..SchedulerConfig::default()
    })
    .unwrap();
    let batch = DenoisingBatch::from_clean_latents(
        &noiser,
        tensor(1, [2, 4, 8, 8], 1.0),
        tensor(2, [2, 4, 8, 8], 1.7),
        &[150, 600],
        Conditioning::shared(tensor(3, [2, 5, 24], 1.7)),
    )
    .unwrap();
    let config = LoraTrainingConfig {
        learning_rate: LR,
        ..LoraTrainingConfig::default()
    };
    let mut trainer = LoraTrainer::new(unet, &adapter, config).unwrap();

    // Step 1: the up factors are 0, so the down factors' gradient is exactly 0 and AdamW only
    // decays them, `down * (1 - lr * wd)`; each up entry moves by `lr * |g| / (|g| + 1e-8)`,
    // i.e. by the learning rate wherever its gradient is not tiny (Adam's first step).
    let first = trainer.step(&batch).unwrap();
    let stepped = trainer.adapter().unwrap();
    let (mut ups, mut full) = (0usize, 0usize);
    for (path, factors) in stepped.layers() {
        assert_eq!(factors.down.dtype(), DType::F32, "{path}");
        let before = host(adapter.layers()[path].down.clone());
        for (after, before) in host(factors.down.clone()).iter().zip(before) {
            let decayed = before * (1.0 - (LR * WEIGHT_DECAY) as f32);
            assert!(
                (after - decayed).abs() <= 1e-6 * before.abs(),
                "{path}: down went from {before} to {after}, not to {decayed}"
            );
        }
        for up in host(factors.up.clone()) {
            assert!(up.abs() <= (LR as f32) * (1.0 + 1e-5), "{path}: up {up}");
            ups += 1;
            full += usize::from(up.abs() >= 0.99 * LR as f32);
        }
    }
    let share = full as f64 / ups as f64;
    eprintln!(
        "step 1: loss {}, {full} of {ups} up entries moved by the learning rate",
        first.loss
    );
    assert!(
        share > 0.9,
        "only {share} of the up entries moved by the learning rate"
    );

    // Seven more steps lower the loss, as in the f32 training test, and everything stays f32
    // and finite.
    let mut losses = vec![first.loss];
    for _ in 1..8 {
        losses.push(trainer.step(&batch).unwrap().loss);
    }
    eprintln!("losses {losses:?}");
    let (start, end) = (losses[0], *losses.last().unwrap());
    assert!(end < 0.95 * start, "loss went from {start} to {end}");
    for (path, factors) in trainer.adapter().unwrap().layers() {
        for factor in [&factors.down, &factors.up] {
            assert_eq!(factor.dtype(), DType::F32, "{path}");
            assert!(host(factor.clone()).iter().all(|v| v.is_finite()), "{path}");
        }
    }
}
