//! Wall-clock timing of one workload: warm-up runs (kernel compilation, autotuning and memory
//! pool growth happen there, not in the figures), then timed repetitions, each ending with a
//! device sync so that the clock reads finished work, not queued work.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;

/// Median and minimum of the timed repetitions of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// Median wall time of one repetition, in milliseconds.
    pub median_ms: f64,
    /// Fastest repetition, in milliseconds.
    pub min_ms: f64,
    /// Number of timed repetitions.
    pub reps: usize,
}

/// Runs `work` `warmup` times untimed, then `reps` times timed. `work` must end with a device
/// sync (or a read-back) so that each repetition's time covers its computation.
pub fn measure(warmup: usize, reps: usize, mut work: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        work()?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        work()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(summarize(times))
}

/// Median (mean of the two middle values for an even count) and minimum of `times`.
fn summarize(mut times: Vec<f64>) -> Timing {
    times.sort_by(f64::total_cmp);
    let reps = times.len();
    let median_ms = match reps {
        0 => f64::NAN,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    };
    Timing {
        median_ms,
        min_ms: times.first().copied().unwrap_or(f64::NAN),
        reps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd counts take the middle value, even counts the mean of the two middle ones; the
    /// minimum is the smallest whatever the order.
    #[test]
    fn median_and_min() {
        let odd = summarize(vec![5.0, 1.0, 3.0]);
        assert_eq!((odd.median_ms, odd.min_ms, odd.reps), (3.0, 1.0, 3));
        let even = summarize(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((even.median_ms, even.min_ms), (2.5, 1.0));
    }
}
