//! The benchmark's output: one line per measurement in the format the PyTorch reference
//! (`tools/gpu_bench_reference.py`) prints too, so that `tools/gpu_bench.sh` can pair them by
//! name and dtype:
//!
//! `cidm NAME dtype=f16 device=cuda median_ms=49.300 min_ms=48.100 reps=10 [peak_mib=7577.6 mem=METHOD] [max_rel_err=3.1e-4]`
//!
//! (`max_rel_err`: the fused attention's deviation from the plain path, on its records.)
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
    /// For the fused attention: `max |fused - plain| / max |plain|` over its results.
    pub max_rel_err: Option<f64>,
    /// Why the workload failed.
    pub error: Option<String>,
}

/// What a workload that ran measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Its timing.
    pub timing: Timing,
    /// Peak memory, where the workload reads it.
    pub memory: Option<PeakMemory>,
    /// The fused attention's checked deviation, on its records.
    pub max_rel_err: Option<f64>,
}

impl From<Timing> for Measured {
    fn from(timing: Timing) -> Self {
        Self {
            timing,
            memory: None,
            max_rel_err: None,
        }
    }
}

impl Record {
    /// The record of workload `name`: its measurements, or why it failed.
    pub fn new(
        name: String,
        dtype: &'static str,
        device: &'static str,
        result: crate::error::Result<Measured>,
    ) -> Self {
        let (measured, error) = match result {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            name,
            dtype,
            device,
            timing: measured.map(|m| m.timing),
            memory: measured.and_then(|m| m.memory),
            max_rel_err: measured.and_then(|m| m.max_rel_err),
            error,
        }
    }

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
        if let Some(err) = self.max_rel_err {
            line += &format!(" max_rel_err={err:.1e}");
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
            max_rel_err: None,
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
        let checked = Record {
            name: "attn_q4096_k77_d40".into(),
            timing: Some(Timing {
                median_ms: 0.5,
                min_ms: 0.25,
                reps: 3,
            }),
            max_rel_err: Some(0.000_312),
            error: None,
            ..failed
        };
        assert_eq!(
            checked.line(),
            "cidm attn_q4096_k77_d40 dtype=f16 device=cuda median_ms=0.500 min_ms=0.250 reps=3 \
             max_rel_err=3.1e-4"
        );
    }
}
