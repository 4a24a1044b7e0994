//! EWA on a real (tiny) model with two tasks: the concept-token text side, the exact gated
//! bank against a dense per-layer merge, and LoRA-M.

mod common;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm_diffusion::{Conditioning, UNet2DConditionModel};
use cidm_ewa::{Ewa, EwaConfig, EwaError, EwaVariant, PromptEncoder};
use common::{max_abs_diff, setup, task_words, B};

/// Tolerance between a gated bank and the same merge added to the base weights: one f32
/// rounding of the weights (|W| ~ 0.1-1) per projection, through a 2-level UNet.
const MERGE_TOLERANCE: f32 = 1e-4;

fn encoder(s: &common::Setup) -> PromptEncoder<'_, B> {
    PromptEncoder {
        tokenizer: &s.sd.tokenizer,
        encoder: &s.sd.text_encoder,
        concepts: &s.concepts,
        clip_skip: 0,
    }
}

fn unet_output(unet: &UNet2DConditionModel<B>, cond: &Conditioning<B>) -> Tensor<B, 4> {
    let device = Default::default();
    let batch = cond.text(0).dims()[0];
    // The same sample for every call.
    B::seed(&device, 3);
    let sample = Tensor::random([batch, 4, 6, 6], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::from_floats([500.0], &device);
    unet.forward(sample, t, cond).unwrap()
}

/// A prompt naming only task 2's word relates to task 2 by cosine 1 at that word's position
/// only if the context matches, so use a context unlike the template: task 2 must still win
/// at every layer.
#[test]
fn a_prompt_naming_one_task_gives_it_the_largest_weight() {
    let s = setup();
    let enc = encoder(&s);
    let ewa = Ewa::encode(EwaConfig::default(), &s.adapters, &task_words(), &enc).unwrap();
    for (prompt, task) in [("<c2> sitting on grass", 1), ("one <c1> in snow", 0)] {
        let batch = enc.encode(&[prompt]).unwrap();
        let weights = ewa.weights(&batch, 0).unwrap();
        for (l, w) in weights.values().iter().enumerate() {
            assert!(
                w[task] > w[1 - task],
                "{prompt:?}, layer {l}: weights {w:?}"
            );
        }
    }
}

/// The gated stack computes alpha * sum_i w_i^l ΔW_i^l exactly; baking the same weights into
/// the base must give the same UNet output, and unbaking must restore the base.
#[test]
fn gated_bank_equals_baked_weights_and_unbake_restores() {
    let s = setup();
    let enc = encoder(&s);
    let ewa = Ewa::encode(EwaConfig::default(), &s.adapters, &task_words(), &enc).unwrap();
    let (cond, weights) = ewa
        .guided_conditioning(&enc, "a <c1> next to a <c2>", "")
        .unwrap();
    let mut gated = s.sd.unet.clone();
    ewa.attach(&mut gated).unwrap();
    let with_gates = unet_output(&gated, &cond);

    let mut baked = s.sd.unet.clone();
    ewa.bake(&mut baked, &weights).unwrap();
    let plain = Conditioning::per_layer(
        (0..baked.cross_attention_layers())
            .map(|l| cond.text(l).clone())
            .collect(),
    );
    let diff = max_abs_diff(with_gates.clone(), unet_output(&baked, &plain));
    assert!(diff < MERGE_TOLERANCE, "gated vs baked differ by {diff}");

    assert!(matches!(
        ewa.bake(&mut gated, &weights),
        Err(EwaError::InvalidInput(_))
    ));
    ewa.unbake(&mut baked, &weights).unwrap();
    let base = unet_output(&s.sd.unet, &plain);
    let restored = max_abs_diff(base.clone(), unet_output(&baked, &plain));
    assert!(restored < MERGE_TOLERANCE, "unbake left {restored}");
    // The adapters really change the output, so the comparisons above are not vacuous.
    assert!(max_abs_diff(base, with_gates) > 100.0 * MERGE_TOLERANCE);
}

/// `off` with alpha 1 is LoRA-M: each adapter merged with weight 1/g.
#[test]
fn off_equals_the_equal_weight_merge() {
    let s = setup();
    let enc = encoder(&s);
    let config = EwaConfig::for_variant(EwaVariant::Off);
    assert_eq!(config.alpha, 1.0);
    let ewa = Ewa::encode(config, &s.adapters, &task_words(), &enc).unwrap();
    let (cond, _) = ewa.guided_conditioning(&enc, "a <c1>", "").unwrap();
    let mut gated = s.sd.unet.clone();
    ewa.attach(&mut gated).unwrap();

    let mut merged = s.sd.unet.clone();
    for adapter in &s.adapters {
        adapter.merge_into(&mut merged, 0.5).unwrap();
    }
    let plain = Conditioning::per_layer(
        (0..merged.cross_attention_layers())
            .map(|l| cond.text(l).clone())
            .collect(),
    );
    let diff = max_abs_diff(unet_output(&gated, &cond), unet_output(&merged, &plain));
    assert!(diff < MERGE_TOLERANCE, "LoRA-M differs by {diff}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let s = setup();
    let enc = encoder(&s);
    let unknown = vec![vec!["<c1>".to_string()], vec!["<nope>".to_string()]];
    assert!(matches!(
        Ewa::encode(EwaConfig::default(), &s.adapters, &unknown, &enc),
        Err(EwaError::UnknownWord { task: 1, .. })
    ));
    assert!(matches!(
        Ewa::encode(EwaConfig::default(), &s.adapters[..1], &task_words(), &enc),
        Err(EwaError::Shape { .. })
    ));
    let bad_template = EwaConfig {
        template: "no placeholder".into(),
        ..EwaConfig::default()
    };
    assert!(Ewa::encode(bad_template, &s.adapters, &task_words(), &enc).is_err());
    assert!(matches!(
        "median".parse::<EwaVariant>(),
        Err(EwaError::UnknownVariant(_))
    ));
}
