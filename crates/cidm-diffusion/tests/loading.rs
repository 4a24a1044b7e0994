//! Loading diffusers weights: reduced-precision and sharded files, and a typed error naming
//! the file and tensor for every way a checkpoint can be wrong.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cidm_diffusion::{
    Error, ModelDir, SafetensorsWeights, UNet2DConditionConfig, UNet2DConditionModel,
};
use common::{fixtures, read, B};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn unet_dir(model: &str) -> PathBuf {
    fixtures().join(format!("{model}-model")).join("unet")
}

fn sd1_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig::from_file(unet_dir("sd1").join("config.json")).unwrap()
}

/// All tensors of a weights file as (dtype, shape, little-endian bytes).
fn all_tensors(path: &Path) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let weights = SafetensorsWeights::open(path).unwrap();
    weights
        .names()
        .into_iter()
        .map(|name| {
            let data = read(&weights, name);
            let bytes = data
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (name.to_string(), (Dtype::F32, data.shape.to_vec(), bytes))
        })
        .collect()
}

fn write(path: &Path, tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (dtype, shape, bytes))| {
            (
                k.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn sd1_tensors() -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    all_tensors(&unet_dir("sd1").join("diffusion_pytorch_model.safetensors"))
}

fn load_from(
    tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
) -> (
    tempfile::TempDir,
    cidm_diffusion::Result<UNet2DConditionModel<B>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    write(&path, tensors);
    let result = SafetensorsWeights::open(&path)
        .and_then(|w| UNet2DConditionModel::load(&sd1_config(), &w, &Default::default()));
    (dir, result)
}

/// f16 (written by diffusers' `variant="fp16"`) and bf16 (written by safetensors) files read
/// back as exactly the f32 weights rounded to that precision by the `half` crate.
#[test]
fn f16_and_bf16_files_read_as_rounded_f32() {
    let f32_weights =
        SafetensorsWeights::open(unet_dir("sd2").join("diffusion_pytorch_model.safetensors"))
            .unwrap();
    let f16_weights =
        SafetensorsWeights::open(unet_dir("sd2").join("diffusion_pytorch_model.fp16.safetensors"))
            .unwrap();
    let bf16_weights =
        SafetensorsWeights::open(unet_dir("sd2").join("diffusion_pytorch_model.bf16.safetensors"))
            .unwrap();
    assert_eq!(f32_weights.names(), f16_weights.names());
    assert_eq!(f32_weights.names(), bf16_weights.names());
    for name in f32_weights.names() {
        let full = read(&f32_weights, name);
        let full = full.as_slice::<f32>().unwrap();
        let halves = read(&f16_weights, name);
        let brains = read(&bf16_weights, name);
        for ((x, h), b) in full
            .iter()
            .zip(halves.as_slice::<f32>().unwrap())
            .zip(brains.as_slice::<f32>().unwrap())
        {
            assert_eq!(half::f16::from_f32(*x).to_f32(), *h, "{name}");
            assert_eq!(half::bf16::from_f32(*x).to_f32(), *b, "{name}");
        }
    }
    let dir = ModelDir::open(fixtures().join("sd2-model")).unwrap();
    for variant in ["fp16", "bf16"] {
        UNet2DConditionModel::<B>::from_model_dir(&dir, Some(variant), &Default::default())
            .unwrap();
    }
}

#[test]
fn sharded_weights_load_like_a_single_file() {
    let tensors = sd1_tensors();
    let dir = tempfile::tempdir().unwrap();
    type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;
    let (mut first, mut second) = (Tensors::new(), Tensors::new());
    for (i, (name, tensor)) in tensors.into_iter().enumerate() {
        if i % 2 == 0 { &mut first } else { &mut second }.insert(name, tensor);
    }
    write(&dir.path().join("a.safetensors"), &first);
    write(&dir.path().join("b.safetensors"), &second);
    let weight_map: BTreeMap<&String, &str> = first
        .keys()
        .map(|k| (k, "a.safetensors"))
        .chain(second.keys().map(|k| (k, "b.safetensors")))
        .collect();
    let index = dir
        .path()
        .join("diffusion_pytorch_model.safetensors.index.json");
    std::fs::write(
        &index,
        serde_json::json!({ "metadata": {}, "weight_map": weight_map }).to_string(),
    )
    .unwrap();
    let weights = ModelDir::weights(dir.path(), "diffusion_pytorch_model", None).unwrap();
    UNet2DConditionModel::<B>::load(&sd1_config(), &weights, &Default::default()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors = sd1_tensors();
    tensors.remove("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    let (_dir, result) = load_from(&tensors);
    match result.unwrap_err() {
        Error::MissingTensor { tensor, path } => {
            assert_eq!(
                tensor,
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
            );
            assert!(path.ends_with("weights.safetensors"));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn surplus_tensor_is_named() {
    let mut tensors = sd1_tensors();
    tensors.insert("zz_extra.weight".into(), (Dtype::F32, vec![2], vec![0; 8]));
    let (_dir, result) = load_from(&tensors);
    match result.unwrap_err() {
        Error::UnusedTensors { count, first, .. } => {
            assert_eq!((count, first.as_str()), (1, "zz_extra.weight"))
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let mut tensors = sd1_tensors();
    let entry = tensors.get_mut("conv_in.weight").unwrap();
    entry.1 = vec![16, 4, 9];
    let (_dir, result) = load_from(&tensors);
    match result.unwrap_err() {
        Error::ShapeMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "conv_in.weight");
            assert_eq!(expected, vec![16, 4, 3, 3]);
            assert_eq!(found, vec![16, 4, 9]);
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn unsupported_dtype_is_named() {
    let mut tensors = sd1_tensors();
    tensors.get_mut("conv_in.bias").unwrap().0 = Dtype::I32;
    let (_dir, result) = load_from(&tensors);
    assert!(
        matches!(result.unwrap_err(), Error::UnsupportedDtype { tensor, .. } if tensor == "conv_in.bias")
    );
}

#[test]
fn corrupt_and_missing_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    let bytes = std::fs::read(unet_dir("sd1").join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        SafetensorsWeights::open(&path).unwrap_err(),
        Error::CorruptWeights { .. }
    ));
    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    assert!(matches!(
        SafetensorsWeights::open(&path).unwrap_err(),
        Error::CorruptWeights { .. }
    ));
    assert!(matches!(
        SafetensorsWeights::open(dir.path().join("absent")).unwrap_err(),
        Error::Io { .. }
    ));
    assert!(matches!(
        ModelDir::open(dir.path().join("absent")).unwrap_err(),
        Error::Io { .. }
    ));
    assert!(
        matches!(ModelDir::open(dir.path()).unwrap_err(), Error::Io { .. }),
        "no model_index.json"
    );
}

#[test]
fn unsupported_and_invalid_configs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(unet_dir("sd1").join("config.json")).unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("class_embed_type", "timestep".into(), "unsupported"),
        ("addition_embed_type", "text_time".into(), "unsupported"),
        ("act_fn", "gelu".into(), "unsupported"),
        (
            "down_block_types",
            serde_json::json!([
                "SimpleCrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D"
            ]),
            "unsupported",
        ),
        (
            "block_out_channels",
            serde_json::json!([16, 0, 32]),
            "invalid",
        ),
        ("norm_num_groups", 7.into(), "invalid"),
        ("layers_per_block", 1_000_000_000.into(), "invalid"),
        ("attention_head_dim", serde_json::json!([4, 4]), "invalid"),
        ("in_channels", "four".into(), "json"),
    ];
    for (field, value, kind) in cases {
        let mut config = base.clone();
        config[field] = value.clone();
        std::fs::write(&path, config.to_string()).unwrap();
        let err = UNet2DConditionConfig::from_file(&path).unwrap_err();
        let ok = match kind {
            "unsupported" => matches!(err, Error::UnsupportedConfig { .. }),
            "invalid" => matches!(err, Error::InvalidConfig { .. }),
            _ => matches!(err, Error::Json { .. }),
        };
        assert!(ok, "{field} = {value}: got {err}");
        assert!(
            err.to_string().contains("config.json"),
            "error does not name the file: {err}"
        );
    }
}

/// The presets equal the upstream `unet/config.json` files (copied under fixtures/upstream).
#[test]
fn presets_match_their_upstream_configs() {
    let upstream = fixtures().join("upstream");
    assert_eq!(
        UNet2DConditionConfig::from_file(upstream.join("sd15-unet-config.json")).unwrap(),
        UNet2DConditionConfig::sd15()
    );
    assert_eq!(
        UNet2DConditionConfig::from_file(upstream.join("sd21-unet-config.json")).unwrap(),
        UNet2DConditionConfig::sd21()
    );
}

/// SD 1.5's block structure (narrowed to small widths so the test stays cheap) has the 16
/// cross-attention layers METHOD.md counts: 2 x 3 down, 1 mid, 3 x 3 up.
#[test]
fn sd15_structure_has_16_cross_attention_layers() {
    let config = UNet2DConditionConfig {
        block_out_channels: vec![32, 32, 64, 64],
        cross_attention_dim: 8,
        norm_num_groups: 8,
        ..UNet2DConditionConfig::sd15()
    };
    let unet = UNet2DConditionModel::<B>::random(&config, &Default::default()).unwrap();
    assert_eq!(unet.cross_attention_layers(), 16);
}
