//! The CLIP model (vision encoder, projections, image processor, text pooling) reproduces
//! transformers' `CLIPModel` and `CLIPImageProcessorPil` on a tiny random model
//! (tools/clip_eval_fixtures.py), and hostile configs give typed errors.
//!
//! Tolerances: preprocessing is exact (Pillow's fixed-point bicubic is reproduced to the byte
//! and the float steps are done in the reference's precisions); embeddings (magnitude ~1-3)
//! within 1e-5 max abs error, both sides computing in f32.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use cidm_diffusion::clip::image_processor::Resize;
use cidm_diffusion::clip::{CLIPConfig, CLIPVisionConfig};
use cidm_diffusion::vae::Rgb8Image;
use cidm_diffusion::{
    CLIPImageProcessor, CLIPModel, CLIPTokenizer, CLIPVisionModel, Error, SafetensorsWeights,
};
use common::{fixtures, max_abs_diff, read, tensor, B};
use serde_json::{json, Value};

const TOLERANCE: f32 = 1e-5;

fn model_dir() -> PathBuf {
    fixtures().join("clip-vit-model")
}

fn io() -> SafetensorsWeights {
    SafetensorsWeights::open(fixtures().join("clip-vit-io.safetensors")).unwrap()
}

/// A list the fixture script stored as JSON in the io file's metadata.
fn metadata_list(key: &str) -> Vec<String> {
    let bytes = std::fs::read(fixtures().join("clip-vit-io.safetensors")).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let map = metadata.metadata().as_ref().expect("metadata");
    let lists: Value = serde_json::from_str(&map["lists"]).unwrap();
    serde_json::from_value(lists[key].clone()).unwrap()
}

/// The RGB bytes transformers converted image `name` to, stored as floats `[h, w, 3]`.
fn rgb(io: &SafetensorsWeights, name: &str) -> Rgb8Image {
    let data = read(io, &format!("{name}.rgb"));
    let (height, width) = (data.shape[0], data.shape[1]);
    let pixels = data
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(|v| v as u8)
        .collect();
    Rgb8Image {
        width,
        height,
        pixels,
    }
}

#[test]
fn preprocessing_matches_transformers_exactly() {
    let io = io();
    let processor = CLIPImageProcessor::from_dir(model_dir()).unwrap();
    assert_eq!(processor.resize, Some(Resize::ShortestEdge(32)));
    assert_eq!(processor.crop, Some((32, 32)));
    for name in metadata_list("images") {
        let image = rgb(&io, &name);
        let (values, h, w) = processor.process(&image).unwrap();
        assert_eq!((h, w), (32, 32));
        let expected = read(&io, &format!("{name}.pixel_values"))
            .to_vec::<f32>()
            .unwrap();
        let err = values
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "{name} ({}x{}): max pixel error {err:e}",
            image.width, image.height
        );
        assert_eq!(err, 0.0, "{name}: preprocessing differs");
    }
}

#[test]
fn image_features_match_transformers() {
    let io = io();
    let device = Default::default();
    let model = CLIPModel::<B>::from_dir(model_dir(), &device).unwrap();
    let processor = CLIPImageProcessor::from_dir(model_dir()).unwrap();
    let logit_scale: Tensor<B, 1> = tensor(&io, "logit_scale");
    assert_eq!(model.logit_scale(), logit_scale.into_scalar());
    let names = metadata_list("images");
    let images: Vec<Rgb8Image> = names.iter().map(|n| rgb(&io, n)).collect();
    // The whole batch through this crate's preprocessing, against transformers' embeddings.
    let ours = model
        .image_features(processor.batch::<B>(&images, &device).unwrap())
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        let expected: Tensor<B, 2> = tensor(&io, &format!("{name}.image_embeds"));
        let scale: f32 = expected.clone().abs().max().into_scalar();
        let err = max_abs_diff(ours.clone().slice(i..i + 1), expected);
        eprintln!("{name}: image embedding error {err:e}, scale {scale}");
        assert!(scale > 0.3, "{name}: degenerate expected embedding");
        assert!(err < TOLERANCE, "{name}: image embedding error {err}");
    }
}

#[test]
fn text_features_and_token_ids_match_transformers() {
    let io = io();
    let device = Default::default();
    let model = CLIPModel::<B>::from_dir(model_dir(), &device).unwrap();
    let tokenizer = CLIPTokenizer::from_folder(model_dir()).unwrap();
    let prompts = metadata_list("prompts");
    let expected_ids = read(&io, "prompts.ids").to_vec::<f32>().unwrap();
    let ids: Vec<Vec<u32>> = tokenizer
        .encode_batch(&prompts)
        .unwrap()
        .into_iter()
        .map(|t| t.ids)
        .collect();
    let flat: Vec<f32> = ids.iter().flatten().map(|&id| id as f32).collect();
    assert_eq!(flat, expected_ids, "token ids differ from transformers'");
    let expected: Tensor<B, 2> = tensor(&io, "prompts.text_embeds");
    let err = max_abs_diff(model.text_features(&ids).unwrap(), expected);
    eprintln!("text embedding error {err:e}");
    assert!(err < TOLERANCE, "text embedding error {err}");
}

