//! Parity of the schedulers with diffusers 0.42.1, on golden values written by
//! `tools/scheduler_fixtures.py` into `tests/fixtures/schedulers.safetensors`, and the typed
//! errors for configs and inputs the schedulers refuse.
//!
//! Tolerances (measured against the committed fixture in brackets):
//! - timesteps (each trace, and every step count of eight spacing configurations) are compared
//!   exactly;
//! - `alphas_cumprod` to a relative [`ALPHAS_CUMPROD_RTOL`] = 1e-6 [3.8e-7; 0 for the cosine
//!   schedule]: torch evaluates `linspace` in float32 arithmetic and the crate in f64 rounded to
//!   f32, so some betas differ by an ulp;
//! - each scheduler step, started from diffusers' previous sample, and the DDPM results to an
//!   absolute [`SAMPLE_ATOL`] = 1e-5 [9.5e-7 and 2.4e-7]. The samples are float32 of magnitude
//!   up to about 3.5, where one ulp is 2.4e-7: the bound leaves room for the last-bit
//!   differences of the schedule, of the f64 host coefficients and of torch's SIMD paths on
//!   another CPU (the fixture can be regenerated there), while a wrong coefficient, timestep or
//!   solver-order switch moves samples by 1e-3 or more;
//! - each sample of the whole trajectory run from the crate's own samples to
//!   `SAMPLE_ATOL / sqrt(alphas_cumprod[t0])` [4.6e-5 against a bound of 1.6e-3 for the linear
//!   schedule, 4.3e-6 against 1.5e-4 for Stable Diffusion's]. The model outputs are replayed,
//!   not re-evaluated on the drifting sample, and then a step's rounding error grows like
//!   `sqrt(a_t / a_s)` over the rest of the run: up to `1 / sqrt(a_t0)` for errors made at the
//!   noisiest timestep. A real model re-evaluated on the sample does not amplify them this way.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::schedulers::{
    DdimScheduler, DdpmNoiser, DpmSolverMultistepScheduler, NoiseSchedule, PredictionType,
    Scheduler, SchedulerConfig, SchedulerKind, TimestepSpacing,
};
use cidm_diffusion::Error;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

type B = Flex;

/// Relative tolerance for `alphas_cumprod` (see the module docs).
const ALPHAS_CUMPROD_RTOL: f64 = 1e-6;
/// Absolute tolerance for samples (see the module docs).
const SAMPLE_ATOL: f32 = 1e-5;

fn fixture_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/schedulers.safetensors"
        );
        std::fs::read(path).expect("read the scheduler fixture")
    })
}

fn cases() -> &'static Value {
    static CASES: OnceLock<Value> = OnceLock::new();
    CASES.get_or_init(|| {
        let (_, metadata) = SafeTensors::read_metadata(fixture_bytes()).expect("fixture header");
        let text = &metadata.metadata().as_ref().expect("fixture metadata")["cases"];
        serde_json::from_str(text).expect("cases JSON")
    })
}

/// The shape and little-endian elements of a fixture tensor of the given dtype and width.
fn raw<const N: usize>(name: &str, dtype: Dtype) -> (Vec<usize>, Vec<[u8; N]>) {
    let tensors = SafeTensors::deserialize(fixture_bytes()).expect("fixture");
    let view = tensors
        .tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), dtype, "{name}");
    let chunks = view
        .data()
        .chunks_exact(N)
        .map(|c| c.try_into().unwrap())
        .collect();
    (view.shape().to_vec(), chunks)
}

fn f32s(name: &str) -> (Vec<usize>, Vec<f32>) {
    let (shape, raw) = raw::<4>(name, Dtype::F32);
    (shape, raw.into_iter().map(f32::from_le_bytes).collect())
}

fn i64s(name: &str) -> Vec<i64> {
    raw::<8>(name, Dtype::I64)
        .1
        .into_iter()
        .map(i64::from_le_bytes)
        .collect()
}

fn i32s(name: &str) -> Vec<i32> {
    raw::<4>(name, Dtype::I32)
        .1
        .into_iter()
        .map(i32::from_le_bytes)
        .collect()
}

