//! Counts of fused and plain calls of each kernel, so a benchmark or a test can confirm which
//! path a model actually took (a silent fallback would look like a slow kernel).

use std::sync::atomic::{AtomicU64, Ordering};

/// Calls of one fused operation since the process started, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatchCounts {
    /// Calls that ran the fused kernel.
    pub fused: u64,
    /// Calls that fell back on the plain path.
    pub unfused: u64,
}

/// A kernel's process-wide, monotonic call counts.
pub(crate) struct Counter {
    fused: AtomicU64,
    unfused: AtomicU64,
}

impl Counter {
    const fn new() -> Self {
        Self {
            fused: AtomicU64::new(0),
            unfused: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, fused: bool) {
        let counter = if fused { &self.fused } else { &self.unfused };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> DispatchCounts {
        DispatchCounts {
            fused: self.fused.load(Ordering::Relaxed),
            unfused: self.unfused.load(Ordering::Relaxed),
        }
    }
}

/// Calls of [`crate::fused_attention`].
pub(crate) static ATTENTION: Counter = Counter::new();
/// Calls of [`crate::fused_group_norm`].
pub(crate) static GROUP_NORM: Counter = Counter::new();
/// Calls of [`crate::fused_layer_norm`].
pub(crate) static LAYER_NORM: Counter = Counter::new();
/// Calls of [`crate::fused_geglu`].
pub(crate) static GEGLU: Counter = Counter::new();
/// Calls of [`crate::fused_conv2d`].
pub(crate) static CONV: Counter = Counter::new();
/// Calls of [`crate::fused_linear`].
pub(crate) static LINEAR: Counter = Counter::new();

/// Fused attention calls that went through the f16 autotune.
static TUNED_ATTENTION: AtomicU64 = AtomicU64::new(0);
/// Of those, the calls whose output cubek's tensor-core attention wrote.
static TENSOR_CORE_ATTENTION: AtomicU64 = AtomicU64::new(0);

/// Counts one fused attention call that went through the f16 autotune, and whether the
/// autotune gave it to cubek's tensor-core attention.
#[cfg(feature = "cube")]
pub(crate) fn record_tuned_attention(tensor_cores: bool) {
    TUNED_ATTENTION.fetch_add(1, Ordering::Relaxed);
    if tensor_cores {
        TENSOR_CORE_ATTENTION.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many of [`dispatch_counts`]'s fused calls since the process started went through the
/// f16 autotune between this crate's kernel and cubek's tensor-core attention: f16 forwards
/// that no backward follows (without autodiff, or under it with no input needing a
/// gradient) on a burn-cubecl backend, with [`crate::TENSOR_CORES_SWITCH_VAR`] on. Those the
/// autotune gave to the tensor cores are [`tensor_core_attention_calls`]: where that stays 0
/// while this grows, the autotune found this crate's kernel the faster (or the device has
/// no tensor cores). Under burn-fusion a call counts when its stream runs.
pub fn tuned_attention_calls() -> u64 {
    TUNED_ATTENTION.load(Ordering::Relaxed)
}

/// How many of [`tuned_attention_calls`] ran on cubek's tensor-core attention rather than
/// this crate's kernel: on a GPU with tensor cores, where CubeCL's autotune found it the
/// faster for the shape. Under burn-fusion a call counts when its stream runs.
pub fn tensor_core_attention_calls() -> u64 {
    TENSOR_CORE_ATTENTION.load(Ordering::Relaxed)
}

/// The current [`DispatchCounts`] of [`crate::fused_attention`] (`unfused`: calls that
/// returned [`crate::Unfused`]).
pub fn dispatch_counts() -> DispatchCounts {
    ATTENTION.counts()
}

/// The current [`DispatchCounts`] of [`crate::fused_group_norm`].
pub fn group_norm_dispatch_counts() -> DispatchCounts {
    GROUP_NORM.counts()
}

/// The current [`DispatchCounts`] of [`crate::fused_layer_norm`].
pub fn layer_norm_dispatch_counts() -> DispatchCounts {
    LAYER_NORM.counts()
}

/// The current [`DispatchCounts`] of [`crate::fused_geglu`].
pub fn geglu_dispatch_counts() -> DispatchCounts {
    GEGLU.counts()
}

/// The current [`DispatchCounts`] of [`crate::fused_conv2d`].
pub fn conv_dispatch_counts() -> DispatchCounts {
    CONV.counts()
}

/// The current [`DispatchCounts`] of [`crate::fused_linear`].
pub fn linear_dispatch_counts() -> DispatchCounts {
    LINEAR.counts()
}
