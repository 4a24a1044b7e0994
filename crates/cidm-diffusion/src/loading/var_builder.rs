//! One construction path for every module, whether its parameters come from a checkpoint or
//! from random initialisation: modules ask a [`VarBuilder`] for a tensor by its diffusers name
//! and shape, so the module tree mirrors the checkpoint's key tree and loading needs no remaps.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

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

    /// The tensor `name` stored `shape` = `[rows, ..]` (PyTorch's linear layout `[out, in]`, or
    /// a 1x1 convolution's `[out, in, 1, 1]`) as a matrix of `rows` by the product of the rest,
    /// handed out transposed, `[in, out]`, in row-major memory: the layout burn's `Linear` wants.
    ///
    /// Why not `tensor(..).transpose()`: that is a strided view, and burn's linear reshapes its
    /// weight to `[1, in, out]` on every call, which copies a strided tensor each time (Flex
    /// and CubeCL alike): about 3% of an SD 1.5 UNet step on the CPU went to copying weights.
    /// The values are those of [`Self::tensor`] (the random draw included), transposed once.
    pub fn matrix_transposed<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Tensor<B, 2>> {
        let data = match self.source {
            Source::Weights(weights) => weights.read_f32(&self.path(name), &shape)?,
            Source::Random => self.tensor(name, shape, init)?.into_data(),
        };
        let rows = shape.first().copied().unwrap_or(1);
        let cols = shape.iter().skip(1).product::<usize>();
        let values: Vec<f32> = data.iter::<f32>().collect();
        // In blocks, so that both sides stay in cache (a column at a time reads a whole cache
        // line per value: about a second for SD 1.5's UNet).
        const BLOCK: usize = 32;
        let mut transposed = vec![0.0f32; values.len()];
        for row_block in (0..rows).step_by(BLOCK) {
            for col_block in (0..cols).step_by(BLOCK) {
                for row in row_block..(row_block + BLOCK).min(rows) {
                    for col in col_block..(col_block + BLOCK).min(cols) {
                        transposed[col * rows + row] = values[row * cols + col];
                    }
                }
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(transposed, [cols, rows]),
            &self.device,
        ))
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

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::backend::Backend;

    use super::{Init, VarBuilder};

    /// `matrix_transposed` holds `tensor(..)` transposed (the same random draw, the same
    /// values from a file), for a linear's `[out, in]` and a 1x1 convolution's `[out, in, 1,
    /// 1]` (blocks of 32 with remainders each way), laid out row-major: a reshape that
    /// prepends a dimension (as burn's linear does) needs no copy.
    #[test]
    fn matrix_transposed_is_the_transpose_in_row_major_order() {
        let device = Default::default();
        let vb = VarBuilder::<Flex>::random(&device);
        let init = Init::Uniform(1.0);
        Flex::seed(&device, 7);
        let want = vb.tensor("w", [37, 70], init).unwrap().transpose();
        Flex::seed(&device, 7);
        let got = vb.matrix_transposed("w", [37, 70], init).unwrap();
        assert_eq!(got.dims(), [70, 37]);
        assert_eq!(got.to_data(), want.to_data());
        assert!(got.clone().into_primitive().tensor().is_contiguous());

        Flex::seed(&device, 8);
        let want = vb.tensor("c", [33, 33, 1, 1], init).unwrap();
        Flex::seed(&device, 8);
        let got = vb.matrix_transposed("c", [33, 33, 1, 1], init).unwrap();
        assert_eq!(got.to_data(), want.reshape([33, 33]).transpose().to_data());
    }
}