fn u8s(name: &str) -> Vec<u8> {
    raw::<1>(name, Dtype::U8)
        .1
        .into_iter()
        .map(|[b]| b)
        .collect()
}

fn tensor(shape: &[usize], values: &[f32]) -> Tensor<B, 4> {
    let shape: [usize; 4] = shape.try_into().expect("a 4-d shape");
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

fn values(tensor: Tensor<B, 4>) -> Vec<f32> {
    tensor.into_data().to_vec::<f32>().expect("f32 data")
}

/// The largest absolute difference; infinite if either side has a NaN (which `f32::max`
/// would otherwise skip).
fn max_abs_diff(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| match (a - e).abs() {
            d if d.is_nan() => f32::INFINITY,
            d => d,
        })
        .fold(0.0, f32::max)
}

fn config(case: &Value) -> SchedulerConfig {
    serde_json::from_value(case["config"].clone()).expect("fixture config parses")
}

fn as_usize(timesteps: &[i64]) -> Vec<usize> {
    timesteps
        .iter()
        .map(|&t| usize::try_from(t).expect("non-negative"))
        .collect()
}

#[test]
fn alphas_cumprod_match_diffusers() {
    let schedules = cases()["schedules"].as_object().expect("schedules");
    assert_eq!(schedules.len(), 4);
    for (name, case) in schedules {
        let schedule = NoiseSchedule::new(&config(case)).unwrap();
        let (shape, expected) = f32s(&format!("schedule/{name}/alphas_cumprod"));
        assert_eq!(shape, [schedule.num_train_timesteps()], "{name}");
        for (t, (&a, &e)) in schedule.alphas_cumprod().iter().zip(&expected).enumerate() {
            let rel = (f64::from(a) - f64::from(e)).abs() / f64::from(e);
            assert!(
                rel <= ALPHAS_CUMPROD_RTOL,
                "{name}[{t}]: {a} vs diffusers {e}"
            );
        }
    }
}

/// Runs every trace of one scheduler kind through the crate and compares each step.
fn check_traces(kind: &str, build: SchedulerKind, default_spacing: TimestepSpacing) {
    let traces = cases()["traces"].as_object().expect("traces");
    let mut checked = 0;
    for (name, case) in traces.iter().filter(|(_, c)| c["scheduler"] == kind) {
        // The scheduler is built from the keys the fixture passed to diffusers; the config
        // diffusers saves (every key, `-Infinity` included) must read back to the same values,
        // with the scheduler's default spacing written out.
        let config = self::config(case);
        let saved = case["diffusers_config"].as_str().expect("saved config");
        let saved = SchedulerConfig::from_json_str(saved).unwrap_or_else(|e| panic!("{name}: {e}"));
        let spacing = config.timestep_spacing.or(Some(default_spacing));
        assert_eq!(
            saved,
            SchedulerConfig {
                timestep_spacing: spacing,
                ..config.clone()
            },
            "{name}"
        );

        let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
        let expected_timesteps = as_usize(&i64s(&format!("trace/{name}/timesteps")));
        let (shape, sample0) = f32s(&format!("trace/{name}/sample0"));
        let (_, outputs) = f32s(&format!("trace/{name}/model_outputs"));
        let (_, expected) = f32s(&format!("trace/{name}/samples"));
        let size = sample0.len();
        assert_eq!(outputs.len(), size * steps, "{name}");
        let output = |i: usize| tensor(&shape, &outputs[i * size..(i + 1) * size]);
        let expected = |i: usize| &expected[i * size..(i + 1) * size];

        // Step by step from diffusers' previous sample: the error of one step.
        let mut scheduler = build.build::<B>(&config, steps).unwrap();
        assert_eq!(
            scheduler.timesteps(),
            expected_timesteps,
            "{name}: timesteps"
        );
        for i in 0..steps {
            assert_eq!(scheduler.step_index(), i);
            let input = if i == 0 {
                &sample0[..]
            } else {
                expected(i - 1)
            };
            let sample = scheduler.step(output(i), tensor(&shape, input)).unwrap();
            let err = max_abs_diff(&values(sample), expected(i));
            assert!(err <= SAMPLE_ATOL, "{name} step {i}: max abs error {err:e}");
        }

        // The whole trajectory from the crate's own samples: replayed model outputs do not
        // respond to the sample, so the first step's rounding grows by up to 1/sqrt(a_t0).
        let a0 = NoiseSchedule::new(&config)
            .unwrap()
            .alpha_cumprod(expected_timesteps[0])
            .unwrap();
        let replay_tol = SAMPLE_ATOL / a0.sqrt();
        let mut scheduler = build.build::<B>(&config, steps).unwrap();
        let mut sample = tensor(&shape, &sample0);
        for i in 0..steps {
            sample = scheduler.step(output(i), sample).unwrap();
            let err = max_abs_diff(&values(sample.clone()), expected(i));
            assert!(
                err <= replay_tol,
                "{name} step {i} of the trajectory: {err:e}"
            );
        }
        let past_end = scheduler.step(tensor(&shape, &sample0), sample);
        assert!(
            matches!(past_end, Err(Error::InvalidInput(_))),
            "{name}: {past_end:?}"
        );
        checked += 1;
    }
    assert!(checked >= 5, "{kind}: only {checked} traces");
}

