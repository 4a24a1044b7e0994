//! The benchmark's one error type: every library error it can meet, typed, so a failed
//! measurement says which crate refused what.

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The diffusion core refused a config or an input.
    #[error(transparent)]
    Diffusion(#[from] cidm::diffusion::Error),
    /// LoRA setup or training failed.
    #[error(transparent)]
    Lora(#[from] cidm::lora::LoraError),
    /// Elastic weight aggregation failed.
    #[error(transparent)]
    Ewa(#[from] cidm::ewa::EwaError),
    /// Regional sampling setup or a regional step failed.
    #[error(transparent)]
    Regions(#[from] cidm::regions::RegionError),
    /// The backend could not finish its queued work (device sync).
    #[error("backend sync failed: {0}")]
    Sync(String),
    /// A tensor could not be read back to the host as f32.
    #[error("reading a tensor back: {0}")]
    ReadBack(String),
    /// A fused kernel (attention, group norm) did not take a workload's inputs.
    #[error("the fused kernel did not run: {0}")]
    Unfused(String),
    /// A fused kernel's results differ from the plain path's.
    #[error("the fused kernel deviates from the plain path by {deviation:.2e} (max |fused - plain| / max |plain|), above {tolerance:.0e}")]
    Mismatch {
        /// The largest relative deviation over the compared tensors.
        deviation: f64,
        /// The largest accepted.
        tolerance: f64,
    },
    /// A tensor that requires a gradient got none from the backward pass.
    #[error("the backward pass gave an input no gradient")]
    NoGradient,
    /// A command-line value is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Reading a profile or writing the JSON report failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A profile file is not what `gpu_bench profile` reads.
    #[error("reading a profile: {0}")]
    Profile(String),
    /// Serialising the JSON report or the config, or parsing a profile, failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A workload panicked (burn and CubeCL panic where a kernel fails to compile or launch,
    /// or the device runs out of memory); the message is the panic's.
    #[error("panicked: {0}")]
    Panicked(String),
}

/// The benchmark's result type.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Runs `work`, turning a panic into [`BenchError::Panicked`], so that one workload that
/// fails that way on a GPU (the first run of a kernel on a new device is where compilation
/// and launch errors show) becomes an error record and the workloads after it still run.
/// The panic hook still prints the panic and its location to stderr.
pub fn guarded<T>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(BenchError::Panicked(message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic with a literal or a formatted message becomes an error carrying it; results
    /// and errors pass through unchanged.
    #[test]
    fn panics_become_errors() {
        let literal = guarded::<()>(|| panic!("kernel failed"));
        assert!(matches!(literal, Err(BenchError::Panicked(m)) if m == "kernel failed"));
        let formatted = guarded::<()>(|| panic!("out of memory: {} bytes", 64));
        assert!(
            matches!(formatted, Err(BenchError::Panicked(m)) if m == "out of memory: 64 bytes")
        );
        assert_eq!(guarded(|| Ok(3)).unwrap(), 3);
        let refused = guarded::<()>(|| Err(BenchError::NoGradient));
        assert!(matches!(refused, Err(BenchError::NoGradient)));
    }
}
