//! LoRA files written by diffusers / peft (tools/lora_fixtures.py) load onto our UNet and
//! reproduce peft's output on the tiny SD1-style fixture.
//!
//! Tolerance: max abs error 1e-4 on outputs of magnitude ~1 (the LoRA moves the output by up to
//! 0.42). Both sides compute in f32; the base UNet alone differs from diffusers by a few 1e-6,
//! and the adapter adds two small matmuls per projection.

mod common;

use cidm_lora::{LoraAdapter, LoraTargets};
use common::{fixtures, max_abs_diff, unet, FileParts, Golden, B};

const TOLERANCE: f32 = 1e-4;

fn check_against_peft(adapter: &LoraAdapter<B>, what: &str) {
    let golden = Golden::open();
    let expected = golden.tensor::<4>("peft.out");
    let base = unet();

    let mut attached = base.clone();
    adapter.attach(&mut attached).unwrap();
    let err = max_abs_diff(golden.run(&attached), expected.clone());
    eprintln!("{what}, attached: max abs error {err:e} vs peft");
    assert!(
        err < TOLERANCE,
        "{what}, attached: max abs error {err} vs peft"
    );

    let mut merged = base;
    adapter.merge_into(&mut merged, 1.0).unwrap();
    let err = max_abs_diff(golden.run(&merged), expected);
    eprintln!("{what}, merged: max abs error {err:e} vs peft");
    assert!(
        err < TOLERANCE,
        "{what}, merged: max abs error {err} vs peft"
    );
}

/// Isolates failures: without adapters our UNet is diffusers' on these inputs.
#[test]
fn base_output_matches_diffusers() {
    let golden = Golden::open();
    let err = max_abs_diff(golden.run(&unet()), golden.tensor("base.out"));
    let change = max_abs_diff(golden.tensor::<4>("base.out"), golden.tensor("peft.out"));
    eprintln!("base: max abs error {err:e}; the LoRA changes the output by up to {change}");
    assert!(err < TOLERANCE);
    assert!(
        change > 0.1,
        "the golden LoRA barely changes the output ({change})"
    );
}

#[test]
fn peft_file_matches_peft() {
    let unet = unet();
    let adapter = LoraAdapter::<B>::load(
        fixtures().join("peft-lora.safetensors"),
        &unet,
        &Default::default(),
    )
    .unwrap();
    let config = adapter.config();
    assert_eq!((config.rank, config.alpha), (4, 8.0));
    assert_eq!(config.targets, LoraTargets::CrossAttention);
    assert_eq!(adapter.layers().len(), 4 * unet.cross_attention_layers());
    check_against_peft(&adapter, "peft file");
}

/// Kohya keys with per-module `.alpha` scalars, one module with half the alpha and twice the
/// up factor.
#[test]
fn kohya_file_matches_peft() {
    let unet = unet();
    let adapter = LoraAdapter::<B>::load(
        fixtures().join("kohya-lora.safetensors"),
        &unet,
        &Default::default(),
    )
    .unwrap();
    assert_eq!((adapter.config().rank, adapter.config().alpha), (4, 8.0));
    check_against_peft(&adapter, "kohya file");
}

/// The other key conventions of the diffusers ecosystem load the same factors.
#[test]
fn key_and_config_variants_load_the_same_adapter() {
    let unet = unet();
    let device = Default::default();
    let reference =
        LoraAdapter::<B>::load(fixtures().join("peft-lora.safetensors"), &unet, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let peft_fields =
        r#"{"r": 4, "lora_alpha": 8, "target_modules": ["attn2.to_q"], "use_dora": false}"#;

    // diffusers training scripts: `lora.down` / `lora.up`.
    let training = dir.path().join("training.safetensors");
    FileParts::peft()
        .rename(|k| {
            k.replace(".lora_A.weight", ".lora.down.weight")
                .replace(".lora_B.weight", ".lora.up.weight")
        })
        .write(&training);
    // `unet.save_lora_adapter`: no prefix, unprefixed metadata.
    let unprefixed = dir.path().join("unprefixed.safetensors");
    let mut parts = FileParts::peft().rename(|k| k.trim_start_matches("unet.").to_string());
    parts.metadata = Some([("lora_adapter_metadata".to_string(), peft_fields.to_string())].into());
    parts.write(&unprefixed);
    // PEFT `save_pretrained`: `base_model.model.` prefix, config in adapter_config.json.
    let peft_dir = dir.path().join("peft");
    std::fs::create_dir(&peft_dir).unwrap();
    let mut parts = FileParts::peft().rename(|k| k.replace("unet.", "base_model.model."));
    parts.metadata = None;
    parts.write(&peft_dir.join("adapter_model.safetensors"));
    std::fs::write(peft_dir.join("adapter_config.json"), peft_fields).unwrap();

    for path in [
        training,
        unprefixed,
        peft_dir.join("adapter_model.safetensors"),
    ] {
        let adapter = LoraAdapter::<B>::load(&path, &unet, &device).unwrap();
        assert_eq!(adapter.config(), reference.config(), "{}", path.display());
        for ((pa, a), (pb, b)) in adapter.layers().iter().zip(reference.layers()) {
            assert_eq!(pa, pb);
            assert_eq!(a.down.to_data(), b.down.to_data());
            assert_eq!(a.up.to_data(), b.up.to_data());
        }
    }
}

/// Without any config, alpha is the rank (scale 1), as diffusers assumes.
#[test]
fn file_without_config_has_alpha_equal_to_rank() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bare.safetensors");
    let mut parts = FileParts::peft();
    parts.metadata = None;
    parts.write(&path);
    let adapter = LoraAdapter::<B>::load(&path, &unet(), &Default::default()).unwrap();
    assert_eq!((adapter.config().rank, adapter.config().alpha), (4, 4.0));
}

/// Half-precision files load, widened to f32 (error = f16 rounding of the factors).
#[test]
fn half_precision_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f16.safetensors");
    let mut parts = FileParts::peft();
    for (dtype, _, data) in parts.tensors.values_mut() {
        *dtype = safetensors::Dtype::F16;
        *data = data
            .chunks_exact(4)
            .flat_map(|b| {
                half::f16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes()
            })
            .collect();
    }
    parts.write(&path);
    let unet = unet();
    let device = Default::default();
    let half = LoraAdapter::<B>::load(&path, &unet, &device).unwrap();
    let full =
        LoraAdapter::<B>::load(fixtures().join("peft-lora.safetensors"), &unet, &device).unwrap();
    for (a, b) in half.layers().values().zip(full.layers().values()) {
        assert!(max_abs_diff(a.up.clone(), b.up.clone()) < 1e-3);
        assert!(max_abs_diff(a.down.clone(), b.down.clone()) < 1e-3);
    }
}
