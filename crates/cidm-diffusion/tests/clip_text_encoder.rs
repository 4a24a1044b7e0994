//! The CLIP text encoder reproduces transformers' `CLIPTextModel` on tiny random models
//! (tools/clip_fixtures.py), its extension points are consistent with its forward pass, and
//! bad configs, checkpoints and inputs give typed errors.
//!
//! Tolerance: max abs error 1e-5 on outputs of magnitude ~3-4. Both sides compute in f32; the
//! difference comes from summation order in matmuls, layer norms and softmax (measured: below
//! 8e-7 on the Flex backend).

mod common;

use std::collections::BTreeMap;

use burn::tensor::{Distribution, Tensor};
use cidm_diffusion::clip::CLIPTextConfig;
use cidm_diffusion::{CLIPTextModel, Error, ModelDir, SafetensorsWeights};
use common::{fixtures, max_abs_diff, read, tensor, B};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const TOLERANCE: f32 = 1e-5;

fn load(name: &str) -> CLIPTextModel<B> {
    let dir = ModelDir::open(fixtures().join(format!("clip-{name}-model"))).unwrap();
    CLIPTextModel::from_model_dir(&dir, None, &Default::default()).unwrap()
}

/// Token ids stored as f32 in the io fixture (exact below 2^24).
fn ids(io: &SafetensorsWeights, name: &str) -> Vec<Vec<u32>> {
    let data = read(io, name);
    let [batch, tokens] = [data.shape[0], data.shape[1]];
    let values = data.to_vec::<f32>().unwrap();
    (0..batch)
        .map(|b| {
            values[b * tokens..(b + 1) * tokens]
                .iter()
                .map(|&v| v as u32)
                .collect()
        })
        .collect()
}

fn check(name: &str) {
    let model = load(name);
    let io =
        SafetensorsWeights::open(fixtures().join(format!("clip-{name}-io.safetensors"))).unwrap();
    for case in ["short", "full"] {
        let ids = ids(&io, &format!("{case}.ids"));
        for (skip, output) in [
            (0, "last_hidden_state"),
            (1, "clip_skip_1"),
            (2, "clip_skip_2"),
        ] {
            let expected: Tensor<B, 3> = tensor(&io, &format!("{case}.{output}"));
            let out = model.forward(&ids, skip).unwrap();
            let err = max_abs_diff(out, expected.clone());
            let scale: f32 = expected.abs().max().into_scalar();
            eprintln!("{name}/{case}/{output}: max abs error {err:e}, output scale {scale}");
            assert!(
                scale > 0.5,
                "{name}/{case}/{output}: degenerate expected output"
            );
            assert!(
                err < TOLERANCE,
                "{name}/{case}/{output}: max abs error {err}"
            );
        }
    }
}

/// quick_gelu, names as transformers 5 writes them (no `text_model.` prefix).
#[test]
fn quick_gelu_model_matches_transformers() {
    check("quick");
}

/// gelu, names of the SD checkpoints (`text_model.` prefix) and the int64 `position_ids`
/// buffer of older checkpoints, which loading accepts and ignores.
#[test]
fn gelu_model_with_position_ids_buffer_matches_transformers() {
    check("gelu");
}

/// Causal attention: padding after a prompt cannot change the prompt's outputs.
#[test]
fn later_tokens_do_not_change_earlier_outputs() {
    let model = load("quick");
    let short = model.forward(&[vec![998u32, 5, 17, 999]], 0).unwrap();
    let padded = model
        .forward(&[vec![998u32, 5, 17, 999, 999, 999, 3]], 0)
        .unwrap();
    let err = max_abs_diff(short, padded.slice([0..1, 0..4]));
    assert!(err < 1e-5, "padding changed earlier tokens by {err}");
}

/// `embed_tokens` + `forward_embeds` is `forward`; substituting a row in the embeddings is
/// the same as giving that row to a new token id (both extension points agree).
#[test]
fn substituted_rows_equal_added_token_rows() {
    let device = Default::default();
    let mut model = load("quick");
    let prompt = [998u32, 10, 20, 30, 999];
    let direct = model.forward(&[prompt], 1).unwrap();
    let split = model
        .forward_embeds(model.embed_tokens(&[prompt]).unwrap(), 1)
        .unwrap();
    assert_eq!(max_abs_diff(direct, split), 0.0);

    let row: Tensor<B, 2> = Tensor::random([1, 32], Distribution::Normal(0.0, 0.5), &device);
    let embeds = model.embed_tokens(&[prompt]).unwrap();
    let substituted = embeds.slice_assign([0..1, 2..3, 0..32], row.clone().unsqueeze::<3>());
    let by_substitution = model.forward_embeds(substituted, 0).unwrap();

    let new_ids = model.add_token_embeddings(row).unwrap();
    assert_eq!(new_ids, 1000..1001);
    assert_eq!(model.vocab_size(), 1001);
    assert_eq!(model.config().vocab_size, 1001);
    let by_id = model
        .forward(&[vec![998u32, 10, 1000, 30, 999]], 0)
        .unwrap();
    let err = max_abs_diff(by_substitution, by_id);
    assert!(err < 1e-6, "substitution and added token differ by {err}");
}

