//! Regional generation on a real (tiny) model with two tasks: a box covering the whole image
//! is plain generation with the region's prompt (UNet outputs and composed noise), regions use
//! their own EWA gates, odd latent sizes get masks at every attention resolution, and a whole
//! regional sampling run stays finite.

#[path = "../../cidm-ewa/tests/common/mod.rs"]
mod common;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm_diffusion::pipeline::{apply_guidance, SamplingSettings};
use cidm_diffusion::{Conditioning, Sampler, UNet2DConditionModel};
use cidm_ewa::{Ewa, EwaConfig, EwaVariant, PromptEncoder};
use cidm_regions::{
    sample_regional, BoundingBox, RegionError, RegionSpec, RegionalConfig, RegionalStep,
};
use common::{max_abs_diff, setup, task_words, Setup, B};

/// Between a regional batch and a plain batch: the same arithmetic on differently composed
/// batches (a gather, a scatter-add of one term, a multiply by 1), so only f32 reassociation.
const TOLERANCE: f32 = 1e-4;
/// An odd latent size: the second level is 3x3 (rounded up), exercising the resolution list.
const LATENT: [usize; 2] = [6, 5];

fn encoder(s: &Setup) -> PromptEncoder<'_, B> {
    PromptEncoder {
        tokenizer: &s.sd.tokenizer,
        encoder: &s.sd.text_encoder,
        concepts: &s.concepts,
        clip_skip: 0,
    }
}

fn ewa_unet(s: &Setup, variant: EwaVariant) -> (Ewa<B>, UNet2DConditionModel<B>) {
    let ewa = Ewa::encode(
        EwaConfig::for_variant(variant),
        &s.adapters,
        &task_words(),
        &encoder(s),
    )
    .unwrap();
    let mut unet = s.sd.unet.clone();
    ewa.attach(&mut unet).unwrap();
    (ewa, unet)
}

