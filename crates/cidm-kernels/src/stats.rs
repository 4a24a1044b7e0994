//! Counts of fused and plain attention calls, so a benchmark or a test can confirm which
//! path a model actually took (a silent fallback would look like a slow kernel).

use std::sync::atomic::{AtomicU64, Ordering};

static FUSED: AtomicU64 = AtomicU64::new(0);
static UNFUSED: AtomicU64 = AtomicU64::new(0);

/// Calls of [`crate::fused_attention`] since the process started, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatchCounts {
    /// Calls that ran the fused kernel.
    pub fused: u64,
    /// Calls that returned [`crate::Unfused`].
    pub unfused: u64,
}

/// The current [`DispatchCounts`] (process-wide, monotonic).
pub fn dispatch_counts() -> DispatchCounts {
    DispatchCounts {
        fused: FUSED.load(Ordering::Relaxed),
        unfused: UNFUSED.load(Ordering::Relaxed),
    }
}

pub(crate) fn record(fused: bool) {
    let counter = if fused { &FUSED } else { &UNFUSED };
    counter.fetch_add(1, Ordering::Relaxed);
}
