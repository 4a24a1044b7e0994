//! Hostile JSON configs (UNet, VAE, CLIP text encoder, scheduler, `model_index.json`): absurd
//! values are refused by validation with typed errors before any model is built, oversized
//! files before they are read; then a fuzz run per file over text mutations and hostile
//! values put into each key of the committed fixtures.

mod common;
mod hostile_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::Tensor;
use cidm_diffusion::schedulers::{SchedulerConfig, SchedulerKind};
use cidm_diffusion::{
    AutoencoderKL, AutoencoderKLConfig, CLIPTextConfig, CLIPTextModel, Error, ModelDir,
    UNet2DConditionConfig, UNet2DConditionModel,
};
use common::{fixtures, B};
use hostile_support::{edits, fuzz, mutate, Mutation};
use proptest::prelude::*;
use serde_json::{json, Value};

fn unet_config() -> PathBuf {
    fixtures().join("pipeline-model/unet/config.json")
}

fn vae_config() -> PathBuf {
    fixtures().join("pipeline-model/vae/config.json")
}

fn clip_config() -> PathBuf {
    fixtures().join("pipeline-model/text_encoder/config.json")
}

fn scheduler_config() -> PathBuf {
    fixtures().join("pipeline-model/scheduler/scheduler_config.json")
}

/// The fixture config with `key` set to `value`, written to `dir/config.json`.
fn with_value(base: &Path, dir: &Path, key: &str, value: Value) -> PathBuf {
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(base).unwrap()).unwrap();
    json[key] = value;
    let path = dir.join("config.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

fn is_config_error(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidConfig { .. } | Error::UnsupportedConfig { .. } | Error::Json { .. }
    )
}

#[test]
fn absurd_unet_configs_are_rejected_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let cases = [
        ("block_out_channels", json!([0, 32])),
        ("block_out_channels", json!([1_000_000_000u64, 32])),
        ("block_out_channels", json!(vec![16; 1000])),
        ("layers_per_block", json!(1_000_000_000u64)),
        ("transformer_layers_per_block", json!(1_000_000_000u64)),
        ("in_channels", json!(0)),
        ("cross_attention_dim", json!(1u64 << 40)),
        ("norm_num_groups", json!(0)),
        ("attention_head_dim", json!(0)),
        ("time_embedding_dim", json!(u64::MAX)),
        ("conv_in_kernel", json!(1_000_001)),
        ("downsample_padding", json!(1_000_000)),
        ("sample_size", json!(1u64 << 30)),
        ("freq_shift", json!(8)),
        ("norm_eps", json!(-1.0)),
        ("layers_per_block", json!(-1)),
        ("block_out_channels", json!("many")),
    ];
    for (key, value) in cases {
        let path = with_value(&unet_config(), dir.path(), key, value.clone());
        let start = Instant::now();
        let err = UNet2DConditionConfig::from_file(&path).unwrap_err();
        assert!(is_config_error(&err), "{key} = {value}: {err}");
        // Building from an unchecked struct validates first, too: no allocation happens.
        if let Ok(config) =
            serde_json::from_str::<UNet2DConditionConfig>(&std::fs::read_to_string(&path).unwrap())
        {
            let err = UNet2DConditionModel::<B>::random(&config, &device).unwrap_err();
            assert!(is_config_error(&err), "{key} = {value}: {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(1), "{key} took long");
    }
}

#[test]
fn absurd_vae_and_clip_configs_are_rejected_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    for (key, value) in [
        ("block_out_channels", json!([])),
        ("block_out_channels", json!([0])),
        ("block_out_channels", json!([1u64 << 40])),
        ("layers_per_block", json!(1_000_000_000u64)),
        ("latent_channels", json!(0)),
        ("norm_num_groups", json!(0)),
        ("scaling_factor", json!(0.0)),
    ] {
        let path = with_value(&vae_config(), dir.path(), key, value.clone());
        let err = AutoencoderKLConfig::from_file(&path).unwrap_err();
        assert!(is_config_error(&err), "vae {key} = {value}: {err}");
        if let Ok(config) =
            serde_json::from_str::<AutoencoderKLConfig>(&std::fs::read_to_string(&path).unwrap())
        {
            assert!(AutoencoderKL::<B>::random(&config, &device).is_err());
        }
    }
    for (key, value) in [
        ("vocab_size", json!(0)),
        ("vocab_size", json!(1_000_000_000u64)),
        ("hidden_size", json!(1u64 << 40)),
        ("num_hidden_layers", json!(1_000_000_000u64)),
        ("num_attention_heads", json!(0)),
        ("num_attention_heads", json!(7)),
        ("max_position_embeddings", json!(1_000_000_000u64)),
        ("layer_norm_eps", json!(0.0)),
        ("hidden_act", json!("relu")),
    ] {
        let path = with_value(&clip_config(), dir.path(), key, value.clone());
        let err = CLIPTextConfig::from_file(&path).unwrap_err();
        assert!(is_config_error(&err), "clip {key} = {value}: {err}");
        if let Ok(config) =
            serde_json::from_str::<CLIPTextConfig>(&std::fs::read_to_string(&path).unwrap())
        {
            assert!(CLIPTextModel::<B>::random(&config, &device).is_err());
        }
    }
}

