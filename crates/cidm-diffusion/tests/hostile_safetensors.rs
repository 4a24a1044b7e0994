//! Hostile safetensors files: each way a header can lie gives a typed error naming the file
//! (and the tensor where there is one), never a panic or an allocation sized by the header;
//! then a fuzz run over mutations of a committed fixture.

mod common;
mod hostile_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cidm_diffusion::{Error, ModelDir, SafetensorsWeights, UNet2DConditionModel};
use common::{fixtures, B};
use hostile_support::{edits, fuzz, mutate};

/// A file from a header (JSON text) and a data section.
fn file_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn open_bytes(dir: &Path, bytes: &[u8]) -> cidm_diffusion::Result<SafetensorsWeights> {
    let path = dir.join("w.safetensors");
    std::fs::write(&path, bytes).unwrap();
    SafetensorsWeights::open(path)
}

fn corrupt_reason(result: cidm_diffusion::Result<SafetensorsWeights>) -> String {
    match result {
        Err(Error::CorruptWeights { reason, path }) => {
            assert!(path.ends_with("w.safetensors"), "{path:?}");
            reason
        }
        other => panic!("expected CorruptWeights, got {other:?}"),
    }
}

/// Two f32 values of tensor `a` of shape [2]: the valid file the cases below corrupt.
const VALID: &str = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;

#[test]
fn the_valid_base_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let weights = open_bytes(dir.path(), &file_bytes(VALID, &data)).unwrap();
    let values = weights.read_f32("a", &[2]).unwrap();
    assert_eq!(values.as_slice::<f32>().unwrap(), &[1.5, -2.0]);
}

#[test]
fn lying_header_lengths_are_rejected_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let good = file_bytes(VALID, &[0; 8]);
    // u64::MAX, past the 100 MB header cap, one past the file, and zero.
    for claimed in [u64::MAX, 100_000_001, good.len() as u64 - 7, 0] {
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(&claimed.to_le_bytes());
        let reason = corrupt_reason(open_bytes(dir.path(), &bytes));
        assert!(!reason.is_empty(), "header length {claimed}");
    }
    // Shorter than the 8-byte prefix, and empty.
    for bytes in [&good[..5], &[][..]] {
        corrupt_reason(open_bytes(dir.path(), bytes));
    }
}

#[test]
fn offsets_outside_the_data_or_overlapping_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // Past the end of the data section.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#,
        // Reversed.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
        // Two tensors over the same bytes.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        // Overlapping by half.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        // Shape and byte range disagree.
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        // Offsets near u64::MAX.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615]}}"#,
    ];
    for header in cases {
        let reason = corrupt_reason(open_bytes(dir.path(), &file_bytes(header, &[0; 8])));
        assert!(!reason.is_empty(), "{header}");
    }
}

#[test]
fn shapes_whose_size_overflows_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // 2^40 * 2^40 elements overflow usize; 2^62 * 4 bytes overflow the byte count.
    for shape in ["[1099511627776,1099511627776]", "[4611686018427387904]"] {
        let header = format!(r#"{{"a":{{"dtype":"F32","shape":{shape},"data_offsets":[0,8]}}}}"#);
        let reason = corrupt_reason(open_bytes(dir.path(), &file_bytes(&header, &[0; 8])));
        assert!(reason.contains("overflow"), "{shape}: {reason}");
    }
}

#[test]
fn unknown_and_unsupported_dtypes_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A name the format does not define: the header does not parse.
    let header = r#"{"a":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}"#;
    corrupt_reason(open_bytes(dir.path(), &file_bytes(header, &[0; 8])));
    // A defined dtype this loader does not read: opening works, reading names the tensor.
    let header = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
    let weights = open_bytes(dir.path(), &file_bytes(header, &[0; 8])).unwrap();
    match weights.read_f32("a", &[1]) {
        Err(Error::UnsupportedDtype { tensor, dtype, .. }) => {
            assert_eq!((tensor.as_str(), dtype.as_str()), ("a", "I64"));
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
}

#[test]
fn a_repeated_tensor_name_is_rejected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    // Same name twice with identical (valid) info: the safetensors crate alone would keep
    // one silently.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let reason = corrupt_reason(open_bytes(dir.path(), &file_bytes(header, &[0; 8])));
    assert!(
        reason.contains("`a`") && reason.contains("more than once"),
        "{reason}"
    );
    // A repeat followed by other entries (the scan must read past it).
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let reason = corrupt_reason(open_bytes(dir.path(), &file_bytes(header, &[0; 8])));
    assert!(
        reason.contains("`a`") && reason.contains("more than once"),
        "{reason}"
    );
}

