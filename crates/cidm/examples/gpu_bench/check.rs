//! What the kernel records (attention, group norm) share: each times a fused kernel of
//! `cidm-kernels` against the plain path it replaces, after checking on the same device that
//! both compute the same values, so the GPU run tests the kernels too.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{guarded, BenchError, Result};
use crate::report::Measured;
use crate::timing::Timing;

/// Whether this build has the fused kernels: the CubeCL kernels on a GPU backend (the `wgpu`
/// or `cuda` feature), the loops of `cidm-kernels` on Flex (the default `flex` feature);
/// without them (NdArray) only the plain paths are timed.
const FUSED_BUILD: bool = cfg!(any(feature = "wgpu", feature = "cuda", feature = "flex"));
/// Largest `max |fused - plain| / max |plain|` accepted in f32: both sum in f32, in
/// different orders (and the plain matmuls may use TF32 tensor cores on a GPU).
const TOL_F32: f64 = 5e-3;
/// The same in f16/bf16, where both round their results to 11 (8) significant bits.
const TOL_HALF: f64 = 2e-2;

/// The two records of one shape and pass: the fused kernel (with its check) and the plain
/// path.
pub struct Comparison {
    /// The fused kernel's timing and its largest relative deviation from the plain path;
    /// `None` in a build without the kernels.
    fused: Option<Result<(Timing, f64)>>,
    /// The plain path's timing.
    plain: Result<Timing>,
}

impl Comparison {
    /// Checks that the fused kernel takes the inputs (`refusal` gives the reason when it
    /// does not), compares its results with the plain path's (`run(true)` against
    /// `run(false)`, within the tolerance of f16/bf16 when `half`), and times both.
    pub fn new<B: Backend, const D: usize>(
        refusal: impl FnOnce() -> Option<String>,
        half: bool,
        run: impl Fn(bool) -> Result<Vec<Tensor<B, D>>>,
        time: impl Fn(bool) -> Result<Timing>,
    ) -> Self {
        let fused = FUSED_BUILD.then(|| {
            guarded(|| {
                if let Some(reason) = refusal() {
                    return Err(BenchError::Unfused(reason));
                }
                let deviation = max_deviation(run(true)?, run(false)?)?;
                let tolerance = if half { TOL_HALF } else { TOL_F32 };
                if deviation.is_nan() || deviation > tolerance {
                    return Err(BenchError::Mismatch {
                        deviation,
                        tolerance,
                    });
                }
                Ok((time(true)?, deviation))
            })
        });
        Self {
            fused,
            plain: guarded(|| time(false)),
        }
    }

    /// The records under `name` (the fused kernel, with its deviation; absent in a build
    /// without the kernels) and `{name}_plain`.
    pub fn records(self, name: &str) -> Vec<(String, Result<Measured>)> {
        let mut records = Vec::new();
        if let Some(fused) = self.fused {
            let measured = fused.map(|(timing, deviation)| Measured {
                max_rel_err: Some(deviation),
                ..timing.into()
            });
            records.push((name.to_owned(), measured));
        }
        records.push((format!("{name}_plain"), self.plain.map(Measured::from)));
        records
    }
}

/// Runs `work` with a kernel switch forced to `fused` through its setter
/// (`set_fused_attention`, `set_fused_group_norm`), then hands the switch back to its
/// environment variable, also when `work` panics (the records go on after a panicking one):
/// the records compare both paths whatever the variable says, so a whole run with a kernel
/// switched off (timing the UNet steps without it) still checks and times the kernel here.
pub fn forced<T>(set: fn(Option<bool>), fused: bool, work: impl FnOnce() -> T) -> T {
    /// Hands the switch back when dropped, on return or unwinding.
    struct Restore(fn(Option<bool>));
    impl Drop for Restore {
        fn drop(&mut self) {
            (self.0)(None)
        }
    }
    set(Some(fused));
    let _restore = Restore(set);
    work()
}

/// The largest `max |a - b| / max |b|` over pairs of tensors (NaN if any value is not
/// finite).
pub fn max_deviation<B: Backend, const D: usize>(
    fused: Vec<Tensor<B, D>>,
    plain: Vec<Tensor<B, D>>,
) -> Result<f64> {
    let mut worst = 0.0f64;
    for (a, b) in fused.into_iter().zip(plain) {
        let (a, b) = (host(a)?, host(b)?);
        // Checked first: `f64::max` would drop a NaN.
        if a.iter().chain(&b).any(|x| !x.is_finite()) {
            return Ok(f64::NAN);
        }
        let scale = b.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
        let diff = a.iter().zip(&b).fold(0.0f64, |m, (&x, &y)| {
            m.max((f64::from(x) - f64::from(y)).abs())
        });
        worst = worst.max(diff / scale.max(f64::MIN_POSITIVE));
    }
    Ok(worst)
}

fn host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| BenchError::ReadBack(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use cidm::backend::Selected;

    /// The switch `forced` sets, as `set_fused_*` take it: 0 for `None` (the environment
    /// decides), 1 for `Some(false)`, 2 for `Some(true)`.
    static SWITCH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

    fn set(value: Option<bool>) {
        SWITCH.store(value.map_or(0, |on| 1 + u8::from(on)), Ordering::SeqCst);
    }

    /// `forced` holds the switch where it was forced while its work runs and hands it back
    /// afterwards, also when the work panics (which `guarded` turns into an error).
    #[test]
    fn forced_switch_is_handed_back() {
        assert_eq!(forced(set, true, || SWITCH.load(Ordering::SeqCst)), 2);
        assert_eq!(SWITCH.load(Ordering::SeqCst), 0);
        let panicked = guarded::<()>(|| forced(set, false, || panic!("kernel failed")));
        assert!(matches!(panicked, Err(BenchError::Panicked(_))));
        assert_eq!(SWITCH.load(Ordering::SeqCst), 0);
    }

    /// Identical results deviate by 0; one value off by 1% of the largest deviates by 0.01;
    /// a NaN anywhere (here not the last value) is reported as NaN, not hidden by `max`.
    #[test]
    fn deviation() {
        let device = Default::default();
        let t = |v: [f32; 4]| Tensor::<Selected, 1>::from_floats(v, &device).reshape([1, 1, 2, 2]);
        let base = t([1.0, -2.0, 0.5, 0.0]);
        assert_eq!(
            max_deviation(vec![base.clone()], vec![base.clone()]).unwrap(),
            0.0
        );
        let off = t([1.0, -2.0, 0.52, 0.0]);
        let d = max_deviation(vec![off], vec![base.clone()]).unwrap();
        assert!((d - 0.01).abs() < 1e-6, "{d}");
        let nan = t([1.0, f32::NAN, 0.5, 0.0]);
        assert!(max_deviation(vec![nan], vec![base]).unwrap().is_nan());
    }
}
