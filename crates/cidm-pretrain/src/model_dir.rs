//! Writing a trained model as a diffusers Stable Diffusion directory: `model_index.json`, a
//! DPM-Solver++ scheduler config with SD 1.5's training schedule, the CLIP tokenizer files,
//! and `config.json` + safetensors weights for the text encoder, UNet and autoencoder. Every
//! file is written atomically (temporary file, fsync, rename).

use std::path::Path;

use burn::tensor::backend::Backend;
use cidm_diffusion::io::write_atomic;
use cidm_diffusion::{AutoencoderKL, CLIPTextModel, UNet2DConditionModel};
use cidm_lora::tensor_file;
use serde_json::{json, Value};

use crate::error::{PretrainError, Result};
use crate::export::checkpoint;

/// The diffusers version whose layout is written (the one the parity tools use).
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// The tokenizer files copied from the source folder (CLIP ViT-L/14's, as SD 1.5 ships them).
pub const TOKENIZER_FILES: [&str; 4] = [
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// The scheduler config: SD 1.5's training schedule (scaled-linear betas 0.00085 to 0.012
/// over 1000 steps, epsilon prediction, `steps_offset` 1) under the DPM-Solver++ 2M class,
/// which diffusers and this project both sample with.
pub fn scheduler_config() -> Value {
    json!({
        "_class_name": "DPMSolverMultistepScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "algorithm_type": "dpmsolver++",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "lower_order_final": true,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": false,
        "solver_order": 2,
        "solver_type": "midpoint",
        "steps_offset": 1,
        "thresholding": false,
        "trained_betas": null
    })
}

fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

/// `value` (a serialised config object) with extra keys merged in.
fn with_keys(mut value: Value, extra: Value) -> Value {
    if let (Value::Object(map), Value::Object(extra)) = (&mut value, extra) {
        map.extend(extra);
    }
    value
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(write_atomic(path, text.as_bytes())?)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| PretrainError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes the whole directory under `dir` (created if missing; files already there are
/// replaced one by one). The autoencoder's config gets `scaling_factor` (the one measured
/// after training; the module itself may have been built with another). `tokenizer` is a
/// folder holding [`TOKENIZER_FILES`].
pub fn write_model_dir<B: Backend>(
    dir: &Path,
    text_encoder: &CLIPTextModel<B>,
    unet: &UNet2DConditionModel<B>,
    vae: &AutoencoderKL<B>,
    scaling_factor: f64,
    tokenizer: &Path,
) -> Result<()> {
    for sub in ["scheduler", "tokenizer", "text_encoder", "unet", "vae"] {
        create_dir(&dir.join(sub))?;
    }
    write_json(&dir.join("model_index.json"), &model_index())?;
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &scheduler_config(),
    )?;
    for name in TOKENIZER_FILES {
        let source = tokenizer.join(name);
        let bytes = std::fs::read(&source).map_err(|source_err| PretrainError::Io {
            path: source.clone(),
            source: source_err,
        })?;
        write_atomic(&dir.join("tokenizer").join(name), &bytes)?;
    }

    let clip = with_keys(
        serde_json::to_value(text_encoder.config())?,
        json!({
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "projection_dim": text_encoder.config().hidden_size,
            "attention_dropout": 0.0,
            "initializer_factor": 1.0,
            "initializer_range": 0.02,
            "dtype": "float32"
        }),
    );
    write_json(&dir.join("text_encoder/config.json"), &clip)?;
    tensor_file::write(
        &dir.join("text_encoder/model.safetensors"),
        &checkpoint(text_encoder, "text_model")?,
    )?;

    let class = |name: &str| json!({"_class_name": name, "_diffusers_version": DIFFUSERS_VERSION});
    let unet_config = with_keys(
        serde_json::to_value(unet.config())?,
        class("UNet2DConditionModel"),
    );
    write_json(&dir.join("unet/config.json"), &unet_config)?;
    tensor_file::write(
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        &checkpoint(unet, "")?,
    )?;

    let vae_config = with_keys(
        serde_json::to_value(vae.config())?,
        json!({"_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION, "scaling_factor": scaling_factor}),
    );
    write_json(&dir.join("vae/config.json"), &vae_config)?;
    tensor_file::write(
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        &checkpoint(vae, "")?,
    )?;
    tracing::info!(dir = %dir.display(), "wrote the diffusers model directory");
    Ok(())
}
