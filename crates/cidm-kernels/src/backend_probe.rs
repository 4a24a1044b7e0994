//! Whether a tensor lives on a backend the kernels run on, for layout choices that follow
//! burn-cubecl's own kernels (see [`on_cube_backend`]).

use burn::tensor::{backend::Backend, Tensor};

/// Whether `tensor` is on a backend the kernels of this crate run on: burn-cubecl's wgpu or
/// CUDA backend (as the enabled features build them), plain, under burn-fusion or under
/// `Autodiff`. Always false without the `wgpu`/`cuda` features.
///
/// The core asks it when it loads convolution weights: burn-cubecl's convolutions read
/// weights channels-last and copy NCHW-contiguous ones on every call, while the CPU backends
/// read NCHW (see `cidm_diffusion::nn::conv2d`).
pub fn on_cube_backend<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> bool {
    #[cfg(feature = "cube")]
    {
        crate::cube::on_cube_backend(tensor)
    }
    #[cfg(not(feature = "cube"))]
    {
        let _ = tensor;
        false
    }
}
