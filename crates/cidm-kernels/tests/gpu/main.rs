//! The fused kernels on wgpu (on CI: Mesa's lavapipe, a Vulkan driver on the CPU) against the
//! plain paths on Flex: each kernel alone, and all of them in one UNet. One test binary for
//! all of them: each binary links burn with wgpu, fusion and autodiff, which costs CI about
//! as much as the tests themselves.
#![cfg(feature = "wgpu")]

mod common;

mod conv_weights;
#[cfg(feature = "cuda-source")]
mod cuda_source;
mod flash_attention;
mod geglu;
mod group_norm;
mod layer_norm;
mod unet;
