//! Fused GPU kernels for cidm, written with CubeCL.
//!
//! [`fused_attention`] is a flash attention: `softmax(Q K^T * scale) V` with an online
//! softmax and f32 accumulation, never forming the score matrix, plus its backward
//! (FlashAttention-2: recomputed probabilities from the stored per-row logsumexp, one kernel
//! parallel over query rows, one over key rows and ranges of query rows, whose partial sums
//! a third adds up; no atomics). It is generic over the burn backend so that models need
//! no extra trait bounds: it recognises burn-cubecl backends at run time (plain, under
//! burn-fusion and under `Autodiff`, where the fused backward becomes the node's gradient)
//! and hands the inputs back as [`Unfused`] on any other backend, so the caller runs its
//! plain attention.
//!
//! The features `wgpu` and `cuda` compile the kernels for those runtimes; without either,
//! the crate has no CubeCL dependency and [`fused_attention`] always returns [`Unfused`].
//! Setting `CIDM_FUSED_ATTENTION=0` forces the plain path ([`SWITCH_VAR`]), and
//! [`set_fused_attention`] does so from code, at run time.

mod attention;
mod stats;
mod switch;
mod unfused;

#[cfg(feature = "cube")]
mod cube;

pub use attention::{fused_attention, MAX_HEAD_DIM};
pub use stats::{dispatch_counts, DispatchCounts};
pub use switch::{fused_attention_enabled, set_fused_attention, SWITCH_VAR};
pub use unfused::{Unfused, UnfusedReason};
