//! What the kernel tests share: the two wgpu backends the kernels are dispatched on, the f32
//! tolerance, deterministic inputs and the comparison.

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::backend::Wgpu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The wgpu backend as burn's `Wgpu` alias builds it here: under burn-fusion.
pub type Gpu = Wgpu;
/// burn-cubecl's wgpu backend without fusion.
pub type GpuPlain = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// Both sides compute in f32 and sum in different orders: they agree to rounding, 1e-4
/// relative to the largest reference value.
pub const TOL_F32: f32 = 1e-4;

/// Deterministic values in [-2, 2) (xorshift, so no dependency on a random crate's stream).
pub fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// A tensor's values as f32 on the host.
pub fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// `|got - want| <= tol * max(1, max |want|)` element by element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let magnitude = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * magnitude,
            "{what}[{i}]: got {g}, want {w} (tolerance {})",
            tol * magnitude
        );
    }
}
