//! The fused operations every backend with kernels implements (the CubeCL kernels on the GPU
//! backends, loops over slices on Flex), and each one's autodiff node, generic over those
//! backends: one node, one saved state and one gradient rule per operation, whatever computes
//! it.

pub(crate) mod geglu;
pub(crate) mod group_norm;
pub(crate) mod layer_norm;
