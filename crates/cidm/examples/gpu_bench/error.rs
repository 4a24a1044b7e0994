//! The benchmark's one error type: every library error it can meet, typed, so a failed
//! measurement says which crate refused what.

use cidm::backend_panic::catch_backend_panic;

use crate::failed_tasks;

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
    /// What several workloads share (the UNet, the EWA model) could not be set up: a record
    /// `unet_setup` or `ewa_setup` carries the reason, and the run stops (with the device
    /// lost, nothing after it would run either).
    #[error("setting up failed: {0}")]
    Setup(String),
    /// A workload panicked (burn and CubeCL panic where a kernel fails to compile or launch,
    /// or the device runs out of memory); the message is the panic's, then those of other
    /// threads' panics during the workload (CubeCL's device thread says what failed).
    #[error("panicked: {0}")]
    Panicked(String),
    /// Kernel tasks failed on CubeCL's device thread during a workload, which CubeCL only
    /// logs: its timing would count work that did not run.
    #[error("{0} kernel task(s) failed on the device thread (CubeCL's \"Task failed\" warnings in the log)")]
    FailedTasks(usize),
}

/// The benchmark's result type.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Runs `work`, turning a panic into [`BenchError::Panicked`] (`cidm::backend_panic`), so
/// that one workload that fails that way on a GPU (the first run of a kernel on a new device
/// is where compilation and launch errors show) becomes an error record and the workloads
/// after it still run (the panic hook still prints the panic and its location to stderr);
/// and a workload during which CubeCL logged a failed device task (`failed_tasks.rs`) into
/// [`BenchError::FailedTasks`]. Every workload ends with a device sync, so its tasks have
/// run, and logged, before it returns.
pub fn guarded<T>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    let failed_before = failed_tasks::count();
    let result = catch_backend_panic(work)
        .unwrap_or_else(|panic| Err(BenchError::Panicked(panic.what_failed())));
    match failed_tasks::count() - failed_before {
        0 => result,
        failed => result.and(Err(BenchError::FailedTasks(failed))),
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    use super::*;
    use crate::failed_tasks::FailedTasks;

    /// A panic becomes an error carrying its message; results and errors pass through
    /// unchanged. CubeCL's "Task failed" warning, logged through
    /// `log` as its device thread does, fails the workload it was logged in; other warnings,
    /// and the same message from another crate, do not. (One test: the count is global.)
    #[test]
    fn panics_and_failed_device_tasks_become_errors() {
        let panicked = guarded::<()>(|| panic!("out of memory: {} bytes", 64));
        assert!(matches!(panicked, Err(BenchError::Panicked(m)) if m == "out of memory: 64 bytes"));
        assert_eq!(guarded(|| Ok(3)).unwrap(), 3);
        let refused = guarded::<()>(|| Err(BenchError::NoGradient));
        assert!(matches!(refused, Err(BenchError::NoGradient)));

        tracing_subscriber::registry()
            .with(FailedTasks.with_filter(LevelFilter::WARN))
            .try_init()
            .expect("the test's subscriber is the first");
        const CHANNEL: &str = "cubecl_common::device::handle::channel";
        let failed = guarded(|| {
            log::warn!(target: CHANNEL, "Task failed: {:?}", "compilation error");
            Ok(3)
        });
        assert!(matches!(failed, Err(BenchError::FailedTasks(1))));
        let others = guarded(|| {
            log::warn!(target: CHANNEL, "Unable to save the ptx");
            log::warn!(target: "other_crate", "Task failed: not CubeCL's");
            log::info!(target: CHANNEL, "Task failed: not a warning");
            Ok(3)
        });
        assert_eq!(others.unwrap(), 3);
    }
}