#[test]
fn bad_inputs_are_invalid_input_errors() {
    let mut model = load("quick");
    let device = Default::default();
    let invalid = |result: Result<Tensor<B, 3>, Error>| {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    };
    invalid(model.forward(&[vec![1u32, 1000]], 0)); // id outside the vocabulary
    invalid(model.forward(&[vec![1u32, 2, 3], vec![1, 2]], 0)); // mismatched lengths
    invalid(model.forward(&[vec![1u32; 17]], 0)); // longer than 16 positions
    invalid(model.forward(&[Vec::<u32>::new()], 0)); // no tokens
    invalid(model.forward::<Vec<u32>>(&[], 0)); // no sequences
    invalid(model.forward(&[vec![1u32, 2]], 4)); // clip_skip beyond 3 layers
    invalid(model.forward_embeds(Tensor::zeros([1, 3, 31], &device), 0)); // wrong width
    let err = model
        .add_token_embeddings(Tensor::zeros([1, 31], &device))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    // clip_skip = number of layers gives the embeddings through the final norm.
    model.forward(&[vec![1u32, 2]], 3).unwrap();
}

fn config_error(json: &str) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, json).unwrap();
    CLIPTextConfig::from_file(&path).unwrap_err()
}

#[test]
fn configs_are_validated() {
    let err = config_error(r#"{"hidden_act": "relu"}"#);
    assert!(
        matches!(err, Error::UnsupportedConfig { ref field, .. } if field == "hidden_act"),
        "{err}"
    );
    for json in [
        r#"{"vocab_size": 0}"#,
        r#"{"hidden_size": 100000000}"#,
        r#"{"num_hidden_layers": 100000}"#,
        r#"{"max_position_embeddings": 1000000}"#,
        r#"{"hidden_size": 30, "num_attention_heads": 4}"#,
        r#"{"layer_norm_eps": -1.0}"#,
    ] {
        let err = config_error(json);
        assert!(matches!(err, Error::InvalidConfig { .. }), "{json}: {err}");
    }
    let err = config_error(r#"{"hidden_size": "wide"}"#);
    assert!(matches!(err, Error::Json { .. }), "{err}");
    // Unknown keys are ignored; the presets validate.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"projection_dim": 768, "model_type": "clip_text_model"}"#,
    )
    .unwrap();
    assert_eq!(
        CLIPTextConfig::from_file(&path).unwrap(),
        CLIPTextConfig::default()
    );
    for preset in [CLIPTextConfig::sd15(), CLIPTextConfig::sd21()] {
        let json = serde_json::to_string(&preset).unwrap();
        std::fs::write(&path, json).unwrap();
        assert_eq!(CLIPTextConfig::from_file(&path).unwrap(), preset);
    }
}

/// The gelu fixture's tensors, as (dtype, shape, bytes), to write altered copies.
fn gelu_tensors() -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let path = fixtures().join("clip-gelu-model/text_encoder/model.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
            )
        })
        .collect()
}

fn load_altered(
    alter: impl FnOnce(&mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) -> Result<CLIPTextModel<B>, Error> {
    let mut tensors = gelu_tensors();
    alter(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (dtype, shape, bytes))| {
            (
                k.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let config =
        CLIPTextConfig::from_file(fixtures().join("clip-gelu-model/text_encoder/config.json"))
            .unwrap();
    let weights = SafetensorsWeights::open(&path).unwrap();
    CLIPTextModel::load(&config, &weights, &Default::default())
}

#[test]
fn checkpoints_that_do_not_match_are_typed_errors() {
    // Without the buffer the checkpoint loads too.
    load_altered(|t| {
        t.remove("text_model.embeddings.position_ids");
    })
    .unwrap();
    // A surplus tensor is reported.
    let err = load_altered(|t| {
        let bias = t["text_model.final_layer_norm.bias"].clone();
        t.insert("text_model.extra.bias".into(), bias);
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::UnusedTensors { ref first, .. } if first == "text_model.extra.bias"),
        "{err}"
    );
    // A buffer of the wrong length.
    let err = load_altered(|t| {
        let ids: Vec<u8> = (0..5i64).flat_map(|v| v.to_le_bytes()).collect();
        t.insert(
            "text_model.embeddings.position_ids".into(),
            (Dtype::I64, vec![1, 5], ids),
        );
    })
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // A missing tensor.
    let err = load_altered(|t| {
        t.remove("text_model.encoder.layers.2.mlp.fc2.weight");
    })
    .unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
}

/// The model directory must list the text encoder as a `CLIPTextModel`.
#[test]
fn model_dir_class_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let index = r#"{"text_encoder": ["transformers", "CLIPTextModelWithProjection"]}"#;
    std::fs::write(dir.path().join("model_index.json"), index).unwrap();
    let dir = ModelDir::open(dir.path()).unwrap();
    let err = CLIPTextModel::<B>::from_model_dir(&dir, None, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedConfig { .. }), "{err}");
}