/// The vision encoder attends in both directions: changing the last patch changes the class
/// token's output (a causal mask would hide it, since the class token comes first).
#[test]
fn vision_attention_is_not_causal() {
    let device = Default::default();
    let config = CLIPVisionConfig {
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        image_size: 8,
        patch_size: 4,
        ..Default::default()
    };
    let model = CLIPVisionModel::<B>::random(&config, &device).unwrap();
    let pixels: Tensor<B, 4> = Tensor::zeros([1, 3, 8, 8], &device);
    let changed = pixels.clone().slice_assign(
        [0..1, 0..3, 4..8, 4..8],
        Tensor::ones([1, 3, 4, 4], &device),
    );
    let diff = max_abs_diff(
        model.pooled(pixels).unwrap(),
        model.pooled(changed).unwrap(),
    );
    assert!(diff > 1e-4, "the class token did not see the last patch");
    let wrong = Tensor::<B, 4>::zeros([1, 3, 8, 12], &device);
    assert!(matches!(model.pooled(wrong), Err(Error::InvalidInput(_))));
}

fn is_config_error(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidConfig { .. } | Error::UnsupportedConfig { .. } | Error::Json { .. }
    )
}

/// `base` with `edit` applied to its JSON, written to `dir/name`.
fn edited(base: &Path, dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(base).unwrap()).unwrap();
    edit(&mut json);
    let path = dir.join(name);
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn absurd_clip_model_configs_are_rejected_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let base = model_dir().join("config.json");
    let device = Default::default();
    for (section, key, value) in [
        ("vision_config", "image_size", json!(0)),
        ("vision_config", "image_size", json!(1u64 << 40)),
        ("vision_config", "patch_size", json!(0)),
        ("vision_config", "patch_size", json!(64)),
        ("vision_config", "image_size", json!(4096)),
        ("vision_config", "num_channels", json!(4)),
        ("vision_config", "hidden_size", json!(1u64 << 40)),
        ("vision_config", "num_attention_heads", json!(3)),
        (
            "vision_config",
            "num_hidden_layers",
            json!(1_000_000_000u64),
        ),
        ("vision_config", "layer_norm_eps", json!(-1.0)),
        ("vision_config", "hidden_act", json!("relu")),
        ("text_config", "vocab_size", json!(0)),
        ("text_config", "hidden_size", json!("wide")),
        ("", "projection_dim", json!(0)),
        ("", "projection_dim", json!(1u64 << 40)),
    ] {
        let path = edited(&base, dir.path(), "config.json", |json| {
            if section.is_empty() {
                json[key] = value.clone();
            } else {
                json[section][key] = value.clone();
            }
        });
        let err = CLIPConfig::from_file(&path).unwrap_err();
        assert!(is_config_error(&err), "{section}.{key} = {value}: {err}");
        if let Ok(config) =
            serde_json::from_str::<CLIPConfig>(&std::fs::read_to_string(&path).unwrap())
        {
            let err = CLIPModel::<B>::random(&config, &device).unwrap_err();
            assert!(is_config_error(&err), "{section}.{key} = {value}: {err}");
        }
    }
}

#[test]
fn absurd_preprocessor_configs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let base = model_dir().join("preprocessor_config.json");
    for (key, value) in [
        ("resample", json!(2)),
        ("size", json!(0)),
        ("size", json!(1u64 << 40)),
        ("size", json!({"shortest_edge": 224, "longest_edge": 300})),
        ("size", json!({"height": 224})),
        ("crop_size", json!({"height": 0, "width": 224})),
        ("crop_size", json!("big")),
        ("image_mean", json!([0.5, 0.5])),
        ("image_std", json!([0.5, 0.0, 0.5])),
        ("rescale_factor", json!(-1.0)),
    ] {
        let path = edited(&base, dir.path(), "preprocessor_config.json", |json| {
            json[key] = value.clone();
        });
        let err = CLIPImageProcessor::from_file(&path).unwrap_err();
        assert!(is_config_error(&err), "{key} = {value}: {err}");
    }
    // The older layout (numbers instead of dicts) reads as the same steps.
    let path = edited(&base, dir.path(), "preprocessor_config.json", |json| {
        json["size"] = json!(32);
        json["crop_size"] = json!(32);
    });
    assert_eq!(
        CLIPImageProcessor::from_file(path).unwrap(),
        CLIPImageProcessor::from_dir(model_dir()).unwrap()
    );
}

/// A checkpoint with a tensor the config does not use, or without `logit_scale`, is refused.
#[test]
fn mismatched_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = model_dir();
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let stored = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let write = |extra: Option<&str>, drop: &str| {
        let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = stored
            .tensors()
            .into_iter()
            .filter(|(name, _)| name != drop)
            .collect();
        if let Some(extra) = extra {
            let class = stored
                .tensor("vision_model.embeddings.class_embedding")
                .unwrap();
            tensors.push((extra.to_string(), class));
        }
        safetensors::serialize_to_file(tensors, None, &dir.path().join("model.safetensors"))
            .unwrap();
    };
    let device = Default::default();
    write(Some("vision_model.extra"), "");
    assert!(matches!(
        CLIPModel::<B>::from_dir(dir.path(), &device),
        Err(Error::UnusedTensors { .. })
    ));
    write(None, "logit_scale");
    assert!(matches!(
        CLIPModel::<B>::from_dir(dir.path(), &device),
        Err(Error::MissingTensor { .. })
    ));
}
