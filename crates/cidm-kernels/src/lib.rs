//! Fused kernels for cidm: written with CubeCL for the GPU backends, as loops over slices
//! for the CPU backend Flex.
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
//! [`fused_group_norm`] is `torch.nn.GroupNorm` with optional SiLU after it: shifted f32
//! sums per chunk of each (sample, group) block, the block's statistics, then one pass that
//! normalises, scales, shifts and activates; its backward is four kernels without atomics
//! (three when its weights are frozen: their gradients are computed only where asked for).
//! It reads x as it lies, NCHW-contiguous or channels-last (as a convolution leaves it),
//! writes the output channels-last (as a convolution, or the flattening into tokens, reads
//! it) and x's gradient in x's layout.
//! It dispatches the same way and hands back a [`GroupNormUnfused`] reason where it does not
//! apply, so the caller runs its plain norm.
//!
//! [`fused_layer_norm`] is `torch.nn.LayerNorm` over the last dimension: one kernel walks
//! each row (mean, variance of the centred values, then the normalised, scaled and shifted
//! output); its backward is one kernel per row for the input's gradient and column sums over
//! ranges of rows for the weights' (skipped when they are frozen). It dispatches like the
//! others ([`LayerNormUnfused`]).
//!
//! [`fused_geglu`] is the GEGLU of the UNet's feed-forward blocks, `hidden * gelu(gate)` from
//! the two halves of its input, one kernel each way; its backward uses GELU's exact
//! derivative and writes both halves of the input's gradient at once ([`GegluUnfused`]).
//!
//! With the `flex` feature, every entry point also runs on the CPU backend Flex in f32, with
//! and without `Autodiff`, as loops over slices parallel over independent blocks (rayon):
//! the attention as products of blocks of query rows (Flex's own attention runs on one
//! thread), its training node's backward recomputing the probabilities a block at a time so
//! that training keeps no `[queries, keys]` matrix (burn's composed attention keeps two per
//! call); the norms and GEGLU in two passes at most, where burn's composed ops take Flex's
//! element-by-element path for every broadcast or strided operand. The loops and the CubeCL
//! kernels implement the same operations (`fused_ops`), so one autodiff node per operation
//! serves both.
//!
//! [`fused_conv2d`] is a 2-D convolution (one group) for Flex alone, where burn's
//! convolution re-lays out the weight on one thread on every call: tiles of patches gathered
//! in the weight's own order, multiplied on rayon's pool, and under autodiff one node whose
//! backward scatters x's gradient back over the patches ([`ConvUnfused`] elsewhere, and the
//! caller runs burn's convolution).
//!
//! [`fused_linear`] is the linear layer `x W + b` for Flex alone, where burn's matmul zeroes
//! and copies its output before the product and the bias is one more operation: the output
//! written once, filled with the bias and the product added into it, and under autodiff one
//! node ([`LinearUnfused`] elsewhere, and the caller runs burn's matmul and add).
//!
//! [`on_cube_backend`] says whether a tensor is on a backend the kernels run on, for layout
//! choices that follow burn-cubecl's kernels (convolution weights).
//!
//! The features `wgpu` and `cuda` compile the kernels for those runtimes; without them the
//! crate has no CubeCL dependency, and without `flex` either every entry point always
//! declines. Setting
//! `CIDM_FUSED_ATTENTION=0` ([`SWITCH_VAR`]), `CIDM_FUSED_GROUP_NORM=0`
//! ([`GROUP_NORM_SWITCH_VAR`]), `CIDM_FUSED_LAYER_NORM=0` ([`LAYER_NORM_SWITCH_VAR`]) or
//! `CIDM_FUSED_GEGLU=0` ([`GEGLU_SWITCH_VAR`]), `CIDM_FUSED_CONV=0` ([`CONV_SWITCH_VAR`]) or
//! `CIDM_FUSED_LINEAR=0` ([`LINEAR_SWITCH_VAR`]) forces that plain path, and
//! [`set_fused_attention`], [`set_fused_group_norm`], [`set_fused_layer_norm`],
//! [`set_fused_geglu`], [`set_fused_conv`] and [`set_fused_linear`] do so from code, at run
//! time.

mod attention;
#[cfg(any(feature = "cube", feature = "flex"))]
mod autodiff_node;
mod backend_probe;
mod conv;
mod cpu_pool;
#[cfg(feature = "cuda-source")]
pub mod cuda_source;
mod geglu;
mod group_norm;
mod layer_norm;
mod linear;
mod norm_inputs;
mod stats;
mod switch;
mod unfused;

#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "flex")]
mod flex;
#[cfg(any(feature = "cube", feature = "flex"))]
mod fused_ops;

pub use attention::{fused_attention, MAX_HEAD_DIM};
pub use backend_probe::on_cube_backend;
pub use conv::{fused_conv2d, ConvUnfused};
pub use cpu_pool::on_cpu_pool;
pub use geglu::{fused_geglu, GegluUnfused};
pub use group_norm::{fused_group_norm, GroupNormOptions, GroupNormUnfused};
pub use layer_norm::{fused_layer_norm, LayerNormUnfused};
pub use linear::{fused_linear, LinearUnfused};
pub use stats::{
    conv_dispatch_counts, dispatch_counts, geglu_dispatch_counts, group_norm_dispatch_counts,
    layer_norm_dispatch_counts, linear_dispatch_counts, tensor_core_attention_calls,
    tuned_attention_calls, DispatchCounts,
};
pub use switch::{
    attention_held_values, attention_tensor_cores_enabled, fused_attention_enabled,
    fused_conv_enabled, fused_geglu_enabled, fused_group_norm_enabled, fused_layer_norm_enabled,
    fused_linear_enabled, set_attention_tensor_cores, set_fused_attention, set_fused_conv,
    set_fused_geglu, set_fused_group_norm, set_fused_layer_norm, set_fused_linear, CONV_SWITCH_VAR,
    DEFAULT_ATTENTION_HELD_VALUES, GEGLU_SWITCH_VAR, GROUP_NORM_SWITCH_VAR, HELD_VALUES_VAR,
    LAYER_NORM_SWITCH_VAR, LINEAR_SWITCH_VAR, SWITCH_VAR, TENSOR_CORES_SWITCH_VAR,
};
pub use unfused::{Unfused, UnfusedReason};
