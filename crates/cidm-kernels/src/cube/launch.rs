//! Host side of the kernels: layout, tile size and launch on burn's `CubeTensor`s.

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_dtype, tensor::CubeTensor, CubeRuntime,
};
use cubecl::prelude::*;

use super::backward_kernel::{flash_backward_dkdv_kernel, flash_backward_dq_kernel};
use super::forward_kernel::{flash_forward_kernel, ROWS_PER_CUBE};

/// Most rows of keys (or queries) held in shared memory at once.
const MAX_TILE: usize = 64;
/// Shared memory the kernels plan for, at most: 48 KiB is what CUDA grants a kernel
/// without opting in, and more than wgpu's default limit of 16 KiB.
const MAX_SHARED_BYTES: usize = 48 * 1024;

/// Rows per shared-memory tile for `head_dim`: two f32 tiles of `tile * head_dim` (K and V,
/// or Q and dO) plus two f32 scalars per row must fit the device's shared memory.
fn tile_rows<R: CubeRuntime>(client: &ComputeClient<R>, head_dim: usize) -> usize {
    let shared = client
        .properties()
        .hardware
        .max_shared_memory_size
        .min(MAX_SHARED_BYTES);
    let per_row = (2 * head_dim + 2) * core::mem::size_of::<f32>();
    (shared / per_row).clamp(1, MAX_TILE)
}

/// `[batch, heads, tokens, head_dim]` of a 4-D tensor.
fn dims4<R: CubeRuntime>(tensor: &CubeTensor<R>) -> [usize; 4] {
    tensor.shape().dims::<4>()
}

fn cube_count(rows: usize, batch_heads: usize) -> CubeCount {
    CubeCount::Static(
        rows.div_ceil(ROWS_PER_CUBE as usize) as u32,
        batch_heads as u32,
        1,
    )
}

/// Whether the device can run the kernels on tensors of `dtype` with `head_dim` columns
/// (f16/bf16 need the device's support for the type).
pub(crate) fn device_supports<R: CubeRuntime>(
    device: &R::Device,
    dtype: DType,
    head_dim: usize,
) -> bool {
    let client = R::client(device);
    let properties = client.properties();
    let shared_needed = (2 * head_dim + 2) * core::mem::size_of::<f32>();
    properties.supports_type(StorageType::from(dtype))
        && properties.hardware.max_shared_memory_size >= shared_needed
}

/// Forward pass: `(softmax(q k^T * scale) v, logsumexp of the scaled scores per row)`; the
/// output has q's dtype, the logsumexp `[batch, heads, len_q]` is f32.
pub(crate) fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let [batch, heads, len_q, head_dim] = dims4(&q);
    let len_k = dims4(&k)[2];
    let client = q.client.clone();
    let device = q.device.clone();
    let dtype = q.dtype;
    let out = empty_device_dtype(
        client.clone(),
        device.clone(),
        Shape::new([batch, heads, len_q, head_dim]),
        dtype,
    );
    let lse = empty_device_dtype(
        client.clone(),
        device,
        Shape::new([batch, heads, len_q]),
        DType::F32,
    );
    let tile = tile_rows(&client, head_dim);
    flash_forward_kernel::launch::<R>(
        &client,
        cube_count(len_q, batch * heads),
        CubeDim::new_1d(ROWS_PER_CUBE),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        scale,
        len_q as u32,
        len_k as u32,
        head_dim,
        tile,
        dtype.into(),
    );
    (out, lse)
}

/// Backward pass from the forward's inputs, output and logsumexp and the output's
/// gradient: `(dq, dk, dv)` in the inputs' dtype.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    grad_out: CubeTensor<R>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let (out, lse, grad_out) = (
        into_contiguous(out),
        into_contiguous(lse),
        into_contiguous(grad_out),
    );
    let [batch, heads, len_q, head_dim] = dims4(&q);
    let len_k = dims4(&k)[2];
    let client = q.client.clone();
    let device = q.device.clone();
    let dtype = q.dtype;
    let empty = |shape: Shape, dtype: DType| {
        empty_device_dtype(client.clone(), device.clone(), shape, dtype)
    };
    let grad_q = empty(q.shape(), dtype);
    let grad_k = empty(k.shape(), dtype);
    let grad_v = empty(v.shape(), dtype);
    let delta = empty(Shape::new([batch, heads, len_q]), DType::F32);
    let tile = tile_rows(&client, head_dim);

    flash_backward_dq_kernel::launch::<R>(
        &client,
        cube_count(len_q, batch * heads),
        CubeDim::new_1d(ROWS_PER_CUBE),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        out.into_tensor_arg(),
        grad_out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        grad_q.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        scale,
        len_q as u32,
        len_k as u32,
        head_dim,
        tile,
        dtype.into(),
    );
    flash_backward_dkdv_kernel::launch::<R>(
        &client,
        cube_count(len_k, batch * heads),
        CubeDim::new_1d(ROWS_PER_CUBE),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        grad_k.clone().into_tensor_arg(),
        grad_v.clone().into_tensor_arg(),
        scale,
        len_q as u32,
        len_k as u32,
        head_dim,
        tile,
        dtype.into(),
    );
    (grad_q, grad_k, grad_v)
}
