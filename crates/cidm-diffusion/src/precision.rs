//! Mixed precision: what stays f32 when the backend's float type is f16 or bf16.
//!
//! A GPU build with the `f16` feature runs the frozen model in half precision. Trainable
//! parameters and their optimizer state must not: AdamW divides by `sqrt(v) + 1e-8`, and in
//! f16 the epsilon rounds to 0 and the second moment of any gradient below about 2.4e-4
//! underflows to 0, so a parameter whose gradient is 0 (a LoRA down factor at the first step,
//! while its up factor is still 0; the row of a concept word absent from the batch) becomes
//! `0 / 0 = NaN` and others `inf`; and an update of 1e-4 to a weight near 0.05 is below f16's
//! resolution there. So, as diffusers' f16 recipe does (f32 LoRA weights under fp16
//! autocast), every trainable tensor (LoRA factors, concept-token rows, the common subspace's
//! `H` and `W*`) is created and kept in [`PARAM_DTYPE`], f32, whatever the device's default
//! float type, and is cast to the activations' dtype where it meets them (the low-rank bank's
//! forward, the concept-token substitution). The gradient of such a cast comes back in f32,
//! so the optimizers see f32 gradients, moments and weights. At f32 every cast is burn's
//! same-dtype no-op.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

/// The dtype of every trainable parameter and of its optimizer state.
pub const PARAM_DTYPE: DType = DType::F32;

/// `data` as a tensor of [`PARAM_DTYPE`] on `device` (not of the device's default float
/// type, which may be f16).
pub fn param_from_data<B: Backend, const D: usize>(
    data: TensorData,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(data, (device, PARAM_DTYPE))
}

/// Zeros of [`PARAM_DTYPE`] on `device`.
pub fn param_zeros<B: Backend, const D: usize>(
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::zeros(shape, (device, PARAM_DTYPE))
}

/// `tensor` in [`PARAM_DTYPE`]: for values that become trainable but come from the model
/// (a class word's embedding row) or from a file read into the default dtype.
pub fn to_param_dtype<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, D> {
    tensor.cast(FloatDType::F32)
}

/// `tensor` in `dtype` (a float dtype, e.g. of the activations it is combined with).
pub fn cast_to<B: Backend, const D: usize>(tensor: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    tensor.cast(FloatDType::from(dtype))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{DType, Tensor, TensorData};

    use super::*;

    /// Parameters are f32 however they are made; `cast_to` follows another tensor's dtype
    /// and keeps the values that the narrower type holds.
    #[test]
    fn parameters_are_f32() {
        let device = Default::default();
        let data = TensorData::new(vec![0.5f32, -1.25], [2]);
        let made: Tensor<Flex, 1> = param_from_data(data, &device);
        assert_eq!(made.dtype(), DType::F32);
        assert_eq!(param_zeros::<Flex, 2>([2, 3], &device).dtype(), DType::F32);
        let half = cast_to(made, DType::F16);
        assert_eq!(half.dtype(), DType::F16);
        let back = to_param_dtype(half);
        assert_eq!(back.dtype(), DType::F32);
        assert_eq!(back.into_data().to_vec::<f32>().unwrap(), vec![0.5, -1.25]);
    }
}
