//! Raw safetensors I/O for LoRA files and everything stored beside them (concept tokens,
//! training checkpoints): reading every tensor as f32 with its shape plus the header metadata,
//! and writing f32 tensors with metadata byte-for-byte deterministically and atomically.
//!
//! The writer is our own because the `safetensors` crate serialises its metadata map in hash
//! order, so the same adapter would give different bytes on every run; a deterministic file
//! can be committed as a fixture and compared byte for byte. Reading goes through the core's
//! checked parser ([`cidm_diffusion::loading::parse_safetensors`]), which validates headers,
//! offsets and names, and its decoder, which refuses NaN and infinite values.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use cidm_diffusion::loading::{decode_f32, parse_safetensors};
use safetensors::SafeTensors;

use crate::error::{LoraError, Result};

/// One tensor read from a file, widened to f32.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Its values in row-major order.
    pub values: Vec<f32>,
}

/// Everything in a safetensors file: tensors by name and the `__metadata__` strings.
#[derive(Debug, Default)]
pub struct RawFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, RawTensor>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

/// The largest LoRA file read: 4 GiB (rank 4 on SD 1.5 is ~3 MB, rank 128 on SDXL ~0.9 GB).
/// Checked against the file's length before it is read.
const MAX_FILE_BYTES: u64 = 4 << 30;

/// Reads a whole safetensors file through the core's checks (header length against the file,
/// offsets, repeated names, dtypes, NaN and infinite values), after checking its size.
pub fn read(path: &Path) -> Result<RawFile> {
    let io = |source| LoraError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |reason: String| LoraError::CorruptFile {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(corrupt(format!(
            "{len} bytes, more than the {MAX_FILE_BYTES}-byte limit of LoRA files"
        )));
    }
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io)?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let file = parse_safetensors(&bytes, path).map_err(from_core)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
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
        let values = decode_f32(path, &key, view.dtype(), view.data()).map_err(from_core)?;
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

/// The core's file errors in this crate's terms: a malformed file or a NaN/infinite factor is
/// [`LoraError::CorruptFile`], a dtype it cannot read [`LoraError::UnsupportedDtype`].
fn from_core(error: cidm_diffusion::Error) -> LoraError {
    match error {
        cidm_diffusion::Error::CorruptWeights { path, reason } => {
            LoraError::CorruptFile { path, reason }
        }
        ref non_finite @ cidm_diffusion::Error::NonFiniteWeight { ref path, .. } => {
            LoraError::CorruptFile {
                path: path.clone(),
                reason: non_finite.to_string(),
            }
        }
        cidm_diffusion::Error::UnsupportedDtype {
            path,
            tensor,
            dtype,
        } => LoraError::UnsupportedDtype {
            path,
            key: tensor,
            dtype,
        },
        other => LoraError::Model(other),
    }
}

/// Writes f32 tensors (sorted by name) and string metadata (sorted by key) as a safetensors
/// file. The header is padded with spaces to a multiple of 8 bytes, as the reference
/// implementation does, so the data section is aligned. The file is replaced atomically
/// (temporary file, fsync, rename): a crash or a full disk leaves the previous file intact.
pub fn write(path: &Path, file: &RawFile) -> Result<()> {
    Ok(cidm_diffusion::io::write_atomic(path, &encode(file))?)
}

/// The bytes [`write()`] puts in a file.
pub fn encode(file: &RawFile) -> Vec<u8> {
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
    bytes
}
