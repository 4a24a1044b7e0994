//! [`Unfused`]: the inputs handed back when the fused kernel does not apply.

use burn::tensor::{backend::Backend, DType, Tensor};

/// Why [`crate::fused_attention`] did not run the fused kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnfusedReason {
    /// Switched off with `CIDM_FUSED_ATTENTION=0` or [`crate::set_fused_attention`].
    #[error(
        "fused attention is switched off ({} or set_fused_attention)",
        crate::SWITCH_VAR
    )]
    Disabled,
    /// A backend this build has no kernel for: NdArray, Flex in inference (its own attention
    /// runs) or without the `flex` feature, a GPU backend without the `wgpu`/`cuda`
    /// features.
    #[error("the backend has no fused attention kernel in this build")]
    Backend,
    /// Causal masking or soft-capping was asked for; the kernel implements neither.
    #[error("causal masking and soft-capping are not implemented by the fused kernel")]
    Options,
    /// Shapes the kernel does not take: empty sequences, batch or heads of k/v unlike q's,
    /// k and v of different lengths, a value width unlike the query width, a head width
    /// above [`crate::MAX_HEAD_DIM`], or more than 65535 batch-heads (one cube row each).
    #[error("attention shapes q {q:?}, k {k:?}, v {v:?} are not supported by the fused kernel")]
    Shape {
        /// Shape of the queries.
        q: [usize; 4],
        /// Shape of the keys.
        k: [usize; 4],
        /// Shape of the values.
        v: [usize; 4],
    },
    /// Not all three of one dtype among f32, f16 and bf16.
    #[error("dtypes q {q:?}, k {k:?}, v {v:?} are not supported by the fused kernel")]
    DType {
        /// Dtype of the queries.
        q: DType,
        /// Dtype of the keys.
        k: DType,
        /// Dtype of the values.
        v: DType,
    },
    /// The device cannot run the kernel for this dtype (no f16/bf16 shader support) or has
    /// too little shared memory for this head width.
    #[error("the device cannot run the fused kernel on {dtype:?} with head width {head_dim}")]
    Device {
        /// Dtype of the inputs.
        dtype: DType,
        /// Width of a head.
        head_dim: usize,
    },
}

/// The unchanged inputs of [`crate::fused_attention`] and why the fused kernel did not apply;
/// the caller runs its plain attention on them.
#[derive(thiserror::Error)]
#[error("{reason}")]
pub struct Unfused<B: Backend> {
    /// Queries `[batch, heads, len_q, head_dim]`.
    pub q: Tensor<B, 4>,
    /// Keys `[batch, heads, len_k, head_dim]`.
    pub k: Tensor<B, 4>,
    /// Values `[batch, heads, len_k, head_dim]`.
    pub v: Tensor<B, 4>,
    /// Why the kernel did not run.
    pub reason: UnfusedReason,
}

impl<B: Backend> core::fmt::Debug for Unfused<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Unfused")
            .field("q", &self.q.dims())
            .field("k", &self.k.dims())
            .field("v", &self.v.dims())
            .field("reason", &self.reason)
            .finish()
    }
}