#[test]
fn non_finite_weights_are_refused_at_load_naming_the_tensor_and_index() {
    let dir = tempfile::tempdir().unwrap();
    // f32 NaN at index 1; f16 +inf (0x7c00) at index 0; bf16 -inf (0xff80) at index 1.
    let cases: [(&str, Vec<u8>, usize); 3] = [
        (
            "F32",
            [1.0f32, f32::NAN]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            1,
        ),
        ("F16", vec![0x00, 0x7c, 0x00, 0x3c, 0, 0, 0, 0], 0),
        ("BF16", vec![0x80, 0x3f, 0x80, 0xff, 0, 0, 0, 0], 1),
    ];
    for (dtype, data, bad) in cases {
        let count = if dtype == "F32" { 2 } else { 4 };
        let header =
            format!(r#"{{"w":{{"dtype":"{dtype}","shape":[{count}],"data_offsets":[0,8]}}}}"#);
        let weights = open_bytes(dir.path(), &file_bytes(&header, &data)).unwrap();
        match weights.read_f32("w", &[count]) {
            Err(Error::NonFiniteWeight { tensor, index, .. }) => {
                assert_eq!((tensor.as_str(), index), ("w", bad), "{dtype}");
            }
            other => panic!("{dtype}: expected NonFiniteWeight, got {other:?}"),
        }
    }
}

#[test]
fn a_truncated_checkpoint_is_rejected() {
    let path = fixtures()
        .join("pipeline-model")
        .join("text_encoder")
        .join("model.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for keep in [bytes.len() - 1, bytes.len() / 2, 100, 9] {
        corrupt_reason(open_bytes(dir.path(), &bytes[..keep]));
    }
}

#[test]
fn a_shard_index_that_lies_or_escapes_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("s1.safetensors"), file_bytes(VALID, &data)).unwrap();
    let index = dir.path().join("w.safetensors.index.json");
    let open = |map: &str| {
        std::fs::write(&index, format!(r#"{{"weight_map":{map}}}"#)).unwrap();
        SafetensorsWeights::open_sharded(&index)
    };
    assert!(open(r#"{"a":"s1.safetensors"}"#).is_ok());
    // A tensor the shard does not hold.
    assert!(matches!(
        open(r#"{"a":"s1.safetensors","b":"s1.safetensors"}"#),
        Err(Error::CorruptWeights { .. })
    ));
    // Names that leave the folder or are not file names.
    for shard in ["../s1.safetensors", "/etc/passwd", "", ".", "sub\\\\s1"] {
        let map = format!(r#"{{"a":"{shard}"}}"#);
        assert!(
            matches!(open(&map), Err(Error::InvalidConfig { .. })),
            "{shard}"
        );
    }
}

/// The tensor errors a well-formed but hostile checkpoint may legitimately give when a model
/// is built from it.
fn is_weights_error(e: &Error) -> bool {
    matches!(
        e,
        Error::CorruptWeights { .. }
            | Error::MissingTensor { .. }
            | Error::ShapeMismatch { .. }
            | Error::UnsupportedDtype { .. }
            | Error::UnusedTensors { .. }
            | Error::NonFiniteWeight { .. }
    )
}

/// A copy of the tiny pipeline's UNet folder whose weights are `bytes`.
fn unet_dir_with(root: &Path, bytes: &[u8]) -> PathBuf {
    let src = fixtures().join("pipeline-model");
    std::fs::create_dir_all(root.join("unet")).unwrap();
    std::fs::copy(src.join("model_index.json"), root.join("model_index.json")).unwrap();
    std::fs::copy(src.join("unet/config.json"), root.join("unet/config.json")).unwrap();
    std::fs::write(root.join("unet/diffusion_pytorch_model.safetensors"), bytes).unwrap();
    root.to_path_buf()
}

/// Header length of a safetensors file: mutations are focused on the header, where a flip
/// changes structure rather than one weight.
fn header_span(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn fuzz_safetensors_header_and_data() {
    let base = std::fs::read(
        fixtures()
            .join("pipeline-model")
            .join("text_encoder")
            .join("model.safetensors"),
    )
    .unwrap();
    let span = header_span(&base);
    let dir = tempfile::tempdir().unwrap();
    let strategy = (edits(true), proptest::bool::weighted(0.8));
    fuzz(
        "safetensors",
        10_000,
        Duration::from_secs(15),
        strategy,
        |(edits, in_header)| {
            let bytes = mutate(&base, &edits, in_header.then_some(span));
            match open_bytes(dir.path(), &bytes) {
                Err(e) => {
                    assert!(matches!(e, Error::CorruptWeights { .. }), "{e}");
                    true
                }
                Ok(weights) => {
                    let mut rejected = false;
                    for name in weights.names() {
                        let shape = weights.shape(name).unwrap().to_vec();
                        if let Err(e) = weights.read_f32(name, &shape) {
                            assert!(
                                matches!(
                                    e,
                                    Error::UnsupportedDtype { .. } | Error::NonFiniteWeight { .. }
                                ),
                                "{e}"
                            );
                            rejected = true;
                        }
                    }
                    rejected
                }
            }
        },
    );
}

#[test]
fn fuzz_unet_checkpoint_load() {
    let src = fixtures().join("pipeline-model");
    let base = std::fs::read(src.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let span = header_span(&base);
    let dir = tempfile::tempdir().unwrap();
    let root = unet_dir_with(dir.path(), &base);
    let device = Default::default();
    // The unmutated fixture loads: the fuzz starts from a valid file.
    let dir_handle = ModelDir::open(&root).unwrap();
    UNet2DConditionModel::<B>::from_model_dir(&dir_handle, None, &device).unwrap();
    let weights = root.join("unet/diffusion_pytorch_model.safetensors");
    let (tried, rejected) = fuzz(
        "unet checkpoint",
        1000,
        Duration::from_secs(15),
        (edits(true), proptest::bool::weighted(0.7)),
        |(edits, in_header)| {
            std::fs::write(&weights, mutate(&base, &edits, in_header.then_some(span))).unwrap();
            match UNet2DConditionModel::<B>::from_model_dir(&dir_handle, None, &device) {
                Ok(_) => false,
                Err(e) => {
                    assert!(is_weights_error(&e), "{e}");
                    true
                }
            }
        },
    );
    // Header edits break files; edits of the data only change weights (or make them NaN).
    assert!(
        rejected > 0 && rejected < tried,
        "{rejected} of {tried} rejected"
    );
}
