//! Raw safetensors I/O for LoRA files: reading every tensor as f32 with its shape plus the
//! header metadata, and writing f32 tensors with metadata byte-for-byte deterministically.
//!
//! The writer is our own because the `safetensors` crate serialises its metadata map in hash
//! order, so the same adapter would give different bytes on every run; a deterministic file
//! can be committed as a fixture and compared byte for byte. Reading goes through the
//! `safetensors` crate, which validates headers and offsets.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{LoraError, Result};

/// One tensor read from a file, widened to f32.
#[derive(Debug, Clone)]
pub(crate) struct RawTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Everything in a safetensors file: tensors by name and the `__metadata__` strings.
#[derive(Debug, Default)]
pub(crate) struct RawFile {
    pub tensors: BTreeMap<String, RawTensor>,
    pub metadata: BTreeMap<String, String>,
}

/// Reads a whole safetensors file (LoRA files are small: ~3 MB for rank 4 on SD 1.5).
pub(crate) fn read(path: &Path) -> Result<RawFile> {
    let bytes = std::fs::read(path).map_err(|source| LoraError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: String| LoraError::CorruptFile {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut raw = RawFile {
        metadata: header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..RawFile::default()
    };
    for (key, view) in file.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(LoraError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key,
                    dtype: format!("{other:?}"),
                })
            }
        };
        raw.tensors.insert(
            key,
            RawTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(raw)
}

/// Writes f32 tensors (sorted by name) and string metadata (sorted by key) as a safetensors
/// file. The header is padded with spaces to a multiple of 8 bytes, as the reference
/// implementation does, so the data section is aligned.
pub(crate) fn write(path: &Path, file: &RawFile) -> Result<()> {
    let json = |text: &str| serde_json::Value::String(text.to_string()).to_string();
    let mut header = String::from("{");
    if !file.metadata.is_empty() {
        header.push_str("\"__metadata__\":{");
        let entries: Vec<String> = file
            .metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json(k), json(v)))
            .collect();
        header.push_str(&entries.join(","));
        header.push_str("},");
    }
    let mut offset = 0usize;
    let mut infos = Vec::with_capacity(file.tensors.len());
    for (name, tensor) in &file.tensors {
        let size = tensor.values.len() * 4;
        let dims: Vec<String> = tensor.shape.iter().map(usize::to_string).collect();
        infos.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            json(name),
            dims.join(","),
            offset + size
        ));
        offset += size;
    }
    header.push_str(&infos.join(","));
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }

    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for tensor in file.tensors.values() {
        for value in &tensor.values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).map_err(|source| LoraError::Io {
        path: path.to_path_buf(),
        source,
    })
}
