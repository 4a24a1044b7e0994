//! The VAE's config, loading and input checks: a config or checkpoint it cannot honour is a
//! typed error naming the key or tensor, never a different network or a panic.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::vae::distribution::LOGVAR_RANGE;
use cidm_diffusion::{
    AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian, Error, ModelDir, SafetensorsWeights,
};
use common::{fixtures, max_abs_diff, read, B};

fn fixture_config() -> AutoencoderKLConfig {
    AutoencoderKLConfig::from_file(fixtures().join("vae-model/vae/config.json")).unwrap()
}

fn fixture_weights() -> SafetensorsWeights {
    SafetensorsWeights::open(fixtures().join("vae-model/vae/diffusion_pytorch_model.safetensors"))
        .unwrap()
}

/// Parses the fixture config with `extra` keys merged in, from a file as loading does.
fn parse_with(extra: serde_json::Value) -> cidm_diffusion::Result<AutoencoderKLConfig> {
    let dir = tempfile::tempdir().unwrap();
    let mut json = serde_json::to_value(fixture_config()).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        json[k] = v.clone();
    }
    let path = dir.path().join("config.json");
    std::fs::write(&path, json.to_string()).unwrap();
    AutoencoderKLConfig::from_file(&path)
}

fn unsupported_field(extra: serde_json::Value) -> String {
    match parse_with(extra) {
        Err(Error::UnsupportedConfig { field, .. }) => field,
        other => panic!("expected UnsupportedConfig, got {other:?}"),
    }
}

fn is_invalid(extra: serde_json::Value) -> bool {
    matches!(parse_with(extra), Err(Error::InvalidConfig { .. }))
}

/// The upstream SD 1.5 `vae/config.json`, verbatim, parses to the preset.
#[test]
fn sd15_preset_is_the_upstream_config() {
    let upstream = r#"{
      "_class_name": "AutoencoderKL",
      "_diffusers_version": "0.6.0",
      "act_fn": "silu",
      "block_out_channels": [128, 256, 512, 512],
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
      "in_channels": 3,
      "latent_channels": 4,
      "layers_per_block": 2,
      "norm_num_groups": 32,
      "out_channels": 3,
      "sample_size": 512,
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    }"#;
    let parsed: AutoencoderKLConfig = serde_json::from_str(upstream).unwrap();
    let preset = AutoencoderKLConfig::sd15();
    assert_eq!(parsed, preset);
    preset.validate(Path::new("<memory>")).unwrap();
    assert_eq!(preset.downsample_factor(), 8);
    assert_eq!(preset.scaling_factor, 0.18215);
}

