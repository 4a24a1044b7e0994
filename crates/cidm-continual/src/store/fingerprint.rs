//! The base-model fingerprint: a store's tasks only mean something on the model they were
//! trained on, so the store records a digest of that model and refuses any other.
//!
//! The digest (SHA-256) covers, for the text encoder, the UNet and the VAE, the `config.json`
//! bytes, every tensor's name and shape, and the first 64 values of 16 tensors spread over
//! the sorted names, rounded to bfloat16. Values (not bytes) keep the digest independent of
//! the file's dtype for most models, but not for all: a value that rounds differently through
//! f16 (a double-rounding tie, an f16 subnormal) changes it, so a store should be used with
//! the weight variant it was trained on. Any fine-tune changes the sampled values. The tokenizer's `vocab.json` and
//! `merges.txt` are covered too. Reading is bounded: about a thousand values per component.

use std::path::Path;

use cidm_diffusion::{ModelDir, SafetensorsWeights};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Tensors sampled per component.
const SAMPLED_TENSORS: usize = 16;
/// Values sampled per tensor.
const SAMPLED_VALUES: usize = 64;

/// The digest of a base model (lowercase hex SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BaseFingerprint(pub String);

impl std::fmt::Display for BaseFingerprint {
    /// The first 16 hex digits, enough to tell models apart in messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.get(..16).unwrap_or(&self.0))
    }
}

impl BaseFingerprint {
    /// The fingerprint of the diffusers directory `root`; `variant` picks the weight files
    /// read (see the module documentation for when variants agree).
    pub fn of_model_dir(root: &Path, variant: Option<&str>) -> Result<Self> {
        let dir = ModelDir::open(root)?;
        let mut hasher = Sha256::new();
        for (component, stem) in [
            ("text_encoder", "model"),
            ("unet", "diffusion_pytorch_model"),
            ("vae", "diffusion_pytorch_model"),
        ] {
            let folder = dir.root().join(component);
            hasher.update(component.as_bytes());
            hasher.update(read(&folder.join("config.json"))?);
            let weights = ModelDir::weights(&folder, stem, variant)?;
            hash_weights(&mut hasher, &weights)?;
        }
        let tokenizer = dir.root().join("tokenizer");
        for name in ["vocab.json", "merges.txt"] {
            hasher.update(name.as_bytes());
            hasher.update(read(&tokenizer.join(name))?);
        }
        let digest = hasher.finalize();
        Ok(Self(digest.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

fn hash_weights(hasher: &mut Sha256, weights: &SafetensorsWeights) -> Result<()> {
    let mut names: Vec<&str> = weights.names();
    names.sort_unstable();
    for name in &names {
        hasher.update(name.as_bytes());
        for d in weights.shape(name).unwrap_or_default() {
            hasher.update((*d as u64).to_le_bytes());
        }
    }
    let stride = names.len().div_ceil(SAMPLED_TENSORS).max(1);
    for name in names.iter().step_by(stride) {
        let shape = weights.shape(name).unwrap_or_default().to_vec();
        let values = weights
            .read_f32(name, &shape)?
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::InvalidInput(format!("reading {name}: {e:?}")))?;
        for v in values.iter().take(SAMPLED_VALUES) {
            hasher.update(half::bf16::from_f32(*v).to_bits().to_le_bytes());
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
