//! Initial latents and latent files. Noise is drawn on the host from a seeded ChaCha8 stream,
//! so a seed gives the same latents on every backend and machine. Latent files are safetensors
//! with one tensor named `latents`, so a run can be compared latent for latent with another
//! implementation (diffusers accepts them as `latents=`).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::loading::SafetensorsWeights;

/// The tensor name used in latent files.
pub const LATENTS_KEY: &str = "latents";

/// Standard Gaussian latents from `seed`.
///
/// # Shapes
/// - returns `shape`, e.g. `[batch, 4, height / 8, width / 8]`
pub fn gaussian_latents<B: Backend>(
    shape: [usize; 4],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 4> {
    gaussian(&mut ChaCha8Rng::seed_from_u64(seed), shape, device)
}

/// Standard normal values drawn on the host from `rng`, as a tensor of `shape`: the same
/// values on every backend, so seeded training and sampling repeat bit for bit.
pub fn gaussian<B: Backend, const D: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.sample(StandardNormal))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Reads the `latents` tensor of a safetensors file (f32, f16 or bf16) and checks its shape.
pub fn read_latents<B: Backend>(
    path: &Path,
    expected: [usize; 4],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let weights = SafetensorsWeights::open(path)?;
    let data = weights.read_f32(LATENTS_KEY, &expected)?;
    Ok(Tensor::from_data(data, device))
}

/// Writes `latents` as f32 to a safetensors file, atomically.
pub fn write_latents<B: Backend>(path: &Path, latents: Tensor<B, 4>) -> Result<()> {
    let shape = latents.dims().to_vec();
    let data = latents.into_data().convert::<f32>();
    let values = data
        .as_slice::<f32>()
        .map_err(|e| Error::InvalidInput(format!("latents are not readable as f32: {e:?}")))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
        .map_err(|e| Error::InvalidInput(format!("latents: {e}")))?;
    let encoded = safetensors::serialize([(LATENTS_KEY, view)], None::<HashMap<String, String>>)
        .map_err(|e| Error::InvalidInput(format!("latents: {e}")))?;
    write_atomic(path, &encoded)
}