#[test]
fn absurd_scheduler_configs_are_rejected() {
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(scheduler_config()).unwrap()).unwrap();
    for (key, value) in [
        ("num_train_timesteps", json!(0)),
        // A billion timesteps would be an 8 GB schedule table.
        ("num_train_timesteps", json!(1_000_000_000u64)),
        // Would overflow `i * ratio + steps_offset`.
        ("steps_offset", json!(u64::MAX)),
        ("beta_start", json!(0.0)),
        ("beta_end", json!(1.5)),
        ("clip_sample_range", json!(-1.0)),
        ("solver_order", json!(1_000_000)),
        ("beta_schedule", json!("exotic")),
    ] {
        let mut json = base.clone();
        json[key] = value.clone();
        let err = SchedulerConfig::from_json_str(&json.to_string()).unwrap_err();
        assert!(is_config_error(&err), "{key} = {value}: {err}");
    }
}

#[test]
fn oversized_and_non_text_config_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    // 65 MiB of spaces: over the 64 MiB limit of text files, refused as too large.
    let path = dir.path().join("config.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(65 << 20).unwrap();
    match UNet2DConditionConfig::from_file(&path) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge);
        }
        other => panic!("expected a too-large error, got {other:?}"),
    }
    // Invalid UTF-8 is an I/O error naming the file, not a panic.
    std::fs::write(&path, [0xff, 0xfe, b'{', b'}']).unwrap();
    assert!(matches!(
        UNet2DConditionConfig::from_file(&path),
        Err(Error::Io { .. })
    ));
    // Deep nesting stops at serde_json's recursion limit.
    std::fs::write(&path, "[".repeat(100_000)).unwrap();
    assert!(matches!(
        UNet2DConditionConfig::from_file(&path),
        Err(Error::Json { .. })
    ));
}

/// Values that break assumptions: zero, negatives, huge integers, floats, wrong types.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(2)),
        Just(json!(7)),
        Just(json!(1_000_000_000u64)),
        Just(json!(u64::MAX)),
        Just(json!(0.5)),
        Just(json!(1e308)),
        Just(json!(-1e-300)),
        Just(json!("x")),
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([])),
        Just(json!([0])),
        Just(json!([1_000_000_000u64, 16])),
        Just(json!({})),
    ]
}

/// A hostile edit of a JSON file: byte mutations of its text, or one key set to a hostile
/// value.
#[derive(Debug, Clone)]
enum JsonEdit {
    Bytes(Vec<Mutation>),
    Value(prop::sample::Index, Value),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        edits(false).prop_map(JsonEdit::Bytes),
        (any::<prop::sample::Index>(), hostile_value())
            .prop_map(|(key, value)| JsonEdit::Value(key, value)),
    ]
}

fn apply(text: &str, edit: &JsonEdit) -> Vec<u8> {
    match edit {
        JsonEdit::Bytes(edits) => mutate(text.as_bytes(), edits, None),
        JsonEdit::Value(index, value) => {
            let mut json: Value = serde_json::from_str(text).unwrap();
            let map = json.as_object_mut().unwrap();
            let key = map.keys().nth(index.index(map.len())).unwrap().clone();
            map.insert(key, value.clone());
            json.to_string().into_bytes()
        }
    }
}

/// Fuzzes the file at `base` through `load`, which returns whether the input was rejected.
fn fuzz_json(name: &str, base: &Path, cases: u32, load: impl Fn(&Path) -> bool) {
    let text = std::fs::read_to_string(base).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(base.file_name().unwrap());
    std::fs::write(&path, &text).unwrap();
    assert!(!load(&path), "{name}: the unmutated fixture must load");
    fuzz(name, cases, Duration::from_secs(10), json_edit(), |edit| {
        std::fs::write(&path, apply(&text, &edit)).unwrap();
        load(&path)
    });
}

/// Rejection check for configs: only typed config, JSON or I/O (bad UTF-8) errors.
fn rejected<T>(result: cidm_diffusion::Result<T>) -> bool {
    match result {
        Ok(_) => false,
        Err(e) => {
            assert!(is_config_error(&e) || matches!(e, Error::Io { .. }), "{e}");
            true
        }
    }
}

