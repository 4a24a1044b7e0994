//! The CubeCL kernels and their burn integration (compiled with the `wgpu`/`cuda` features).
//!
//! A limit every kernel here respects: Mesa's llvmpipe, under the lavapipe Vulkan driver that
//! CI tests on, ends all loops of a shader invocation after 65535 iterations in total,
//! silently. Loops therefore walk rows, tiles or strided ranges whose length stays far below
//! that at Stable Diffusion's sizes, never one element per iteration of a whole tensor.

mod attention;
mod dispatch;
mod fusion_op;
mod gradients;
mod group_norm;

pub(crate) use attention::fused as fused_attention;
pub(crate) use group_norm::fused as fused_group_norm;
