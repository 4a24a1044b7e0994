//! Timestep embeddings: diffusers' `Timesteps` (sinusoidal projection) and `TimestepEmbedding`
//! (linear, SiLU, linear).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::Result;
use crate::loading::VarBuilder;
use crate::nn::{linear, linear_forward};

/// The frequencies of diffusers' `get_timestep_embedding` with `max_period` 10000, computed in
/// f32 in the same order as diffusers so that the embedding matches to rounding.
pub(crate) fn timestep_frequencies(dim: usize, freq_shift: f32) -> Vec<f32> {
    let half = dim / 2;
    let denominator = half as f32 - freq_shift;
    (0..half)
        .map(|i| (-(10000f32.ln()) * i as f32 / denominator).exp())
        .collect()
}

/// Sinusoidal timestep projection `[sin(t f), cos(t f)]` (or cos first when flipped).
#[derive(Module, Debug)]
pub struct Timesteps<B: Backend> {
    /// Frequencies `[1, dim / 2]`.
    frequencies: Tensor<B, 2>,
    flip_sin_to_cos: bool,
}

impl<B: Backend> Timesteps<B> {
    /// A projection to `dim` features (`dim` even, checked by the config).
    pub fn new(dim: usize, flip_sin_to_cos: bool, freq_shift: usize, device: &B::Device) -> Self {
        let freqs = timestep_frequencies(dim, freq_shift as f32);
        let half = freqs.len();
        Self {
            frequencies: Tensor::from_data(TensorData::new(freqs, [1, half]), device),
            flip_sin_to_cos,
        }
    }

    /// # Shapes
    /// - timesteps: `[batch]` -> `[batch, dim]`
    pub fn forward(&self, timesteps: Tensor<B, 1>) -> Tensor<B, 2> {
        let args = timesteps.unsqueeze_dim::<2>(1) * self.frequencies.clone();
        let (sin, cos) = (args.clone().sin(), args.cos());
        if self.flip_sin_to_cos {
            Tensor::cat(vec![cos, sin], 1)
        } else {
            Tensor::cat(vec![sin, cos], 1)
        }
    }
}

/// diffusers' `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    linear_1: Linear<B>,
    linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    /// Builds `linear_1` (`d_in -> dim`) and `linear_2` (`dim -> dim`).
    pub fn new(vb: &VarBuilder<B>, d_in: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: linear(&vb.pp("linear_1"), d_in, dim, true)?,
            linear_2: linear(&vb.pp("linear_2"), dim, dim, true)?,
        })
    }

    /// # Shapes
    /// - x: `[batch, d_in]` -> `[batch, dim]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        linear_forward(&self.linear_2, silu(linear_forward(&self.linear_1, x)))
    }
}
