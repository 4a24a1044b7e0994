//! What the kernels' host sides share: outputs allocated on an input's device, grids of one
//! unit per value, the sum of split partial results, and the device's support for a dtype
//! (also as [`DeviceDtypes`], on the backends the kernels are dispatched on).

use burn::tensor::{backend::Backend, DType, Shape, TensorMetadata};
use burn_cubecl::{
    ops::{numeric::empty_device_contiguous_dtype, permute},
    tensor::CubeTensor,
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement,
};
use burn_fusion::{Fusion, FusionBackend};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::reduce::sum_splits_kernel;

/// Units per cube of the kernels with one unit per value (or per row, channel, block).
pub(crate) const ELEMENT_UNITS: u32 = 256;

/// An uninitialised contiguous tensor on `like`'s device.
///
/// Contiguous by request, not by default: burn's usual allocation asks for CubeCL's
/// "optimized" layout, which on CUDA pads every row (the last dimension) to a multiple of its
/// size rounded up to a power of two, at most 512 bytes: a row of 320 f16 values (640 bytes)
/// takes 1024, one of 40 f32 values (160) takes 256. The kernels write their outputs at
/// offsets computed for contiguous rows; in a padded tensor those land in the wrong places.
/// wgpu never pads, so only a CUDA run would show it.
pub(crate) fn empty_on<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: Shape,
    dtype: DType,
) -> CubeTensor<R> {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}

/// An uninitialised tensor of `shape` on `like`'s device, dense in memory with its axes in
/// `order` (outermost first), seen in `shape`'s axis order.
pub(crate) fn empty_in_order<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: &[usize],
    order: &[usize],
    dtype: DType,
) -> CubeTensor<R> {
    let dense_shape: Vec<usize> = order.iter().map(|&axis| shape[axis]).collect();
    let dense = empty_on(like, Shape::from(dense_shape), dtype);
    permute(dense, &inverse_order(order))
}

/// The permutation that undoes `order`: the position of each axis in it.
fn inverse_order(order: &[usize]) -> Vec<usize> {
    let mut axes = vec![0; order.len()];
    for (position, &axis) in order.iter().enumerate() {
        axes[axis] = position;
    }
    axes
}

/// The axes of a `[batch, channels, ...]` tensor in channels-last memory order, outermost
/// first: batch, the trailing (spatial) axes, then the channels.
pub(crate) fn channels_last_order(rank: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rank).filter(|&axis| axis != 1).collect();
    order.push(1);
    order
}

/// Whether `tensor` `[batch, channels, ...]` is dense in memory in channels-last order (the
/// NHWC layout burn-cubecl's convolutions write and read), seen in NCHW axis order.
pub(crate) fn is_channels_last<R: CubeRuntime>(tensor: &CubeTensor<R>) -> bool {
    let rank = tensor.meta.shape().len();
    rank >= 2 && permute(tensor.clone(), &channels_last_order(rank)).is_contiguous()
}

/// One unit per element of a tensor of `len` values.
pub(crate) fn elementwise<R: CubeRuntime>(
    client: &ComputeClient<R>,
    len: usize,
) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(ELEMENT_UNITS);
    (calculate_cube_count_elemwise(client, len, dim), dim)
}

/// `out = sum over s of part[s]` ([`sum_splits_kernel()`]): `part` f32 `[splits, ...]`, `out`
/// the shape of one split, in its own dtype.
pub(crate) fn sum_splits<R: CubeRuntime>(part: CubeTensor<R>, out: &CubeTensor<R>, splits: usize) {
    let client = out.client.clone();
    let (count, dim) = elementwise(&client, out.shape().num_elements());
    sum_splits_kernel::launch::<R>(
        &client,
        count,
        dim,
        part.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        splits as u32,
        out.dtype.into(),
    );
}

/// Whether the device can run kernels on tensors of `dtype` (f16/bf16 need shader support).
pub(crate) fn supports_dtype<R: CubeRuntime>(device: &R::Device, dtype: DType) -> bool {
    R::client(device)
        .properties()
        .supports_type(StorageType::from(dtype))
}

/// A backend whose devices say which float dtypes the kernels can run on: burn-cubecl's
/// `CubeBackend` and `Fusion` over it.
pub(crate) trait DeviceDtypes: Backend {
    /// Whether `device` can run kernels on `dtype` tensors.
    fn dtype_supported(device: &Self::Device, dtype: DType) -> bool;
}

impl<R, F, I, BT> DeviceDtypes for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn dtype_supported(device: &Self::Device, dtype: DType) -> bool {
        supports_dtype::<R>(device, dtype)
    }
}

impl<B: FusionBackend + DeviceDtypes> DeviceDtypes for Fusion<B> {
    fn dtype_supported(device: &Self::Device, dtype: DType) -> bool {
        B::dtype_supported(device, dtype)
    }
}

/// `Err(dtype)` when the device of `x` cannot run kernels on x's dtype.
pub(crate) fn check_dtype<X: DeviceDtypes>(
    x: &burn::tensor::ops::FloatTensor<X>,
) -> Result<(), DType> {
    let dtype = x.dtype();
    if X::dtype_supported(&X::float_device(x), dtype) {
        Ok(())
    } else {
        Err(dtype)
    }
}
