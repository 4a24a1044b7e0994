//! The CubeCL kernels and their burn integration (compiled with the `wgpu`/`cuda` features).
//!
//! A limit every kernel here respects: Mesa's llvmpipe, under the lavapipe Vulkan driver that
//! CI tests on, ends all loops of a shader invocation after 65535 iterations in total,
//! silently. Loops therefore walk rows, tiles or strided ranges whose length stays far below
//! that at Stable Diffusion's sizes, never one element per iteration of a whole tensor.

mod attention;
#[cfg(feature = "cuda-source")]
mod cuda_source;
mod dispatch;
mod fusion_op;
mod geglu;
mod group_norm;
mod host;
mod layer_norm;
mod reduce;

#[cfg(feature = "cuda-source")]
pub(crate) use attention::cuda_sources as attention_cuda_sources;
pub(crate) use attention::fused as fused_attention;
#[cfg(feature = "cuda-source")]
pub(crate) use cuda_source::fused_op_sources as fused_op_cuda_sources;
pub(crate) use dispatch::on_cube_backend;
pub(crate) use geglu::fused as fused_geglu;
pub(crate) use group_norm::fused as fused_group_norm;
pub(crate) use layer_norm::fused as fused_layer_norm;
