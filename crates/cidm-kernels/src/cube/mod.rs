//! The CubeCL kernels and their burn integration (compiled with the `wgpu`/`cuda` features).
//!
//! Every loop over the head width is unrolled (`#[unroll]`; the width is a compile-time
//! parameter of each kernel). For two reasons: each unit's rows (`Array`s of the head width)
//! are then indexed by constants and can live in registers instead of local memory; and a
//! unit's loop iterations grow with the sequence alone. Mesa's llvmpipe, under the lavapipe
//! Vulkan driver that CI tests on, ends all loops of a shader invocation after 65535
//! iterations in total, silently: with a loop per head column, SD 1.5's 4096 keys at width
//! 40 (and 300 query rows at width 160) already went past it and gave wrong results there.
//! Unrolled, an invocation loops about once per key or query row it walks, plus its tile
//! loads. The price is shader compilation: lavapipe takes minutes for the test suite's
//! kernels the first time (Mesa caches them on disk after that).

mod autodiff;
mod backward_kernel;
mod dispatch;
mod forward_kernel;
mod launch;
mod ops;
mod tile;

pub(crate) use dispatch::dispatch;