#[test]
fn fuzz_unet_config() {
    fuzz_json("unet config", &unet_config(), 10_000, |path| {
        let result = UNet2DConditionConfig::from_file(path);
        if let Ok(config) = &result {
            // Whatever passes validation is within the documented bounds.
            assert!(config
                .block_out_channels
                .iter()
                .all(|&c| (1..=8192).contains(&c)));
            assert!((1..=8).contains(&config.block_out_channels.len()));
            assert!((1..=8192).contains(&config.cross_attention_dim));
        }
        rejected(result)
    });
}

#[test]
fn fuzz_vae_config() {
    fuzz_json("vae config", &vae_config(), 10_000, |path| {
        let result = AutoencoderKLConfig::from_file(path);
        if let Ok(config) = &result {
            assert!(config.layers_per_block <= 32 && config.block_out_channels.len() <= 8);
        }
        rejected(result)
    });
}

#[test]
fn fuzz_clip_config() {
    fuzz_json("clip config", &clip_config(), 10_000, |path| {
        let result = CLIPTextConfig::from_file(path);
        if let Ok(config) = &result {
            assert!(config.vocab_size <= 1 << 18 && config.num_hidden_layers <= 128);
        }
        rejected(result)
    });
}

#[test]
fn fuzz_scheduler_config() {
    let device = Default::default();
    fuzz_json("scheduler config", &scheduler_config(), 5000, |path| {
        let result = SchedulerConfig::from_file(path);
        if let Ok(config) = &result {
            // An accepted config builds both samplers or refuses the step count with a typed
            // error, and one step on a tiny latent runs.
            for kind in [SchedulerKind::Ddim, SchedulerKind::DpmSolverMultistep] {
                for steps in [1, 7, 50] {
                    match kind.build::<B>(config, steps) {
                        Ok(mut scheduler) => {
                            let x = Tensor::<B, 4>::zeros([1, 1, 1, 1], &device);
                            scheduler.step(x.clone(), x).unwrap();
                        }
                        Err(e) => assert!(matches!(e, Error::InvalidInput(_)), "{e}"),
                    }
                }
            }
        }
        rejected(result)
    });
}

#[test]
fn fuzz_model_index() {
    let base = fixtures().join("pipeline-model/model_index.json");
    let text = std::fs::read_to_string(&base).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model_index.json");
    let load = |bytes: &[u8]| {
        std::fs::write(&index, bytes).unwrap();
        match ModelDir::open(dir.path()) {
            Ok(model) => {
                // Lookups on whatever was listed are typed results, never panics.
                if let Err(e) = model.component("unet", "UNet2DConditionModel") {
                    assert!(is_config_error(&e), "{e}");
                }
                false
            }
            Err(e) => {
                assert!(matches!(e, Error::Json { .. } | Error::Io { .. }), "{e}");
                true
            }
        }
    };
    assert!(!load(text.as_bytes()));
    fuzz(
        "model_index.json",
        10_000,
        Duration::from_secs(10),
        json_edit(),
        |edit| load(&apply(&text, &edit)),
    );
}

#[test]
fn fuzz_clip_model_config() {
    let base = fixtures().join("clip-vit-model/config.json");
    fuzz_json("clip model config", &base, 5000, |path| {
        let result = cidm_diffusion::CLIPConfig::from_file(path);
        if let Ok(config) = &result {
            let vision = &config.vision_config;
            assert!(vision.image_size <= 4096 && vision.num_positions() <= 1 << 12);
            assert!(config.projection_dim <= 1 << 13);
        }
        rejected(result)
    });
}

#[test]
fn fuzz_clip_preprocessor_config() {
    let base = fixtures().join("clip-vit-model/preprocessor_config.json");
    fuzz_json("clip preprocessor config", &base, 5000, |path| {
        let result = cidm_diffusion::CLIPImageProcessor::from_file(path);
        if let Ok(processor) = &result {
            // Whatever is accepted processes an image (kept small here for time) to the
            // size the config implies.
            let image = cidm_diffusion::vae::Rgb8Image {
                width: 3,
                height: 5,
                pixels: vec![7; 45],
            };
            let (rw, rh) = processor.resized_size(3, 5);
            let (cw, ch) = processor.crop.unwrap_or((rw, rh));
            if rw * rh <= 4096 && cw * ch <= 4096 {
                let (values, h, w) = processor.process(&image).unwrap();
                assert_eq!((values.len(), h, w), (3 * ch * cw, ch, cw));
            }
        }
        rejected(result)
    });
}
