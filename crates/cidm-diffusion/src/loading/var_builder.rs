//! One construction path for every module, whether its parameters come from a checkpoint or
//! from random initialisation: modules ask a [`VarBuilder`] for a tensor by its diffusers name
//! and shape, so the module tree mirrors the checkpoint's key tree and loading needs no remaps.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use super::SafetensorsWeights;
use crate::error::Result;

/// How a parameter is initialised when no checkpoint is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (biases, norm shifts).
    Zeros,
    /// All ones (norm scales).
    Ones,
    /// Uniform in `[-bound, bound]`; PyTorch's default for linear and conv layers uses
    /// `bound = 1 / sqrt(fan_in)`.
    Uniform(f64),
}

impl Init {
    /// PyTorch's default bound for a layer with `fan_in` inputs.
    pub fn fan_in(fan_in: usize) -> Self {
        Init::Uniform(1.0 / (fan_in.max(1) as f64).sqrt())
    }
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Random,
    Weights(&'a SafetensorsWeights),
}

/// Hands out parameters by dotted name (`down_blocks.0.resnets.1.conv1.weight`).
#[derive(Clone)]
pub struct VarBuilder<'a, B: Backend> {
    source: Source<'a>,
    prefix: String,
    device: B::Device,
}

impl<'a, B: Backend> VarBuilder<'a, B> {
    /// Parameters read from `weights` (shapes checked against what the module asks for).
    pub fn from_weights(weights: &'a SafetensorsWeights, device: &B::Device) -> Self {
        Self {
            source: Source::Weights(weights),
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// Parameters drawn at random with each layer's PyTorch-default init; the draw follows the
    /// backend's seed (`B::seed`).
    pub fn random(device: &B::Device) -> Self {
        Self {
            source: Source::Random,
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// The builder for a child module: names get `name.` prepended.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Self {
            source: self.source,
            prefix,
            device: self.device.clone(),
        }
    }

    /// The device parameters are created on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The dotted path of this module in the checkpoint (`down_blocks.0.attentions.1`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full dotted name of a parameter of this module.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// The tensor `name` of this module, of shape `shape` (PyTorch layout).
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Tensor<B, D>> {
        match self.source {
            Source::Weights(weights) => {
                let data = weights.read_f32(&self.path(name), &shape)?;
                Ok(Tensor::from_data(data, &self.device))
            }
            Source::Random => Ok(match init {
                Init::Zeros => Tensor::zeros(shape, &self.device),
                Init::Ones => Tensor::ones(shape, &self.device),
                Init::Uniform(bound) => {
                    Tensor::random(shape, Distribution::Uniform(-bound, bound), &self.device)
                }
            }),
        }
    }

    /// Like [`Self::tensor`], wrapped as a module parameter.
    pub fn param<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Param<Tensor<B, D>>> {
        self.tensor(name, shape, init).map(Param::from_tensor)
    }
}
