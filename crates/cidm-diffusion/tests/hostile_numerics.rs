//! NaN and overflow in sampling: a non-finite value is reported at the step where it first
//! appears, with the stage and the first non-finite parameter, instead of a black image.

mod common;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::error::SamplingStage;
use cidm_diffusion::pipeline::{
    apply_guidance, first_non_finite_parameter, gaussian_latents, sample, SamplingSettings,
};
use cidm_diffusion::schedulers::{SchedulerConfig, SchedulerKind};
use cidm_diffusion::{Conditioning, Error, ModelDir, UNet2DConditionModel};
use common::{fixtures, B};

const STEPS: usize = 5;

/// The test model, with the norms' fused paths switched off for the whole binary: the overflow
/// scenarios here come from f32 norms, whose sums of squares overflow once activations pass
/// about 1e19 (as PyTorch's f32 GroupNorm's do), so that a scaled-up layer makes the latents
/// non-finite after a number of steps that grows as the scale shrinks. The CPU paths of
/// `cidm-kernels` sum in f64 and keep such activations normalised up to f32's range, where
/// only the first step can overflow. (The switches are global; every test here builds its
/// model with this function.)
fn unet() -> UNet2DConditionModel<B> {
    cidm_kernels::set_fused_group_norm(Some(false));
    cidm_kernels::set_fused_layer_norm(Some(false));
    let dir = ModelDir::open(fixtures().join("pipeline-model")).unwrap();
    UNet2DConditionModel::from_model_dir(&dir, None, &Default::default()).unwrap()
}

fn scheduler() -> SchedulerConfig {
    SchedulerConfig::from_file(fixtures().join("pipeline-model/scheduler/scheduler_config.json"))
        .unwrap()
}

/// `[uncond; cond]` text embeddings (one row without guidance) with a smooth deterministic
/// pattern (no RNG involved).
fn conditioning(unet: &UNet2DConditionModel<B>, guidance: f64) -> Conditioning<B> {
    let width = unet.config().cross_attention_dim;
    let rows = if guidance > 1.0 { 2 } else { 1 };
    let values: Vec<f32> = (0..rows * 7 * width)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    Conditioning::shared(Tensor::from_data(
        TensorData::new(values, [rows, 7, width]),
        &Default::default(),
    ))
}

fn latents() -> Tensor<B, 4> {
    gaussian_latents([1, 4, 8, 8], 7, &Default::default())
}

fn run(unet: &UNet2DConditionModel<B>, guidance: f64) -> cidm_diffusion::Result<Tensor<B, 4>> {
    let config = scheduler();
    let settings = SamplingSettings {
        scheduler: &config,
        kind: SchedulerKind::Ddim,
        steps: STEPS,
        guidance_scale: guidance,
    };
    sample(
        unet,
        latents(),
        &conditioning(unet, guidance),
        &settings,
        &mut |_, _| {},
    )
}

/// Replaces the float parameter at dotted `path` with `f(value)`.
struct SetParam<F> {
    target: &'static str,
    path: Vec<String>,
    f: F,
    hit: bool,
}

impl<B: burn::tensor::backend::Backend, F: Fn(Tensor<B, 1>) -> Tensor<B, 1>> ModuleMapper<B>
    for SetParam<F>
{
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.path.join(".") != self.target {
            return param;
        }
        self.hit = true;
        let f = &self.f;
        param.map(|t| {
            let shape = t.shape();
            f(t.flatten(0, D - 1)).reshape(shape)
        })
    }
}

fn with_param(
    unet: UNet2DConditionModel<B>,
    target: &'static str,
    f: impl Fn(Tensor<B, 1>) -> Tensor<B, 1>,
) -> UNet2DConditionModel<B> {
    let mut mapper = SetParam {
        target,
        path: Vec::new(),
        f,
        hit: false,
    };
    let unet = unet.map(&mut mapper);
    assert!(mapper.hit, "no parameter `{target}`");
    unet
}

#[test]
fn a_healthy_run_passes_the_per_step_checks() {
    let unet = unet();
    assert_eq!(first_non_finite_parameter(&unet), None);
    run(&unet, 7.5).unwrap();
}

