//! LoRA files: saving in the PEFT / diffusers safetensors format and loading that format, its
//! variants and kohya's (see [`keys`] for the key conventions and [`metadata`] for where the
//! rank and alpha live).
//!
//! Layouts: files store PEFT's `lora_A` `[r, in]` and `lora_B` `[out, r]` (PyTorch's
//! `[out, in]` weight convention); the core stores `down` `[in, r]` and `up` `[r, out]`, so
//! both are transposed on the way in and out.

pub(crate) mod keys;
mod load;
pub(crate) mod metadata;
pub mod tensor_file;

use std::path::Path;

use burn::tensor::backend::Backend;
use cidm_diffusion::UNet2DConditionModel;

use crate::adapter::LoraAdapter;
use crate::error::Result;
use tensor_file::{RawFile, RawTensor};

impl<B: Backend> LoraAdapter<B> {
    /// Writes the adapter as diffusers' `save_lora_weights` does for a PEFT LoRA: keys
    /// `unet.<module>.lora_A.weight` (`[r, in]`) and `unet.<module>.lora_B.weight`
    /// (`[out, r]`), f32, with rank, alpha and targets in the safetensors metadata so that
    /// diffusers' `load_lora_weights` restores the same scale. The bytes depend only on the
    /// adapter.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut file = RawFile::default();
        for (module, factors) in self.layers() {
            let [d_in, rank] = factors.down.dims();
            let [_, d_out] = factors.up.dims();
            file.tensors.insert(
                format!("{}{module}.lora_A.weight", keys::UNET_PREFIX),
                RawTensor {
                    shape: vec![rank, d_in],
                    values: transposed(host_values(factors.down.clone()), d_in, rank),
                },
            );
            file.tensors.insert(
                format!("{}{module}.lora_B.weight", keys::UNET_PREFIX),
                RawTensor {
                    shape: vec![d_out, rank],
                    values: transposed(host_values(factors.up.clone()), rank, d_out),
                },
            );
        }
        let paths: Vec<&str> = self.layers().keys().map(String::as_str).collect();
        file.metadata = metadata::build(self.config(), &paths)?;
        tensor_file::write(path.as_ref(), &file)
    }

    /// Reads a LoRA file for `unet`: PEFT / diffusers keys (`lora_A`/`lora_B`, with `unet.`,
    /// `base_model.model.` or no prefix, or diffusers' `lora.down`/`lora.up`) or kohya keys
    /// (`lora_unet_*.lora_down.weight`, `.lora_up.weight`, `.alpha`); f32, f16 or bf16.
    /// Text-encoder keys are skipped with a warning.
    ///
    /// Checks everything against the model before building tensors and names the first
    /// mismatch in key order: a module the UNet does not have, a missing factor, a factor
    /// whose shape does not fit, mixed ranks. Alpha comes from the metadata, a PEFT
    /// `adapter_config.json` beside the file, kohya's per-module `.alpha` (a module whose
    /// alpha differs from the first has the ratio folded into its up factor), or else equals
    /// the rank, as diffusers assumes.
    pub fn load(
        path: impl AsRef<Path>,
        unet: &UNet2DConditionModel<B>,
        device: &B::Device,
    ) -> Result<Self> {
        load::load(path.as_ref(), unet, device)
    }
}

/// A 2-D tensor's values, row-major, as f32 on the host.
fn host_values<B: Backend>(tensor: burn::tensor::Tensor<B, 2>) -> Vec<f32> {
    tensor.into_data().iter::<f32>().collect()
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transposed(values: Vec<f32>, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}