#[test]
fn ddim_traces_match_diffusers() {
    check_traces("ddim", SchedulerKind::Ddim, TimestepSpacing::Leading);
}

#[test]
fn dpm_solver_traces_match_diffusers() {
    check_traces(
        "dpm",
        SchedulerKind::DpmSolverMultistep,
        TimestepSpacing::Linspace,
    );
}

#[test]
fn ddpm_noising_matches_diffusers() {
    let ddpm = cases()["ddpm"].as_object().expect("ddpm cases");
    assert_eq!(ddpm.len(), 3);
    for (name, case) in ddpm {
        let timesteps: Vec<usize> = serde_json::from_value(case["timesteps"].clone()).unwrap();
        let (shape, original) = f32s(&format!("ddpm/{name}/original"));
        let (_, noise) = f32s(&format!("ddpm/{name}/noise"));
        let (_, noisy) = f32s(&format!("ddpm/{name}/noisy"));
        let (_, velocity) = f32s(&format!("ddpm/{name}/velocity"));
        let (x0, eps) = (tensor(&shape, &original), tensor(&shape, &noise));

        let base = config(case);
        let noiser = DdpmNoiser::new(&base).unwrap();
        let err = max_abs_diff(
            &values(
                noiser
                    .add_noise(x0.clone(), eps.clone(), &timesteps)
                    .unwrap(),
            ),
            &noisy,
        );
        assert!(err <= SAMPLE_ATOL, "{name} add_noise: {err:e}");
        let err = max_abs_diff(
            &values(
                noiser
                    .velocity(x0.clone(), eps.clone(), &timesteps)
                    .unwrap(),
            ),
            &velocity,
        );
        assert!(err <= SAMPLE_ATOL, "{name} velocity: {err:e}");

        for (prediction_type, target) in [
            (PredictionType::Epsilon, &noise),
            (PredictionType::VPrediction, &velocity),
            (PredictionType::Sample, &original),
        ] {
            let config = SchedulerConfig {
                prediction_type,
                ..base.clone()
            };
            let noiser = DdpmNoiser::new(&config).unwrap();
            let got = noiser
                .training_target(x0.clone(), eps.clone(), &timesteps)
                .unwrap();
            let err = max_abs_diff(&values(got), target);
            assert!(
                err <= SAMPLE_ATOL,
                "{name} {prediction_type:?} target: {err:e}"
            );
        }
    }
}

