//! Axis ranges and tick positions: "nice" steps of 1, 2 or 5 times a power of ten, integer
//! steps for integer data (task numbers), and tick labels with as many decimals as the step
//! needs.

use super::FigureError;

/// About how many ticks an axis gets.
const TARGET_TICKS: f64 = 6.0;
/// An upper bound on the ticks of one axis, whatever the floating-point corner case.
const MAX_TICKS: usize = 50;

/// One axis: the data range mapped onto the plot area and its ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The value at the left (or bottom) edge of the plot area.
    pub min: f64,
    /// The value at the right (or top) edge of the plot area.
    pub max: f64,
    /// Tick positions, ascending, inside `[min, max]`.
    pub ticks: Vec<f64>,
    /// The label of each tick.
    pub labels: Vec<String>,
}

impl Axis {
    /// The axis of `values` (non-empty, finite): `fixed` if given; else, when `discrete`
    /// and every value is an integer (task numbers on x), half a unit beyond the extremes,
    /// so markers at the ends sit clear of the frame, with integer ticks; else the extremes
    /// widened by 5% of their span (by 5% of their magnitude, at least 0.5, when all values
    /// are equal).
    pub fn new(
        values: &[f64],
        fixed: Option<(f64, f64)>,
        discrete: bool,
    ) -> Result<Axis, FigureError> {
        let lowest = values.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let integer = discrete
            && values
                .iter()
                .all(|v| v.fract() == 0.0 && v.abs() <= 2f64.powi(53));
        let (min, max) = match fixed {
            Some((lo, hi)) => {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return Err(FigureError::InvalidRange { min: lo, max: hi });
                }
                (lo, hi)
            }
            None if integer => (lowest - 0.5, highest + 0.5),
            None if highest > lowest => {
                let pad = (highest - lowest) * 0.05;
                (lowest - pad, highest + pad)
            }
            None => {
                let pad = (lowest.abs() * 0.05).max(0.5);
                (lowest - pad, highest + pad)
            }
        };
        let span = max - min;
        if !(span.is_finite() && span > 0.0) {
            return Err(FigureError::RangeOverflow { min, max });
        }
        let mut step = nice_step(span);
        if integer && fixed.is_none() {
            step = step.max(1.0);
        }
        if !(step.is_finite() && step > 0.0) {
            return Err(FigureError::RangeOverflow { min, max });
        }
        let ticks = ticks(min, max, step);
        let labels = ticks.iter().map(|&t| label(t, step)).collect();
        Ok(Axis {
            min,
            max,
            ticks,
            labels,
        })
    }

    /// Where `value` falls between `min` (0) and `max` (1).
    pub fn fraction(&self, value: f64) -> f64 {
        (value - self.min) / (self.max - self.min)
    }
}

/// 1, 2 or 5 times a power of ten, near `span / TARGET_TICKS`.
fn nice_step(span: f64) -> f64 {
    let raw = span / TARGET_TICKS;
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalised = raw / magnitude;
    let factor = if normalised < 1.5 {
        1.0
    } else if normalised < 3.5 {
        2.0
    } else if normalised < 7.5 {
        5.0
    } else {
        10.0
    };
    factor * magnitude
}

/// The multiples of `step` in `[min, max]`.
fn ticks(min: f64, max: f64, step: f64) -> Vec<f64> {
    let first = (min / step).ceil();
    let last = (max / step).floor();
    let count = last - first + 1.0;
    if !(count.is_finite() && count >= 1.0) {
        return Vec::new();
    }
    let count = (count as usize).min(MAX_TICKS);
    (0..count)
        .map(|i| (first + i as f64) * step)
        .filter(|t| (min..=max).contains(t))
        .collect()
}

/// `value` with the decimals `step` needs (`0.2` -> one, `0.05` -> two), in scientific
/// notation for very large or very small magnitudes; zero is never printed as `-0`.
fn label(value: f64, step: f64) -> String {
    let value = if value.abs() < step * 1e-9 {
        0.0
    } else {
        value
    };
    let magnitude = value.abs().max(step);
    if !(1e-4..1e6).contains(&magnitude) {
        return format!("{value:.2e}");
    }
    let decimals = (-step.log10() - 1e-9).ceil().max(0.0) as usize;
    format!("{value:.decimals$}")
}
