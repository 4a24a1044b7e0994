//! Bad input is a typed error that names what is wrong, never a panic: files that do not fit
//! the model, corrupt files, unsupported LoRA variants, bad configs and gate tensors.

mod common;

use burn::tensor::Tensor;
use cidm_diffusion::{ModelDir, UNet2DConditionModel};
use cidm_lora::{LoraAdapter, LoraConfig, LoraError, LoraStack, LoraTargets};
use common::{fixtures, random_adapter, unet, FileParts, B};

const MODULE: &str = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v";

fn load(parts: &FileParts) -> Result<LoraAdapter<B>, LoraError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lora.safetensors");
    parts.write(&path);
    LoraAdapter::load(&path, &unet(), &Default::default())
}

fn load_bytes(bytes: &[u8]) -> Result<LoraAdapter<B>, LoraError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lora.safetensors");
    std::fs::write(&path, bytes).unwrap();
    LoraAdapter::load(&path, &unet(), &Default::default())
}

fn sd2_unet() -> UNet2DConditionModel<B> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/sd2-model");
    UNet2DConditionModel::from_model_dir(&ModelDir::open(root).unwrap(), None, &Default::default())
        .unwrap()
}

#[test]
fn corrupt_and_missing_files_are_typed_errors() {
    let peft = std::fs::read(fixtures().join("peft-lora.safetensors")).unwrap();
    for bytes in [
        &b""[..],
        &b"not a safetensors file"[..],
        &peft[..peft.len() / 2],
        &peft[..12],
    ] {
        let err = load_bytes(bytes).unwrap_err();
        assert!(matches!(err, LoraError::CorruptFile { .. }), "{err}");
    }
    let mut bad_header = peft.clone();
    bad_header[8] = b'[';
    assert!(matches!(
        load_bytes(&bad_header).unwrap_err(),
        LoraError::CorruptFile { .. }
    ));
    let err = LoraAdapter::<B>::load(
        "/nonexistent/lora.safetensors",
        &unet(),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LoraError::Io { .. }), "{err}");
}

#[test]
fn a_file_for_another_model_names_the_first_mismatch() {
    // The SD2 fixture has one transformer per down block: `attentions.1` does not exist.
    let err = LoraAdapter::<B>::load(
        fixtures().join("peft-lora.safetensors"),
        &sd2_unet(),
        &Default::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LoraError::UnknownModule { .. }), "{text}");
    assert!(
        text.contains(
            "unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.lora_A.weight"
        ),
        "{text}"
    );

    // A factor of the wrong size names the key and both shapes.
    let mut parts = FileParts::peft();
    let key = format!("unet.{MODULE}.lora_A.weight");
    let (_, shape, data) = parts.tensors.get_mut(&key).unwrap();
    *shape = vec![4, 23];
    data.truncate(4 * 23 * 4);
    let err = load(&parts).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("`{key}` has shape [4, 23], the model needs [4, 24]")
    );

    // An in-memory adapter that does not fit changes nothing.
    let adapter = random_adapter(&unet(), &LoraConfig::default(), 1);
    let mut sd2 = sd2_unet();
    let err = adapter.attach(&mut sd2).unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::UnknownModule { .. } | LoraError::ShapeMismatch { .. }
        ),
        "{err}"
    );
    assert!(sd2
        .transformer_blocks()
        .iter()
        .all(|b| b.bank_ranks().is_empty()));
    assert!(adapter.merge_into(&mut sd2, 1.0).is_err());
}