/// diffusers' timesteps for every step count: same length and order-sensitive checksum, and an
/// error exactly where diffusers' list is unusable (a negative or out-of-range timestep, or for
/// DPM-Solver++ a repeated first timestep).
#[test]
fn timesteps_match_diffusers_for_every_step_count() {
    let grids = cases()["grids"].as_object().expect("grids");
    assert_eq!(grids.len(), 8);
    for (name, case) in grids {
        let config = config(case);
        let lengths = i32s(&format!("grid/{name}/len"));
        let checksums = i32s(&format!("grid/{name}/checksum"));
        let usable = u8s(&format!("grid/{name}/usable"));
        assert_eq!(lengths.len(), config.num_train_timesteps, "{name}");
        // Only linspace spacing gives a usable list for every step count; the other grids
        // must exercise the refusal path.
        assert!(
            usable.contains(&0) || name.contains("linspace"),
            "{name}: no refused count"
        );
        for steps in 1..=config.num_train_timesteps {
            let timesteps = match case["scheduler"].as_str().unwrap() {
                "ddim" => DdimScheduler::new(&config, steps)
                    .map(|s| Scheduler::<B>::timesteps(&s).to_vec()),
                _ => DpmSolverMultistepScheduler::<B>::new(&config, steps)
                    .map(|s| s.timesteps().to_vec()),
            };
            let i = steps - 1;
            match timesteps {
                Ok(timesteps) => {
                    assert_eq!(
                        usable[i], 1,
                        "{name}, {steps} steps: diffusers' list is unusable"
                    );
                    assert_eq!(
                        timesteps.len(),
                        lengths[i] as usize,
                        "{name}, {steps} steps"
                    );
                    let checksum: usize =
                        timesteps.iter().enumerate().map(|(k, t)| (k + 1) * t).sum();
                    assert_eq!(
                        checksum as i64,
                        i64::from(checksums[i]),
                        "{name}, {steps} steps"
                    );
                }
                Err(Error::InvalidInput(_)) => {
                    assert_eq!(usable[i], 0, "{name}, {steps} steps: refused a usable list")
                }
                Err(e) => panic!("{name}, {steps} steps: {e}"),
            }
        }
    }
}

#[test]
fn stable_diffusion_config_file_reads_with_its_values() {
    // Stable Diffusion 1.5's `scheduler/scheduler_config.json` (a PNDM config, which diffusers
    // pipelines load into DDIM or DPM-Solver++).
    let json = r#"{
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
        "clip_sample": false
    }"#;
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sd15_scheduler_config.json");
    std::fs::write(&path, json).unwrap();
    let config = SchedulerConfig::from_file(&path).unwrap();
    let expected = SchedulerConfig {
        beta_start: 0.00085,
        beta_end: 0.012,
        beta_schedule: cidm_diffusion::schedulers::BetaSchedule::ScaledLinear,
        steps_offset: 1,
        set_alpha_to_one: false,
        clip_sample: false,
        ..SchedulerConfig::default()
    };
    assert_eq!(config, expected);
    let ddim = SchedulerKind::Ddim.build::<B>(&config, 50).unwrap();
    assert_eq!(ddim.timesteps()[..3], [981, 961, 941]);
    assert_eq!(*ddim.timesteps().last().unwrap(), 1);
    let dpm = SchedulerKind::DpmSolverMultistep
        .build::<B>(&config, 25)
        .unwrap();
    assert_eq!(dpm.timesteps()[..3], [999, 959, 919]);
}