#[test]
fn a_nan_weight_is_reported_at_the_first_step_with_its_layer() {
    // One NaN in the output convolution's bias: every noise prediction is NaN from step 1.
    let target = "conv_out.bias";
    let unet = with_param(unet(), target, |t| {
        let mut values: Vec<f32> = t.to_data().to_vec().unwrap();
        values[0] = f32::NAN;
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), &t.device())
    });
    assert_eq!(first_non_finite_parameter(&unet).as_deref(), Some(target));
    match run(&unet, 7.5) {
        Err(Error::NonFiniteSample {
            step,
            steps,
            stage,
            layer,
            timestep,
        }) => {
            assert_eq!((step, steps), (1, STEPS));
            assert_eq!(stage, SamplingStage::NoisePrediction);
            assert_eq!(layer.as_deref(), Some(target));
            // DDIM "leading" with 1000 training steps, 5 steps, offset 1: 801 first.
            assert_eq!(timestep, 801);
        }
        other => panic!("expected NonFiniteSample, got {other:?}"),
    }
}

#[test]
fn a_huge_weight_overflows_and_is_reported_without_a_layer() {
    // Finite weights, but conv_out scaled by 1e38 (after the last norm, so nothing rescales
    // it) makes the noise prediction overflow f32 in the first step.
    let unet = with_param(unet(), "conv_out.weight", |t| t * 1e38);
    assert_eq!(first_non_finite_parameter(&unet), None);
    match run(&unet, 7.5) {
        Err(e @ Error::NonFiniteSample { step: 1, .. }) => {
            let Error::NonFiniteSample { layer, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*layer, None);
            assert!(e.to_string().contains("activation overflowed"), "{e}");
        }
        other => panic!("expected NonFiniteSample at step 1, got {other:?}"),
    }
}

/// The first 1-based step whose latents are not finite, by the same loop written out here
/// with the public pieces (UNet, guidance, scheduler), checking after every step.
fn first_bad_step(unet: &UNet2DConditionModel<B>, guidance: f64) -> Option<usize> {
    let config = scheduler();
    let mut scheduler = SchedulerKind::Ddim.build::<B>(&config, STEPS).unwrap();
    let conditioning = conditioning(unet, guidance);
    let mut x = latents();
    let timesteps = scheduler.timesteps().to_vec();
    for (i, t) in timesteps.into_iter().enumerate() {
        let input = Tensor::cat(vec![x.clone(), x.clone()], 0);
        let t = Tensor::<B, 1>::from_floats([t as f32], &Default::default());
        let noise = apply_guidance(unet.forward(input, t, &conditioning).unwrap(), guidance);
        x = scheduler.step(noise, x).unwrap();
        let values: Vec<f32> = x.to_data().to_vec().unwrap();
        if values.iter().any(|v| !v.is_finite()) {
            return Some(i + 1);
        }
    }
    None
}

#[test]
fn overflow_after_some_steps_names_that_step() {
    // conv_out scaled by a factor f: the noise prediction is ~f each step (the norms before
    // conv_out undo any growth of the input), and DDIM accumulates it in the latents, which
    // overflow after more steps the smaller f is. The loop above finds the step for each f;
    // the pipeline must name the same one. Each factor lies well inside the range of factors
    // that overflow at its step (plain norms, measured 2026-12-06: step 5 from 5.5e36 to
    // 6e36, 4 from 6.5e36 to 8e36, 3 from 9e36 to 1.5e37, 2 at 3e37, 1 from 5e37), so that a
    // last-bit difference in the sums cannot move it to another step.
    let base = unet();
    let mut steps_seen = Vec::new();
    for factor in [7.5e36f32, 1.2e37, 3e37, 1e38] {
        let unet = with_param(base.clone(), "conv_out.weight", move |t| t * factor);
        let expected = first_bad_step(&unet, 7.5).expect("this factor overflows");
        match run(&unet, 7.5) {
            Err(Error::NonFiniteSample { step, layer, .. }) => {
                assert_eq!(step, expected, "factor {factor:e}");
                assert_eq!(layer, None);
            }
            other => panic!("factor {factor:e}: expected NonFiniteSample, got {other:?}"),
        }
        steps_seen.push(expected);
    }
    // The factors span several first-bad steps, so a wrong step count would show.
    steps_seen.dedup();
    assert!(steps_seen.len() >= 3, "first bad steps {steps_seen:?}");
}

#[test]
fn non_finite_initial_latents_are_an_input_error() {
    let unet = unet();
    let config = scheduler();
    let settings = SamplingSettings {
        scheduler: &config,
        kind: SchedulerKind::DpmSolverMultistep,
        steps: 2,
        guidance_scale: 1.0,
    };
    let bad = latents() / 0.0;
    let err = sample(
        &unet,
        bad,
        &conditioning(&unet, 1.0),
        &settings,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}
