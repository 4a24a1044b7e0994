//! Helpers shared by the integration tests: the test backend and fixture access.

#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::SafetensorsWeights;

/// The CPU backend the tests run on (Flex: the faster CPU backend, see docs/performance.md).
pub type B = burn::backend::Flex;

/// The fixtures folder written by `tools/*_fixtures.py`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Reads tensor `name` of any shape from a safetensors file as f32.
pub fn read(weights: &SafetensorsWeights, name: &str) -> TensorData {
    let shape = weights
        .shape(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
        .to_vec();
    weights.read_f32(name, &shape).unwrap()
}

/// Reads tensor `name` as a tensor on the default device.
pub fn tensor<const D: usize>(weights: &SafetensorsWeights, name: &str) -> Tensor<B, D> {
    Tensor::from_data(read(weights, name), &Default::default())
}

/// Largest absolute difference between two tensors of equal shape.
pub fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).abs().max().into_scalar()
}
