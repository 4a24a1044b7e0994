//! The exporter names every parameter as the checkpoint layout the project's loader reads:
//! random modules written with `write_model_dir` load back through `StableDiffusion` (which
//! rejects missing, extra and misshaped tensors) and compute exactly the same outputs, since
//! f32 values are stored bit for bit.

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use cidm_diffusion::{
    AutoencoderKL, CLIPTextModel, Conditioning, StableDiffusion, UNet2DConditionModel,
};
use cidm_pretrain::{write_model_dir, Architecture, PretrainConfig};

type B = Flex;

fn tiny() -> PretrainConfig {
    PretrainConfig {
        architecture: Architecture {
            text_hidden: 8,
            text_layers: 1,
            text_heads: 2,
            text_intermediate: 16,
            unet_channels: vec![8, 16],
            unet_cross_attention: vec![true, true],
            unet_layers_per_block: 1,
            unet_heads: 2,
            unet_groups: 4,
            vae_channels: vec![4, 8],
            vae_groups: 2,
            latent_channels: 4,
        },
        ..PretrainConfig::default()
    }
}

fn tokenizer() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/clip-tokenizer")
}

fn max_abs<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar()
}

#[test]
fn written_directory_loads_back_exactly() {
    let config = tiny();
    config.validate().unwrap();
    let device = Default::default();
    let text_encoder = CLIPTextModel::<B>::random(&config.clip_config(), &device).unwrap();
    let unet = UNet2DConditionModel::<B>::random(&config.unet_config(), &device).unwrap();
    let vae = AutoencoderKL::<B>::random(&config.vae_config(1.0), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_model_dir(dir.path(), &text_encoder, &unet, &vae, 0.5, &tokenizer()).unwrap();

    let loaded = StableDiffusion::<B>::from_model_dir(dir.path(), None, &device).unwrap();
    assert_eq!(
        loaded.vae.config().scaling_factor,
        0.5,
        "scaling factor written"
    );
    assert_eq!(
        loaded.tokenizer.vocab_size(),
        49408,
        "the real CLIP vocabulary"
    );

    let ids = loaded
        .tokenizer
        .encode("a red star on the left")
        .unwrap()
        .ids;
    let text = text_encoder.forward(&[&ids], 0).unwrap();
    assert_eq!(
        max_abs(
            text.clone(),
            loaded.text_encoder.forward(&[&ids], 0).unwrap()
        ),
        0.0,
        "text encoder"
    );

    let sample = Tensor::<B, 4>::random([1, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<B, 1>::from_floats([500.0], &device);
    let cond = Conditioning::shared(text);
    assert_eq!(
        max_abs(
            unet.forward(sample.clone(), t.clone(), &cond).unwrap(),
            loaded.unet.forward(sample.clone(), t, &cond).unwrap()
        ),
        0.0,
        "UNet"
    );

    let images = Tensor::<B, 4>::random([1, 3, 8, 8], Distribution::Uniform(-1.0, 1.0), &device);
    assert_eq!(
        max_abs(
            vae.encode(images.clone()).unwrap().mean().clone(),
            loaded.vae.encode(images).unwrap().mean().clone()
        ),
        0.0,
        "VAE encoder"
    );
    assert_eq!(
        max_abs(
            vae.decode(sample.clone()).unwrap(),
            loaded.vae.decode(sample).unwrap()
        ),
        0.0,
        "VAE decoder"
    );
}

/// The model index names the classes diffusers instantiates, and the scheduler config holds
/// SD 1.5's training schedule.
#[test]
fn index_and_scheduler_follow_sd15() {
    let index = cidm_pretrain::model_dir::scheduler_config();
    assert_eq!(index["_class_name"], "DPMSolverMultistepScheduler");
    assert_eq!(index["beta_schedule"], "scaled_linear");
    assert_eq!(index["beta_start"], 0.00085);
    assert_eq!(index["beta_end"], 0.012);
    assert_eq!(index["num_train_timesteps"], 1000);
    assert_eq!(index["prediction_type"], "epsilon");
}
