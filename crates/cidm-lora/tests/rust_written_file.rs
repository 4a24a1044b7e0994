//! A LoRA file written by this crate is reproducible byte for byte and loads in diffusers with
//! the output ours gives.
//!
//! Flow: this test writes the adapter to a temporary file and compares its bytes with the
//! committed tests/fixtures/rust-lora.safetensors (`CIDM_LORA_BLESS=1` rewrites the committed
//! file instead); tools/lora_fixtures.py loads the committed file with diffusers'
//! `load_lora_adapter` (the path `load_lora_weights` takes), checks the injected rank, alpha and
//! factors, and records diffusers' output as `rust.out`, which our UNet must match (max abs
//! error 1e-4).

mod common;

use cidm_lora::{LoraAdapter, LoraConfig, LoraTargets};
use common::{fixtures, max_abs_diff, random_adapter, unet, Golden, B};

const TOLERANCE: f32 = 1e-4;

/// Rank 2, alpha 3 (scale 1.5), self- and cross-attention: exercises the paths, the alpha
/// metadata and `attn1` targets in diffusers.
fn rust_adapter() -> LoraAdapter<B> {
    let config = LoraConfig::new(2, 3.0)
        .with_targets(LoraTargets::AllAttention)
        .with_init_seed(11);
    random_adapter(&unet(), &config, 5)
}

#[test]
fn rust_written_file() {
    let adapter = rust_adapter();
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("rust-lora.safetensors");
    adapter.save(&written).unwrap();
    let committed = fixtures().join("rust-lora.safetensors");
    if std::env::var_os("CIDM_LORA_BLESS").is_some() {
        std::fs::copy(&written, &committed).unwrap();
        eprintln!(
            "blessed {}: now run tools/lora_fixtures.py",
            committed.display()
        );
    }
    let expected =
        std::fs::read(&committed).expect("rust-lora.safetensors: bless it with CIDM_LORA_BLESS=1");
    assert!(
        std::fs::read(&written).unwrap() == expected,
        "the writer's bytes changed: bless with CIDM_LORA_BLESS=1, then run tools/lora_fixtures.py"
    );

    // Lossless round trip.
    let unet = unet();
    let loaded = LoraAdapter::<B>::load(&committed, &unet, &Default::default()).unwrap();
    assert_eq!(loaded.config(), adapter.config());
    for ((pa, a), (pb, b)) in loaded.layers().iter().zip(adapter.layers()) {
        assert_eq!(pa, pb);
        assert_eq!(a.down.to_data(), b.down.to_data());
        assert_eq!(a.up.to_data(), b.up.to_data());
    }

    // diffusers' output with the same file.
    let golden = Golden::open();
    let mut attached = unet;
    loaded.attach(&mut attached).unwrap();
    let err = max_abs_diff(golden.run(&attached), golden.tensor("rust.out"));
    let change = max_abs_diff(golden.tensor::<4>("rust.out"), golden.tensor("base.out"));
    eprintln!("rust file in diffusers: max abs error {err:e}, adapter effect up to {change}");
    assert!(
        change > 0.1,
        "the Rust-written adapter barely changes the output ({change})"
    );
    assert!(
        err < TOLERANCE,
        "max abs error {err} vs diffusers with the Rust-written file"
    );
}