fn latents() -> Tensor<B, 4> {
    let device = Default::default();
    B::seed(&device, 11);
    Tensor::random(
        [1, 4, LATENT[0], LATENT[1]],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
}

fn full(prompt: &str) -> RegionSpec {
    RegionSpec {
        prompt: prompt.into(),
        bbox: BoundingBox::FULL,
    }
}

/// With one box over the whole image, both the global and the region sample attend to the
/// region's prompt everywhere, so the composition is plain guided prediction of the region's
/// prompt. `off` gives every prompt the same gates, so the unconditional halves agree too.
#[test]
fn a_full_box_equals_plain_generation_with_the_region_prompt() {
    let s = setup();
    let enc = encoder(&s);
    let (ewa, unet) = ewa_unet(&s, EwaVariant::Off);
    let config = RegionalConfig::default();
    let step = RegionalStep::from_prompts(
        &unet,
        &ewa,
        &enc,
        "a <c1> in a park",
        "",
        &[full("a <c2> on a sofa")],
        LATENT,
        &config,
    )
    .unwrap();
    assert_eq!(step.batch(), 3);
    let t = Tensor::<B, 1>::from_floats([700.0], &Default::default());
    let regional = step.predict(&unet, latents(), t.clone(), 7.5).unwrap();

    let (cond, _) = ewa
        .guided_conditioning(&enc, "a <c2> on a sofa", "")
        .unwrap();
    let plain = unet.forward(latents().repeat_dim(0, 2), t, &cond).unwrap();
    let plain = apply_guidance(plain, 7.5);
    let diff = max_abs_diff(regional, plain);
    assert!(diff < TOLERANCE, "full-box regional vs plain: {diff}");
}

/// With `code` weights each prompt has its own gates: in the global sample of a full-box
/// regional batch, every cross-attention runs on the region's text with the region's gates,
/// so its UNet output equals a plain call with the region's text and gates.
#[test]
fn regions_attend_with_their_own_gates() {
    let s = setup();
    let enc = encoder(&s);
    let (ewa, unet) = ewa_unet(&s, EwaVariant::Code);
    let prompts = ewa
        .prompts(&enc, &["", "a <c1> in a park", "a <c2> on a sofa"])
        .unwrap();
    let (global, region) = (&prompts[1], &prompts[2]);
    assert_ne!(
        global.weights, region.weights,
        "the test needs different gates"
    );
    let step = RegionalStep::new(
        &unet,
        &prompts[0].text,
        global,
        &[(region.clone(), BoundingBox::FULL)],
        LATENT,
        &RegionalConfig::default(),
    )
    .unwrap();
    let t = Tensor::<B, 1>::from_floats([300.0], &Default::default());
    let batch = unet
        .forward(latents().repeat_dim(0, 3), t.clone(), step.conditioning())
        .unwrap();
    let layers = unet.cross_attention_layers();
    let plain = Conditioning::per_layer((0..layers).map(|l| region.text.get(l).clone()).collect())
        .with_gates(region.gates.clone());
    let expected = unet.forward(latents(), t.clone(), &plain).unwrap();
    for sample in [1, 2] {
        let diff = max_abs_diff(batch.clone().narrow(0, sample, 1), expected.clone());
        assert!(diff < TOLERANCE, "sample {sample}: {diff}");
    }
    // The global prompt's own gates give something else: the gates really are per region.
    let own = Conditioning::per_layer((0..layers).map(|l| region.text.get(l).clone()).collect())
        .with_gates(global.gates.clone());
    let other = unet.forward(latents(), t, &own).unwrap();
    assert!(max_abs_diff(other, expected) > 10.0 * TOLERANCE);
}

/// Two half boxes and a short DDIM run: every step is one batched call of 4 samples, the
/// progress callback sees every step and the result is finite (sampling checks it).
#[test]
fn regional_sampling_runs_end_to_end() {
    let s = setup();
    let enc = encoder(&s);
    let (ewa, unet) = ewa_unet(&s, EwaVariant::Code);
    let regions: Vec<RegionSpec> = ["a <c1>@0,0,0.5,1", "a <c2>@0.5,0,1,1"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    let step = RegionalStep::from_prompts(
        &unet,
        &ewa,
        &enc,
        "a <c1> and a <c2>",
        "",
        &regions,
        LATENT,
        &RegionalConfig::default(),
    )
    .unwrap();
    assert_eq!(step.batch(), 4);
    let settings = SamplingSettings {
        scheduler: &s.sd.scheduler,
        kind: Sampler::Ddim.kind(),
        steps: 3,
        guidance_scale: 7.5,
    };
    let mut calls = 0;
    let out = sample_regional(&unet, latents(), &step, &settings, &mut |_, _| calls += 1).unwrap();
    assert_eq!(calls, 3);
    assert_eq!(out.dims(), [1, 4, LATENT[0], LATENT[1]]);
}

#[test]
fn bad_regions_are_typed_errors() {
    let s = setup();
    let enc = encoder(&s);
    let (ewa, unet) = ewa_unet(&s, EwaVariant::Code);
    let config = RegionalConfig {
        max_regions: 1,
        ..RegionalConfig::default()
    };
    let two = [full("a <c1>"), full("a <c2>")];
    let build = |regions: &[RegionSpec], config: &RegionalConfig| {
        RegionalStep::from_prompts(&unet, &ewa, &enc, "x", "", regions, LATENT, config)
    };
    assert!(matches!(
        build(&two, &config),
        Err(RegionError::TooManyRegions { found: 2, limit: 1 })
    ));
    // 0.1 of a 5-wide latent is half a cell.
    let thin: RegionSpec = "a <c1>@0.45,0,0.55,1".parse().unwrap();
    assert!(matches!(
        build(&[thin], &RegionalConfig::default()),
        Err(RegionError::BoxBelowOneCell { region: 0, .. })
    ));
    assert!(build(&[], &RegionalConfig::default()).is_err());
    let bad_alpha = RegionalConfig {
        alpha: 1.5,
        ..RegionalConfig::default()
    };
    assert!(build(&two[..1], &bad_alpha).is_err());
}

/// The regional loop is the core's sampling loop: a NaN in one task's LoRA is reported at
/// step 1 as a non-finite noise prediction, naming the bank that holds it, instead of
/// decoding a black image.
#[test]
fn a_nan_in_a_task_lora_is_reported_at_the_first_step() {
    let mut s = setup();
    let poisoned = {
        let first = &s.adapters[0];
        let layers = first
            .layers()
            .iter()
            .map(|(path, f)| {
                let up = f.up.clone().mul_scalar(f32::NAN);
                let factors = cidm_lora::LoraFactors {
                    down: f.down.clone(),
                    up,
                };
                (path.clone(), factors)
            })
            .collect();
        cidm_lora::LoraAdapter::new(first.config().clone(), layers).unwrap()
    };
    s.adapters[0] = poisoned;
    let (ewa, unet) = ewa_unet(&s, EwaVariant::Off);
    let step = RegionalStep::from_prompts(
        &unet,
        &ewa,
        &encoder(&s),
        "a <c1> and a <c2>",
        "",
        &[full("a <c1>")],
        LATENT,
        &RegionalConfig::default(),
    )
    .unwrap();
    let settings = SamplingSettings {
        scheduler: &s.sd.scheduler,
        kind: Sampler::Ddim.kind(),
        steps: 3,
        guidance_scale: 7.5,
    };
    match sample_regional(&unet, latents(), &step, &settings, &mut |_, _| {}) {
        Err(RegionError::Diffusion(cidm_diffusion::Error::NonFiniteSample {
            step,
            stage,
            layer,
            ..
        })) => {
            assert_eq!(step, 1);
            assert_eq!(stage, cidm_diffusion::error::SamplingStage::NoisePrediction);
            let layer = layer.expect("the poisoned bank is named");
            assert!(layer.contains("attn2"), "{layer}");
        }
        other => panic!("expected NonFiniteSample at step 1, got {other:?}"),
    }
}
