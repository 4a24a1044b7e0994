//! The CubeCL kernels and their burn integration (compiled with the `wgpu`/`cuda` features).

mod autodiff;
mod backward_kernel;
mod dispatch;
mod forward_kernel;
mod launch;
mod ops;
mod tile;

pub(crate) use dispatch::dispatch;