#[test]
fn unsupported_values_are_typed_errors() {
    let cases = [
        ("thresholding", "true"),
        ("use_karras_sigmas", "true"),
        ("use_exponential_sigmas", "true"),
        ("use_beta_sigmas", "true"),
        ("use_lu_lambdas", "true"),
        ("use_flow_sigmas", "true"),
        ("use_dynamic_shifting", "true"),
        ("rescale_betas_zero_snr", "true"),
        ("trained_betas", "[0.1, 0.2]"),
        ("beta_schedule", "\"sigmoid\""),
        ("prediction_type", "\"flow_prediction\""),
        ("timestep_spacing", "\"random\""),
        ("algorithm_type", "\"sde-dpmsolver++\""),
        ("solver_type", "\"heun\""),
        ("final_sigmas_type", "\"denoise_to_zero\""),
        ("variance_type", "\"learned_range\""),
        ("lambda_min_clipped", "-5.1"),
        ("solver_order", "3"),
    ];
    for (field, value) in cases {
        let json = format!("{{\"{field}\": {value}, \"beta_schedule\": \"linear\"}}");
        let json = if field == "beta_schedule" {
            format!("{{\"{field}\": {value}}}")
        } else {
            json
        };
        match SchedulerConfig::from_json_str(&json) {
            Err(Error::UnsupportedConfig { path, field: f, .. }) => {
                assert_eq!((f.as_str(), path.to_str().unwrap()), (field, "<memory>"));
            }
            other => panic!("{field} = {value}: {other:?}"),
        }
    }
    // Values that do not change DDIM or DPM-Solver++ results are accepted.
    let ok = r#"{"variance_type": "fixed_small", "lambda_min_clipped": -Infinity,
                 "skip_prk_steps": true, "interpolation_type": "linear", "_class_name": "-Infinity"}"#;
    assert_eq!(
        SchedulerConfig::from_json_str(ok).unwrap(),
        SchedulerConfig::default()
    );
    // `-Infinity` is rewritten only outside strings.
    match SchedulerConfig::from_json_str(r#"{"prediction_type": "-Infinity"}"#) {
        Err(Error::UnsupportedConfig { value, .. }) => assert_eq!(value, "\"-Infinity\""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_values_are_typed_errors() {
    for json in [
        r#"{"num_train_timesteps": 0}"#,
        r#"{"beta_start": 0.0}"#,
        r#"{"beta_end": 1.5}"#,
        r#"{"clip_sample_range": 0.0}"#,
    ] {
        let result = SchedulerConfig::from_json_str(json);
        assert!(
            matches!(result, Err(Error::InvalidConfig { .. })),
            "{json}: {result:?}"
        );
    }
    for json in [
        r#"{"num_train_timesteps": -1}"#,
        r#"{"beta_start": "small"}"#,
        "{",
    ] {
        let result = SchedulerConfig::from_json_str(json);
        assert!(
            matches!(result, Err(Error::Json { .. })),
            "{json}: {result:?}"
        );
    }

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("bad_scheduler_config.json");
    std::fs::write(&path, r#"{"thresholding": true}"#).unwrap();
    match SchedulerConfig::from_file(&path) {
        Err(Error::UnsupportedConfig { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    let missing = dir.join("no_such_scheduler_config.json");
    assert!(matches!(
        SchedulerConfig::from_file(missing),
        Err(Error::Io { .. })
    ));

    // A config built in code is checked when a scheduler is built from it.
    let three = SchedulerConfig {
        solver_order: 3,
        ..SchedulerConfig::default()
    };
    let result = DpmSolverMultistepScheduler::<B>::new(&three, 10);
    assert!(
        matches!(result, Err(Error::UnsupportedConfig { .. })),
        "{result:?}"
    );
    let zero = SchedulerConfig {
        num_train_timesteps: 0,
        ..SchedulerConfig::default()
    };
    assert!(matches!(
        DdpmNoiser::new(&zero),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let config = SchedulerConfig::default();
    for kind in [SchedulerKind::Ddim, SchedulerKind::DpmSolverMultistep] {
        for steps in [0, 1001] {
            let result = kind.build::<B>(&config, steps).map(|_| ());
            assert!(
                matches!(result, Err(Error::InvalidInput(_))),
                "{kind:?} {steps}: {result:?}"
            );
        }
        let mut scheduler = kind.build::<B>(&config, 10).unwrap();
        let result = scheduler.step(
            Tensor::zeros([1, 4, 8, 8], &Default::default()),
            Tensor::zeros([1, 4, 8, 9], &Default::default()),
        );
        assert!(
            matches!(result, Err(Error::InvalidInput(_))),
            "{kind:?}: {result:?}"
        );
        assert_eq!(
            scheduler.step_index(),
            0,
            "{kind:?}: a refused step must not advance"
        );
    }

    let noiser = DdpmNoiser::new(&config).unwrap();
    let x: Tensor<B, 4> = Tensor::zeros([2, 4, 8, 8], &Default::default());
    for timesteps in [&[1][..], &[1, 1000], &[1, 2, 3]] {
        let result = noiser.add_noise(x.clone(), x.clone(), timesteps);
        assert!(
            matches!(result, Err(Error::InvalidInput(_))),
            "{timesteps:?}: {result:?}"
        );
    }
    let other: Tensor<B, 4> = Tensor::zeros([2, 4, 8, 7], &Default::default());
    assert!(matches!(
        noiser.velocity(x, other, &[1, 2]),
        Err(Error::InvalidInput(_))
    ));
}
