//! The benchmark's output: one line per measurement in the format the PyTorch reference
//! (`tools/gpu_bench_reference.py`) prints too, so that `tools/gpu_bench.sh` can pair them by
//! name and dtype:
//!
//! `cidm NAME dtype=f16 device=cuda median_ms=49.300 min_ms=48.100 reps=10 [peak_mib=7577.6 mem=METHOD]`
//!
//! A measurement that failed prints `cidm NAME dtype=.. device=.. error="..."` instead, so one
//! failing workload does not hide the others.

use serde::Serialize;

use crate::memory::PeakMemory;
use crate::timing::Timing;

/// The prefix of every line of ours (the reference prints `torch`).
pub const PREFIX: &str = "cidm";

/// One measurement's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Workload name, e.g. `unet_step_cfg_b2`.
    pub name: String,
    /// Float type computed in (`f32` or `f16`).
    pub dtype: &'static str,
    /// Backend that ran it (`cuda`, `wgpu`, `flex`, `ndarray`).
    pub device: &'static str,
    /// The timing, or `None` when the workload failed.
    pub timing: Option<Timing>,
    /// Peak memory, for the training step where the backend can report it.
    pub memory: Option<PeakMemory>,
    /// Why the workload failed.
    pub error: Option<String>,
}

impl Record {
    /// The record's output line.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{PREFIX} {} dtype={} device={}",
            self.name, self.dtype, self.device
        );
        if let Some(t) = &self.timing {
            line += &format!(
                " median_ms={:.3} min_ms={:.3} reps={}",
                t.median_ms, t.min_ms, t.reps
            );
        }
        if let Some(m) = &self.memory {
            line += &format!(" peak_mib={:.1} mem={}", m.peak_mib, m.method);
        }
        if let Some(e) = &self.error {
            line += &format!(" error={:?}", e.replace('\n', " "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact text the runner parses: space-separated `key=value` fields after the prefix
    /// and the name, times with three decimals, memory with one.
    #[test]
    fn line_format() {
        let record = Record {
            name: "lora_train_step_b1".into(),
            dtype: "f16",
            device: "cuda",
            timing: Some(Timing {
                median_ms: 175.25,
                min_ms: 170.0,
                reps: 10,
            }),
            memory: Some(PeakMemory {
                peak_mib: 7577.6,
                method: "cubecl_pool_reserved",
            }),
            error: None,
        };
        assert_eq!(
            record.line(),
            "cidm lora_train_step_b1 dtype=f16 device=cuda median_ms=175.250 min_ms=170.000 \
             reps=10 peak_mib=7577.6 mem=cubecl_pool_reserved"
        );
        let failed = Record {
            timing: None,
            memory: None,
            error: Some("non-finite\nsample".into()),
            ..record
        };
        assert_eq!(
            failed.line(),
            "cidm lora_train_step_b1 dtype=f16 device=cuda error=\"non-finite sample\""
        );
    }
}
