//! [`fused_attention`]: the backend-generic entry point of the flash-attention kernel.

use burn::tensor::{backend::Backend, ops::AttentionModuleOptions, DType, Tensor};

use crate::{stats, switch, Unfused, UnfusedReason};

/// Widest head the kernel takes. Each unit of the backward keeps four f32 rows of this
/// width in registers; Stable Diffusion's widest head is 160.
pub const MAX_HEAD_DIM: usize = 256;

/// Largest `batch * heads`: each is one row of the launch grid, whose dimensions are capped
/// at 65535 by the GPU APIs.
const MAX_BATCH_HEADS: usize = 65_535;

/// `softmax(q k^T * scale) v` through the fused flash-attention kernel when the backend is a
/// burn-cubecl one this build has kernels for (wgpu or CUDA, plain, under fusion and under
/// `Autodiff`), or, with the `flex` feature, as the CPU training node of `flex/attention.rs`
/// on `Autodiff<Flex>` in f32; else `Err(Unfused)` with the untouched inputs for the
/// caller's plain path.
///
/// The scale is `options.scale`, by default `1 / sqrt(head_dim)`; the softmax and all sums
/// are f32 whatever the input dtype (f32, f16 or bf16), and the output has the input dtype,
/// as with diffusers' upcast attention. Under `Autodiff` the gradients of q, k and v come
/// from the fused backward kernels.
///
/// # Shapes
/// - q: `[batch, heads, len_q, head_dim]`, k and v: `[batch, heads, len_k, head_dim]`
/// - output: `[batch, heads, len_q, head_dim]`
///
/// # Errors
/// [`Unfused`] (holding q, k and v) when the kernel does not apply; its
/// [`reason`](Unfused::reason) says why: switched off ([`crate::SWITCH_VAR`]), another
/// backend, causal masking or soft-capping, unsupported shapes or dtypes, or a device
/// without support for the dtype.
pub fn fused_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionModuleOptions,
) -> Result<Tensor<B, 4>, Unfused<B>> {
    let result = match unsupported(&q, &k, &v, &options) {
        Some(reason) => Err(Unfused { q, k, v, reason }),
        None => {
            let head_dim = q.dims()[3];
            let scale = options.scale.unwrap_or(1.0 / (head_dim as f64).sqrt()) as f32;
            run(q, k, v, scale)
        }
    };
    stats::ATTENTION.record(result.is_ok());
    if let Err(unfused) = &result {
        tracing::trace!(reason = %unfused.reason, "attention runs unfused");
    }
    result
}

/// The first reason, if any, why the kernel cannot take these inputs (independent of the
/// backend).
fn unsupported<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    options: &AttentionModuleOptions,
) -> Option<UnfusedReason> {
    if !switch::ATTENTION.enabled() {
        return Some(UnfusedReason::Disabled);
    }
    if options.is_causal || options.softcap.is_some() {
        return Some(UnfusedReason::Options);
    }
    let (dq, dk, dv) = (q.dims(), k.dims(), v.dims());
    let shapes_ok = dq[0] == dk[0]
        && dq[1] == dk[1]
        && dk == dv
        && dq[3] == dk[3]
        && dq[2] > 0
        && dk[2] > 0
        && (1..=MAX_HEAD_DIM).contains(&dq[3])
        && dq[0] * dq[1] <= MAX_BATCH_HEADS;
    if !shapes_ok {
        return Some(UnfusedReason::Shape {
            q: dq,
            k: dk,
            v: dv,
        });
    }
    let dtypes = (q.dtype(), k.dtype(), v.dtype());
    let float = matches!(dtypes.0, DType::F32 | DType::F16 | DType::BF16);
    if !float || dtypes.0 != dtypes.1 || dtypes.0 != dtypes.2 {
        return Some(UnfusedReason::DType {
            q: dtypes.0,
            k: dtypes.1,
            v: dtypes.2,
        });
    }
    None
}

/// The fused kernel where the backend has one, else (with the `flex` feature) the CPU
/// training node of `flex::attention`, else the inputs back.
#[cfg_attr(not(any(feature = "cube", feature = "flex")), allow(unused_variables))]
fn run<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
) -> Result<Tensor<B, 4>, Unfused<B>> {
    #[cfg(feature = "cube")]
    let result = crate::cube::fused_attention(q, k, v, scale);
    #[cfg(not(feature = "cube"))]
    let result = Err(Unfused {
        q,
        k,
        v,
        reason: UnfusedReason::Backend,
    });
    #[cfg(feature = "flex")]
    let result = match result {
        Err(unfused) if unfused.reason == UnfusedReason::Backend => {
            crate::flex::attention(unfused.q, unfused.k, unfused.v, scale)
        }
        result => result,
    };
    result
}