#[test]
fn unsupported_values_name_their_key() {
    use serde_json::json;
    let attn_down = json!({"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D", "DownEncoderBlock2D"]});
    assert_eq!(unsupported_field(attn_down), "down_block_types");
    let attn_up =
        json!({"up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "AttnUpDecoderBlock2D"]});
    assert_eq!(unsupported_field(attn_up), "up_block_types");
    assert_eq!(unsupported_field(json!({"act_fn": "gelu"})), "act_fn");
    assert_eq!(
        unsupported_field(json!({"latents_mean": [0.1, 0.2, 0.3, 0.4]})),
        "latents_mean"
    );
    assert_eq!(
        unsupported_field(json!({"latents_std": [1.0, 1.0, 1.0, 1.0]})),
        "latents_std"
    );
}

#[test]
fn absurd_values_are_invalid_configs() {
    use serde_json::json;
    assert!(is_invalid(json!({"norm_num_groups": 5})));
    assert!(is_invalid(json!({"norm_num_groups": 0})));
    assert!(is_invalid(json!({"block_out_channels": []})));
    assert!(is_invalid(json!({"block_out_channels": [8, 12]})));
    assert!(is_invalid(json!({"latent_channels": 0})));
    assert!(is_invalid(json!({"in_channels": 1u64 << 40})));
    assert!(is_invalid(json!({"layers_per_block": 0})));
    assert!(is_invalid(json!({"scaling_factor": 0.0})));
    // Accepted: diffusers' alias of SiLU, no shift, and `force_upcast`, which is ignored.
    assert!(
        parse_with(json!({"act_fn": "swish", "shift_factor": null, "force_upcast": false})).is_ok()
    );
}

/// Copies the fixture weights without `drop` into a fresh model directory.
fn model_dir_without(drop: &str) -> tempfile::TempDir {
    let weights = fixture_weights();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .names()
        .into_iter()
        .filter(|name| *name != drop)
        .map(|name| {
            let data = read(&weights, name);
            let bytes = data
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (name.to_string(), data.shape.to_vec(), bytes)
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (name.as_str(), view)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let vae = dir.path().join("vae");
    std::fs::create_dir(&vae).unwrap();
    std::fs::copy(
        fixtures().join("vae-model/vae/config.json"),
        vae.join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("vae-model/model_index.json"),
        dir.path().join("model_index.json"),
    )
    .unwrap();
    let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    std::fs::write(vae.join("diffusion_pytorch_model.safetensors"), bytes).unwrap();
    dir
}

#[test]
fn a_missing_tensor_is_named() {
    let name = "decoder.mid_block.attentions.0.to_v.bias";
    let dir = model_dir_without(name);
    let model_dir = ModelDir::open(dir.path()).unwrap();
    match AutoencoderKL::<B>::from_model_dir(&model_dir, None, &Default::default()) {
        Err(Error::MissingTensor { tensor, .. }) => assert_eq!(tensor, name),
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
}

/// Weights with mid-block attentions do not fit a config without them.
#[test]
fn surplus_tensors_are_rejected() {
    let config = AutoencoderKLConfig {
        mid_block_add_attention: false,
        ..fixture_config()
    };
    let weights = fixture_weights();
    match AutoencoderKL::<B>::load(&config, &weights, &Default::default()) {
        Err(Error::UnusedTensors { first, count, .. }) => {
            assert_eq!(first, "decoder.mid_block.attentions.0.group_norm.bias");
            assert_eq!(count, 20);
        }
        other => panic!("expected UnusedTensors, got {:?}", other.err()),
    }
}

#[test]
fn the_component_class_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model_index.json"),
        r#"{"vae": ["diffusers", "AutoencoderTiny"]}"#,
    )
    .unwrap();
    let model_dir = ModelDir::open(dir.path()).unwrap();
    let err = AutoencoderKL::<B>::from_model_dir(&model_dir, None, &Default::default()).err();
    assert!(
        matches!(err, Some(Error::UnsupportedConfig { .. })),
        "{err:?}"
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let device = Default::default();
    let config = fixture_config();
    let vae = AutoencoderKL::<B>::random(&config, &device).unwrap();
    let invalid =
        |r: cidm_diffusion::Result<Tensor<B, 4>>| matches!(r, Err(Error::InvalidInput(_)));
    // Wrong channel count, and an image smaller than the downsample factor (4).
    assert!(matches!(
        vae.encode(Tensor::zeros([1, 4, 8, 8], &device)),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        vae.encode(Tensor::zeros([1, 3, 3, 8], &device)),
        Err(Error::InvalidInput(_))
    ));
    assert!(invalid(vae.decode(Tensor::zeros([1, 3, 2, 2], &device))));
    assert!(invalid(vae.encode_latents(
        Tensor::zeros([1, 3, 8, 8], &device),
        Some(Tensor::zeros([1, 4, 3, 2], &device)),
    )));
    assert!(invalid(
        vae.decode_latents(Tensor::zeros([1, 4, 0, 2], &device))
    ));
    let odd = DiagonalGaussian::<B>::from_moments(Tensor::zeros([1, 3, 2, 2], &device));
    assert!(matches!(odd, Err(Error::InvalidInput(_))));
    assert!(cidm_diffusion::to_rgb8::<B>(Tensor::zeros([1, 4, 2, 2], &device)).is_err());
}

/// The log-variance is clamped to [-30, 20] as diffusers does; std and sampling follow it.
#[test]
fn posterior_clamps_logvar() {
    let device = Default::default();
    let moments = Tensor::<B, 4>::from_data(
        TensorData::new(
            vec![1.0f32, -2.0, 0.5, 3.0, -100.0, 100.0, 2.0, -4.0],
            [1, 4, 1, 2],
        ),
        &device,
    );
    let posterior = DiagonalGaussian::from_moments(moments).unwrap();
    let logvar: Vec<f32> = posterior.logvar().clone().into_data().to_vec().unwrap();
    assert_eq!(logvar, vec![-30.0, 20.0, 2.0, -4.0]);
    assert_eq!(LOGVAR_RANGE, (-30.0, 20.0));
    let noise = Tensor::<B, 4>::ones([1, 2, 1, 2], &device);
    let sample: Vec<f32> = posterior
        .sample(noise)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let expected = [
        1.0 + (-15.0f32).exp(),
        -2.0 + 10.0f32.exp(),
        0.5 + 1.0f32.exp(),
        3.0 + (-2.0f32).exp(),
    ];
    for (s, e) in sample.iter().zip(expected) {
        assert!((s - e).abs() <= 1e-5 * e.abs().max(1.0), "{s} vs {e}");
    }
}

/// Without a shift, latents are `z * scaling_factor`; a random model without attention or
/// quant convs builds, round-trips the scaling and keeps the shapes.
#[test]
fn variants_build_and_scaling_round_trips() {
    let device = Default::default();
    let config = AutoencoderKLConfig {
        shift_factor: None,
        scaling_factor: 0.18215,
        mid_block_add_attention: false,
        use_quant_conv: false,
        use_post_quant_conv: false,
        ..fixture_config()
    };
    let vae = AutoencoderKL::<B>::random(&config, &device).unwrap();
    let z = Tensor::<B, 4>::random([2, 4, 3, 5], burn::tensor::Distribution::Default, &device);
    let scaled = vae.scale_latents(z.clone());
    assert!(max_abs_diff(scaled.clone(), z.clone() * 0.18215) < 1e-7);
    assert!(max_abs_diff(vae.unscale_latents(scaled), z.clone()) < 1e-6);
    let images = vae.decode(z).unwrap();
    assert_eq!(images.dims(), [2, 3, 12, 20]);
    let latents = vae.encode_latents(images, None).unwrap();
    assert_eq!(latents.dims(), [2, 4, 3, 5]);
}
