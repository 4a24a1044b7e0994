//! What the tests of the Flex loops share: deterministic inputs and the comparison.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};

/// The training backend the nodes run on.
pub(super) type AB = Autodiff<Flex>;

/// Standard normal values from `seed` (splitmix64 and Box-Muller), plus `offset`, tracked by
/// autodiff: the same for any test order, unlike the backend's global generator, which tests
/// running in parallel reseed.
pub(super) fn normal<const D: usize>(shape: [usize; D], seed: u64, offset: f32) -> Tensor<AB, D> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..shape.iter().product())
        .map(|_| {
            let (u, v) = (1.0 - uniform(), uniform());
            offset + ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    Tensor::<AB, D>::from_data(TensorData::new(values, shape), &Default::default()).require_grad()
}

/// The largest difference relative to the largest expected value, or absolute below 1.
pub(super) fn max_rel_err<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    let scale: f32 = b.clone().abs().max().into_scalar();
    let err: f32 = (a - b).abs().max().into_scalar();
    err / scale.max(1.0)
}
