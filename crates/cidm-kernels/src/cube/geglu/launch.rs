//! Host side of the GEGLU kernels: launches on burn's `CubeTensor`s.

use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};

use super::kernel::{geglu_backward_kernel, geglu_forward_kernel};
use crate::cube::host::{elementwise, empty_on};

/// Forward pass on x `[rows, 2 n]`: the output `[rows, n]` in x's dtype.
pub(crate) fn forward<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let [rows, width] = x.shape().dims::<2>();
    let out = empty_on(&x, Shape::new([rows, width / 2]), x.dtype);
    let (count, dim) = elementwise(&x.client, rows * width / 2);
    let dtype = x.dtype;
    geglu_forward_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        x.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        (width / 2) as u32,
        dtype.into(),
    );
    out
}

/// Backward pass from the forward's input and the output's gradient: x's gradient, both
/// halves, in x's dtype and shape.
pub(crate) fn backward<R: CubeRuntime>(x: CubeTensor<R>, grad_out: CubeTensor<R>) -> CubeTensor<R> {
    let (x, grad_out) = (into_contiguous(x), into_contiguous(grad_out));
    let [rows, width] = x.shape().dims::<2>();
    let grad_x = empty_on(&x, x.shape(), x.dtype);
    let (count, dim) = elementwise(&x.client, rows * width / 2);
    let dtype = x.dtype;
    geglu_backward_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        x.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        grad_x.clone().into_tensor_arg(),
        (width / 2) as u32,
        dtype.into(),
    );
    grad_x
}
