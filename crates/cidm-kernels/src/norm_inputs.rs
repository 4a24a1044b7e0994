//! Checks of a norm's inputs that the group-norm and layer-norm kernels share.

use burn::tensor::DType;

/// Largest size of one grid dimension the norms' kernels put a tensor dimension on: the GPU
/// APIs cap each dimension of a launch grid at 65535.
pub(crate) const MAX_GRID: usize = 65_535;

/// Whether `epsilon` can be added to a variance: finite and not negative.
pub(crate) fn epsilon_supported(epsilon: f64) -> bool {
    epsilon.is_finite() && epsilon >= 0.0
}

/// Whether the input and the affine weights are all of one dtype among f32, f16 and bf16
/// (the kernels read and write that one type; statistics are f32 whatever it is).
pub(crate) fn affine_dtypes_supported(x: DType, gamma: DType, beta: DType) -> bool {
    matches!(x, DType::F32 | DType::F16 | DType::BF16) && x == gamma && x == beta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilons() {
        assert!(epsilon_supported(0.0));
        assert!(epsilon_supported(1e-5));
        for bad in [-1e-5, f64::NAN, f64::INFINITY] {
            assert!(!epsilon_supported(bad), "{bad}");
        }
    }

    /// One float type for all three; integers, f64 and mixtures are refused.
    #[test]
    fn dtypes() {
        for float in [DType::F32, DType::F16, DType::BF16] {
            assert!(affine_dtypes_supported(float, float, float));
        }
        assert!(!affine_dtypes_supported(DType::F64, DType::F64, DType::F64));
        assert!(!affine_dtypes_supported(DType::F32, DType::F16, DType::F32));
        assert!(!affine_dtypes_supported(DType::F16, DType::F16, DType::F32));
        assert!(!affine_dtypes_supported(DType::I32, DType::I32, DType::I32));
    }
}
