//! The checks every safetensors reader of the workspace makes on bytes it did not write, on
//! top of those of the `safetensors` crate, and the widening of stored floats to f32.
//!
//! The `safetensors` crate (0.7) already refuses a header length beyond the file or above
//! 100 MB, headers that are not UTF-8 JSON, unknown dtype names, offsets that are out of order,
//! overlapping, leave gaps or do not cover the data section exactly, and shapes whose byte size
//! overflows `usize`; it never allocates more than the header's JSON. What it lets through is a
//! header naming one tensor twice (JSON objects may repeat keys; the last one silently wins),
//! and it has no opinion on NaN or infinite weights. Both are refused here, with errors that
//! name the tensor.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// Length of the little-endian header-size prefix.
const PREFIX: usize = 8;

/// Parses a whole safetensors file held in memory (or mapped): the `safetensors` crate's
/// validation plus a refusal of repeated keys. Errors are [`Error::CorruptWeights`] naming
/// `path`.
pub fn parse_safetensors<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    let corrupt = |reason: String| Error::CorruptWeights {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(key) = repeated_key(bytes) {
        return Err(corrupt(format!(
            "the header names tensor `{key}` more than once"
        )));
    }
    SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))
}

/// The first key the header's JSON object repeats, if it has one. A header whose length or
/// JSON is wrong yields `None` and is left to the `safetensors` crate to describe.
fn repeated_key(bytes: &[u8]) -> Option<String> {
    let prefix: [u8; PREFIX] = bytes.get(..PREFIX)?.try_into().ok()?;
    let len = usize::try_from(u64::from_le_bytes(prefix)).ok()?;
    // `get` bounds the header by the file before anything is read or allocated.
    let header = bytes.get(PREFIX..PREFIX.checked_add(len)?)?;
    serde_json::from_slice::<KeyScan>(header).ok()?.repeated
}

/// The outcome of reading a JSON object's keys while skipping its values.
struct KeyScan {
    repeated: Option<String>,
}

impl<'de> Deserialize<'de> for KeyScan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = KeyScan;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut map: M,
            ) -> std::result::Result<KeyScan, M::Error> {
                // The whole object is read even after a repeat: serde_json refuses a map
                // left half-consumed.
                let (mut seen, mut repeated) = (HashSet::new(), None);
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    if repeated.is_none() && !seen.insert(key.clone()) {
                        repeated = Some(key);
                    }
                }
                Ok(KeyScan { repeated })
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// Widens the stored little-endian values of tensor `name` to f32 (F32, F16 and BF16 are
/// read) and refuses NaN and infinities with [`Error::NonFiniteWeight`]; another dtype is
/// [`Error::UnsupportedDtype`]. `bytes` is the tensor's data as the validated header gives it,
/// so the output's size is bounded by the file.
pub fn decode_f32(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let values: Vec<f32> = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(values),
        Some(index) => Err(Error::NonFiniteWeight {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            index,
            value: values[index],
        }),
    }
}
