//! Backend failures that burn reports by panicking. burn 0.21's tensor API has no error
//! path for a device that runs out of memory or refuses a kernel: burn and CubeCL panic,
//! first on CubeCL's device thread (whose panic message says what failed) and then, the
//! device's channel being down, on the caller's thread. [`catch_backend_panic`] turns the
//! caller's panic into an error, so a program (the `cidm` CLI, the GPU benchmark) can report
//! it and exit, or go on with other work, instead of aborting with a panic.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A panic caught by [`catch_backend_panic`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a panic stopped the work: {message} (the panic messages above say what failed, e.g. the device ran out of memory)")]
pub struct BackendPanic {
    /// The panic's message (`&str` or `String` payloads; a placeholder for others).
    pub message: String,
}

/// Runs `work`, turning a panic into [`BackendPanic`]. The panic hook still prints each panic
/// and its location to stderr. Whatever `work` was changing may be left half-changed: use
/// this where the work's state is dropped after a failure (a command, a benchmark workload),
/// not to retry on the same tensors.
pub fn catch_backend_panic<T>(work: impl FnOnce() -> T) -> Result<T, BackendPanic> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| BackendPanic {
        message: message(payload.as_ref()),
    })
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal and formatted panic messages come back as they were written, other payloads
    /// as a placeholder; a result without a panic passes through.
    #[test]
    fn panics_become_errors() {
        let literal = catch_backend_panic(|| panic!("kernel failed"));
        assert_eq!(literal.unwrap_err().message, "kernel failed");
        let bytes = 141_557_760;
        let formatted = catch_backend_panic(|| panic!("can't allocate buffer of size: {bytes}"));
        assert_eq!(
            formatted.unwrap_err().message,
            "can't allocate buffer of size: 141557760"
        );
        let other = catch_backend_panic(|| std::panic::panic_any(7u8));
        assert_eq!(other.unwrap_err().message, "a panic without a message");
        assert_eq!(catch_backend_panic(|| 3), Ok(3));
    }
}
