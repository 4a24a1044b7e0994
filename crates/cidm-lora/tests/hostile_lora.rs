//! Hostile LoRA files: repeated or garbage keys, factors whose shapes lie, NaN factors, files
//! that are not safetensors. Each is a typed error; then a fuzz run over mutations of the
//! committed PEFT and kohya fixtures, loading against the fixture UNet.

mod common;
#[path = "../../cidm-diffusion/tests/hostile_support/mod.rs"]
mod hostile_support;

use std::time::Duration;

use cidm_lora::{LoraAdapter, LoraError};
use common::{fixtures, unet, B};
use hostile_support::{edits, fuzz, mutate};

const MODULE: &str = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v";

/// A safetensors file from a header and f32 data.
fn file_bytes(header: &str, data: &[f32]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

fn load_bytes(bytes: &[u8]) -> Result<LoraAdapter<B>, LoraError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lora.safetensors");
    std::fs::write(&path, bytes).unwrap();
    LoraAdapter::load(&path, &unet(), &Default::default())
}

/// The shape of the PEFT fixture's factors of `MODULE` (rank, in) and (out, rank).
fn factor_shapes() -> ([usize; 2], [usize; 2]) {
    let weights =
        cidm_diffusion::SafetensorsWeights::open(fixtures().join("peft-lora.safetensors")).unwrap();
    let get = |f: &str| {
        let s = weights.shape(&format!("unet.{MODULE}.{f}.weight")).unwrap();
        [s[0], s[1]]
    };
    (get("lora_A"), get("lora_B"))
}

fn one_module_header(a: [usize; 2], b: [usize; 2], extra: &str) -> String {
    let (na, nb) = (a[0] * a[1] * 4, b[0] * b[1] * 4);
    format!(
        r#"{{"unet.{MODULE}.lora_A.weight":{{"dtype":"F32","shape":[{},{}],"data_offsets":[0,{na}]}},"unet.{MODULE}.lora_B.weight":{{"dtype":"F32","shape":[{},{}],"data_offsets":[{na},{}]}}{extra}}}"#,
        a[0],
        a[1],
        b[0],
        b[1],
        na + nb
    )
}

#[test]
fn a_well_formed_one_module_file_loads() {
    let (a, b) = factor_shapes();
    let data = vec![0.01f32; a[0] * a[1] + b[0] * b[1]];
    load_bytes(&file_bytes(&one_module_header(a, b, ""), &data)).unwrap();
}

