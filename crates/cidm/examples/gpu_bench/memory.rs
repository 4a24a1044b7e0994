//! Peak memory of the training step, measured the way each backend allows.
//!
//! burn 0.21 has no memory query on its `Backend` trait and CubeCL 0.10 keeps no peak
//! counter, but CubeCL's memory pool keeps freed pages for reuse (only some of its pools give
//! back pages left unused for many allocations), so the bytes the pool has reserved right
//! after the training repetitions approximate its high-water mark from below: what the device
//! had to hold for them, comparable to PyTorch's `max_memory_reserved` (an upper bound of its
//! `max_memory_allocated`). On the CPU the process's peak resident set (`VmHWM`) is read.

use serde::Serialize;

use cidm::backend::Selected;

/// One peak-memory reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PeakMemory {
    /// Bytes, as a float of MiB for the report.
    pub peak_mib: f64,
    /// How it was measured (`cubecl_pool_reserved` or `process_peak_rss`).
    pub method: &'static str,
}

/// The current high-water mark on `device`, or `None` where it cannot be read.
#[cfg(feature = "cuda")]
pub fn peak(device: &burn::tensor::Device<Selected>) -> Option<PeakMemory> {
    use burn::cubecl::Runtime;
    let usage = burn::cubecl::cuda::CudaRuntime::client(device)
        .memory_usage()
        .ok()?;
    Some(pool(usage.bytes_reserved))
}

/// The current high-water mark on `device`, or `None` where it cannot be read.
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub fn peak(device: &burn::tensor::Device<Selected>) -> Option<PeakMemory> {
    use burn::cubecl::Runtime;
    let usage = burn::cubecl::wgpu::WgpuRuntime::client(device)
        .memory_usage()
        .ok()?;
    Some(pool(usage.bytes_reserved))
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn pool(bytes: u64) -> PeakMemory {
    PeakMemory {
        peak_mib: bytes as f64 / MIB,
        method: "cubecl_pool_reserved",
    }
}

/// The process's peak resident set so far, or `None` where `/proc` is not available.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
pub fn peak(_device: &burn::tensor::Device<Selected>) -> Option<PeakMemory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = peak_rss_kib(&status)?;
    Some(PeakMemory {
        peak_mib: kib as f64 * 1024.0 / MIB,
        method: "process_peak_rss",
    })
}

/// The `VmHWM` line of `/proc/self/status` (`VmHWM:   123456 kB`), in KiB.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn peak_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

const MIB: f64 = (1u64 << 20) as f64;

#[cfg(all(test, not(any(feature = "cuda", feature = "wgpu"))))]
mod tests {
    use super::*;

    /// The value is the number on the `VmHWM` line, in kB; a status without it gives `None`.
    #[test]
    fn reads_vm_hwm() {
        let status =
            "Name:\tgpu_bench\nVmPeak:\t  900000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(peak_rss_kib(status), Some(123456));
        assert_eq!(peak_rss_kib("Name:\tx\n"), None);
    }
}