#[test]
fn incomplete_and_inconsistent_files_are_rejected() {
    let mut parts = FileParts::peft();
    parts
        .tensors
        .remove(&format!("unet.{MODULE}.lora_B.weight"));
    let err = load(&parts).unwrap_err();
    assert!(
        matches!(err, LoraError::MissingFactor { ref module, .. } if module == MODULE),
        "{err}"
    );

    let mut parts = FileParts::peft();
    let metadata = parts.metadata.as_mut().unwrap();
    let json = metadata["lora_adapter_metadata"].replace("\"unet.r\": 4", "\"unet.r\": 8");
    metadata.insert("lora_adapter_metadata".into(), json);
    let err = load(&parts).unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::RankMismatch {
                expected: 8,
                found: 4,
                ..
            }
        ),
        "{err}"
    );

    let mut parts = FileParts::peft();
    let metadata = parts.metadata.as_mut().unwrap();
    let json = metadata["lora_adapter_metadata"]
        .replace("\"unet.use_dora\": false", "\"unet.use_dora\": true");
    metadata.insert("lora_adapter_metadata".into(), json);
    let err = load(&parts).unwrap_err();
    assert!(matches!(err, LoraError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("use_dora"));

    let mut parts = FileParts::peft();
    parts
        .metadata
        .as_mut()
        .unwrap()
        .insert("lora_adapter_metadata".into(), "{oops".into());
    assert!(matches!(
        load(&parts).unwrap_err(),
        LoraError::CorruptFile { .. }
    ));

    let mut parts = FileParts::peft();
    let value = parts.tensors.values().next().unwrap().clone();
    parts.tensors.insert("unet.conv_in.weight".into(), value);
    let err = load(&parts).unwrap_err();
    assert!(
        matches!(err, LoraError::UnrecognizedKey { ref key, .. } if key == "unet.conv_in.weight"),
        "{err}"
    );

    let mut parts = FileParts::peft();
    let (_, shape, data) = parts.tensors.values().next().unwrap().clone();
    parts.tensors.insert(
        format!("unet.{MODULE}.alpha"),
        (safetensors::Dtype::I32, vec![], vec![0; 4]),
    );
    parts
        .tensors
        .insert("unet.x".into(), (safetensors::Dtype::F32, shape, data));
    let err = load(&parts).unwrap_err();
    assert!(matches!(err, LoraError::UnsupportedDtype { .. }), "{err}");

    let mut parts = FileParts::peft();
    parts.tensors.retain(|k, _| !k.starts_with("unet."));
    assert!(matches!(
        load(&parts).unwrap_err(),
        LoraError::InvalidInput(_)
    ));
}

#[test]
fn text_encoder_keys_are_skipped() {
    let mut parts = FileParts::peft();
    let value = parts.tensors.values().next().unwrap().clone();
    parts.tensors.insert(
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight".into(),
        value.clone(),
    );
    parts.tensors.insert(
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight".into(),
        value,
    );
    assert_eq!(load(&parts).unwrap().layers().len(), 44);
}

#[test]
fn bad_configs_and_gates_are_rejected() {
    let unet = unet();
    let device = Default::default();
    let init = |config: LoraConfig| LoraAdapter::<B>::init(&config, &unet, &device);
    assert!(matches!(
        init(LoraConfig::new(0, 1.0)),
        Err(LoraError::InvalidConfig(_))
    ));
    assert!(matches!(
        init(LoraConfig::new(4, f64::NAN)),
        Err(LoraError::InvalidConfig(_))
    ));
    for patterns in [vec![], vec![String::new()], vec!["*.attn3.*".to_string()]] {
        let config = LoraConfig::default().with_targets(LoraTargets::Patterns(patterns));
        assert!(matches!(init(config), Err(LoraError::InvalidConfig(_))));
    }

    let a = random_adapter(&unet, &LoraConfig::default(), 1);
    let stack = LoraStack::new(&[a.clone(), a.clone()]).unwrap();
    let err = stack
        .gates(Tensor::from_floats([[1.0, 0.0, 0.0]], &device))
        .unwrap_err();
    assert!(matches!(err, LoraError::InvalidInput(_)), "{err}");
    assert!(matches!(
        LoraStack::<B>::new(&[]),
        Err(LoraError::InvalidInput(_))
    ));
    assert!(a.merge_into(&mut unet.clone(), f64::INFINITY).is_err());

    // Gates too narrow for the banks reach the UNet's own validation: an error, not a panic.
    let mut stacked = unet.clone();
    stack.attach(&mut stacked).unwrap();
    let narrow = Tensor::<B, 2>::from_floats([[1.0, 0.0]], &device);
    let cond = cidm_diffusion::Conditioning::shared(Tensor::zeros([1, 5, 24], &device))
        .with_gates(cidm_diffusion::PerLayer::Shared(narrow));
    let out = stacked.forward(
        Tensor::zeros([1, 4, 8, 8], &device),
        Tensor::from_floats([1.0], &device),
        &cond,
    );
    assert!(out.is_err());

    // Adapters trained on different models do not stack.
    let sd2 = sd2_unet();
    let other = LoraAdapter::<B>::init(&LoraConfig::default(), &sd2, &device).unwrap();
    assert!(matches!(
        LoraStack::new(&[a, other]),
        Err(LoraError::ShapeMismatch { .. })
    ));
}