#[test]
fn repeated_keys_are_corrupt_files() {
    let (a, b) = factor_shapes();
    let data = vec![0.01f32; a[0] * a[1] + b[0] * b[1]];
    // The same factor named twice with identical info: one would silently win.
    let na = a[0] * a[1] * 4;
    let header = one_module_header(a, b, "").replacen(
        "{",
        &format!(
            r#"{{"unet.{MODULE}.lora_A.weight":{{"dtype":"F32","shape":[{},{}],"data_offsets":[0,{na}]}},"#,
            a[0], a[1]
        ),
        1,
    );
    match load_bytes(&file_bytes(&header, &data)) {
        Err(LoraError::CorruptFile { reason, .. }) => {
            assert!(reason.contains("more than once"), "{reason}")
        }
        other => panic!("expected CorruptFile, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn nan_and_infinite_factors_are_corrupt_files_naming_the_key() {
    let (a, b) = factor_shapes();
    for bad in [f32::NAN, f32::INFINITY] {
        let mut data = vec![0.01f32; a[0] * a[1] + b[0] * b[1]];
        let last = data.len() - 1;
        data[last] = bad;
        match load_bytes(&file_bytes(&one_module_header(a, b, ""), &data)) {
            Err(LoraError::CorruptFile { reason, .. }) => {
                assert!(reason.contains("lora_B"), "{reason}")
            }
            other => panic!("{bad}: expected CorruptFile, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn factor_shapes_that_lie_are_shape_errors() {
    let (a, b) = factor_shapes();
    // Factors of different ranks, a zero rank, and transposed factors: all refused against
    // the model before any tensor is built. (A large but consistent rank is a valid file:
    // its data is present, so memory stays bounded by the file.)
    for (sa, sb) in [
        ([a[0], a[1]], [b[0], a[0] + 1]),
        ([0, a[1]], [b[0], 0]),
        ([a[1], a[0]], [b[1], b[0]]),
    ] {
        let data = vec![0.0f32; sa[0] * sa[1] + sb[0] * sb[1]];
        let err = load_bytes(&file_bytes(&one_module_header(sa, sb, ""), &data))
            .err()
            .unwrap_or_else(|| panic!("{sa:?} {sb:?} loaded"));
        assert!(
            matches!(
                err,
                LoraError::ShapeMismatch { .. } | LoraError::CorruptFile { .. }
            ),
            "{sa:?} {sb:?}: {err}"
        );
    }
}

#[test]
fn garbage_keys_are_typed_errors() {
    let (a, b) = factor_shapes();
    let data = vec![0.0f32; a[0] * a[1] + b[0] * b[1]];
    let header = one_module_header(a, b, "");
    for (from, to) in [
        (format!("unet.{MODULE}"), "unet.../../etc".to_string()),
        (format!("unet.{MODULE}"), "unet.\u{0}\u{7f}".to_string()),
        (
            format!("unet.{MODULE}"),
            format!("unet.{}", "x.".repeat(5000)),
        ),
        ("lora_A.weight".to_string(), "lora_Q.weight".to_string()),
    ] {
        let hostile = header.replace(&from, &to);
        let err = load_bytes(&file_bytes(&hostile, &data))
            .err()
            .unwrap_or_else(|| panic!("{to:.40} loaded"));
        assert!(
            matches!(
                err,
                LoraError::UnknownModule { .. }
                    | LoraError::UnrecognizedKey { .. }
                    | LoraError::CorruptFile { .. }
                    | LoraError::InvalidInput(_)
            ),
            "{to:.40}: {err}"
        );
    }
}

/// Every error a hostile LoRA file may give.
fn is_file_error(e: &LoraError) -> bool {
    matches!(
        e,
        LoraError::CorruptFile { .. }
            | LoraError::UnsupportedDtype { .. }
            | LoraError::UnrecognizedKey { .. }
            | LoraError::UnknownModule { .. }
            | LoraError::MissingFactor { .. }
            | LoraError::ShapeMismatch { .. }
            | LoraError::RankMismatch { .. }
            | LoraError::Unsupported { .. }
            | LoraError::InvalidInput(_)
            | LoraError::InvalidConfig(_)
    )
}

#[test]
fn fuzz_lora_files() {
    let bases: Vec<Vec<u8>> = ["peft-lora.safetensors", "kohya-lora.safetensors"]
        .iter()
        .map(|f| std::fs::read(fixtures().join(f)).unwrap())
        .collect();
    let spans: Vec<usize> = bases
        .iter()
        .map(|b| 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize)
        .collect();
    let model = unet();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lora.safetensors");
    for base in &bases {
        std::fs::write(&path, base).unwrap();
        LoraAdapter::<B>::load(&path, &model, &device).expect("the fixture loads");
    }
    let strategy = (0..2usize, edits(true), proptest::bool::weighted(0.8));
    fuzz(
        "lora",
        10_000,
        Duration::from_secs(15),
        strategy,
        |(which, edits, in_header)| {
            let bytes = mutate(&bases[which], &edits, in_header.then_some(spans[which]));
            std::fs::write(&path, bytes).unwrap();
            match LoraAdapter::<B>::load(&path, &model, &device) {
                Ok(_) => false,
                Err(e) => {
                    assert!(is_file_error(&e), "{e}");
                    true
                }
            }
        },
    );
}
