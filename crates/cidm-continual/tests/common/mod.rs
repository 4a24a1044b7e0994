//! Shared set-up of the training tests: the committed tiny Stable Diffusion directory, a few
//! generated training images and small, fast training settings.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use cidm_continual::{
    read_image_folder, Crop, LatentCache, Method, TaskContext, TaskTrainingConfig,
};
use cidm_diffusion::schedulers::{DdpmNoiser, SchedulerConfig};
use cidm_diffusion::{AutoencoderKL, CLIPTextModel, CLIPTokenizer, ModelDir, UNet2DConditionModel};
use cidm_lora::{LoraConfig, LoraTrainingConfig};

pub type AB = Autodiff<Flex>;

/// The tiny SD directory (random weights, real CLIP BPE tokenizer cut to 1000 tokens; its
/// vocabulary has "king" and "land" as single tokens, used as class words here).
pub fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/pipeline-model")
}

/// Writes `count` 20x16 PNGs of a `colour` square on grey at different places (the trainer
/// resizes them to the model's 16 px and crops).
pub fn write_images(dir: &Path, colour: [u8; 3], count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let image = image::RgbImage::from_fn(20, 16, |x, y| {
            let inside = (x as usize).abs_diff(5 + 3 * i) < 4 && (y as usize).abs_diff(8) < 4;
            image::Rgb(if inside { colour } else { [128, 128, 128] })
        });
        image.save(dir.join(format!("{i}.png"))).unwrap();
    }
}

/// Small, fast settings: rank 2, large learning rates so that a few steps move the loss.
pub fn config(method: Method, steps: usize) -> TaskTrainingConfig {
    TaskTrainingConfig {
        method,
        steps,
        batch_size: 2,
        seed: 7,
        lora: LoraConfig::new(2, 2.0),
        optimizer: LoraTrainingConfig {
            learning_rate: 1e-2,
            ..LoraTrainingConfig::default()
        },
        token_learning_rate: 1e-2,
        checkpoint_every: 2,
        crop: Crop::Random,
        ..TaskTrainingConfig::default()
    }
}

/// A trainer's context for the images in `images` on the tiny model, with no earlier tasks.
pub fn context(images: &Path, template: &str, config: &TaskTrainingConfig) -> TaskContext<AB> {
    let device = Default::default();
    let dir = ModelDir::open(model()).unwrap();
    let unet = UNet2DConditionModel::<AB>::from_model_dir(&dir, None, &device).unwrap();
    let vae = AutoencoderKL::<Flex>::from_model_dir(&dir, None, &device).unwrap();
    let images = read_image_folder(images, Some(template), 16, config.crop).unwrap();
    TaskContext {
        tokenizer: CLIPTokenizer::from_model_dir(&dir).unwrap(),
        text_encoder: CLIPTextModel::from_model_dir(&dir, None, &device).unwrap(),
        unet,
        noiser: DdpmNoiser::new(
            &SchedulerConfig::from_file(model().join("scheduler/scheduler_config.json")).unwrap(),
        )
        .unwrap(),
        data: LatentCache::encode(&vae, &images, 16, &device).unwrap(),
        old_tasks: Vec::new(),
        subspace: None,
    }
}
