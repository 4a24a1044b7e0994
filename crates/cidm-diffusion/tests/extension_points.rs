//! The core's extension points behave as DESIGN.md promises: per-layer conditioning and
//! gated low-rank banks on every attention projection.

mod common;

use burn::tensor::{Distribution, Tensor};
use cidm_diffusion::{Conditioning, LowRankBank, ModelDir, PerLayer, UNet2DConditionModel};
use common::{fixtures, max_abs_diff, B};

fn unet() -> UNet2DConditionModel<B> {
    let dir = ModelDir::open(fixtures().join("sd1-model")).unwrap();
    UNet2DConditionModel::from_model_dir(&dir, None, &Default::default()).unwrap()
}

fn inputs(batch: usize) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 3>) {
    let device = Default::default();
    let sample = Tensor::random([batch, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let timesteps = Tensor::from_floats([321.0], &device);
    let context = Tensor::random([batch, 5, 24], Distribution::Normal(0.0, 1.0), &device);
    (sample, timesteps, context)
}

/// Attaches a bank of `rank` with random factors (up scaled by `up_scale`) to every attention
/// projection.
fn attach_banks(unet: &mut UNet2DConditionModel<B>, rank: usize, up_scale: f64) {
    let device = Default::default();
    for block in unet.transformer_blocks_mut() {
        for attn in [&mut block.attn1, &mut block.attn2] {
            for (_, proj) in attn.projections_mut() {
                let down =
                    Tensor::random([proj.d_in(), rank], Distribution::Normal(0.0, 0.5), &device);
                let up = Tensor::random(
                    [rank, proj.d_out()],
                    Distribution::Normal(0.0, 0.5),
                    &device,
                ) * up_scale;
                proj.set_bank(LowRankBank::new(down, up, 1.0).unwrap())
                    .unwrap();
            }
        }
    }
}

#[test]
fn per_layer_conditioning_with_identical_copies_equals_shared() {
    let unet = unet();
    let (sample, t, context) = inputs(2);
    let shared = unet
        .forward(
            sample.clone(),
            t.clone(),
            &Conditioning::shared(context.clone()),
        )
        .unwrap();
    let copies = vec![context; unet.cross_attention_layers()];
    let per_layer = unet
        .forward(sample, t, &Conditioning::per_layer(copies))
        .unwrap();
    assert_eq!(max_abs_diff(shared, per_layer), 0.0);
}

/// Different text in one layer must change the output: per-layer conditioning is really used.
#[test]
fn per_layer_conditioning_reaches_each_layer() {
    let unet = unet();
    let (sample, t, context) = inputs(1);
    let base = unet
        .forward(
            sample.clone(),
            t.clone(),
            &Conditioning::shared(context.clone()),
        )
        .unwrap();
    for layer in [0, unet.cross_attention_layers() - 1] {
        let mut copies = vec![context.clone(); unet.cross_attention_layers()];
        copies[layer] = copies[layer].clone() * 3.0;
        let out = unet
            .forward(sample.clone(), t.clone(), &Conditioning::per_layer(copies))
            .unwrap();
        assert!(
            max_abs_diff(out, base.clone()) > 1e-4,
            "layer {layer} ignored its conditioning"
        );
    }
}

#[test]
fn bank_with_zero_up_factor_changes_nothing() {
    let mut unet = unet();
    let (sample, t, context) = inputs(2);
    let cond = Conditioning::shared(context);
    let base = unet.forward(sample.clone(), t.clone(), &cond).unwrap();
    attach_banks(&mut unet, 4, 0.0);
    let adapted = unet.forward(sample, t, &cond).unwrap();
    assert_eq!(max_abs_diff(base, adapted), 0.0);
}

/// Gates act per sample: gate 0 reproduces the base model for that sample, gate 1 the
/// ungated bank, in one batched call.
#[test]
fn per_sample_gates_select_base_or_bank() {
    let mut unet = unet();
    let device = Default::default();
    let (sample, t, context) = inputs(2);
    let cond = Conditioning::shared(context.clone());
    let base = unet.forward(sample.clone(), t.clone(), &cond).unwrap();
    attach_banks(&mut unet, 3, 1.0);
    let ungated = unet.forward(sample.clone(), t.clone(), &cond).unwrap();
    assert!(
        max_abs_diff(base.clone(), ungated.clone()) > 1e-3,
        "the bank had no effect"
    );

    let gates = Tensor::<B, 2>::from_floats([[0.0; 3], [1.0; 3]], &device);
    let gated = unet
        .forward(sample, t, &cond.with_gates(PerLayer::Shared(gates)))
        .unwrap();
    let first = |x: Tensor<B, 4>| x.narrow(0, 0, 1);
    let second = |x: Tensor<B, 4>| x.narrow(0, 1, 1);
    assert!(max_abs_diff(first(gated.clone()), first(base)) < 1e-5);
    assert!(max_abs_diff(second(gated), second(ungated)) < 1e-5);
}

#[test]
fn gates_of_the_wrong_width_are_rejected() {
    let mut unet = unet();
    attach_banks(&mut unet, 3, 1.0);
    let (sample, t, context) = inputs(1);
    let gates = Tensor::<B, 2>::ones([1, 4], &Default::default());
    let err = unet
        .forward(
            sample,
            t,
            &Conditioning::shared(context).with_gates(PerLayer::Shared(gates)),
        )
        .unwrap_err();
    assert!(err.to_string().contains("rank 3"), "{err}");
}

#[test]
fn bad_conditioning_is_an_error_not_a_panic() {
    let unet = unet();
    let (sample, t, context) = inputs(2);
    let wrong_width = Tensor::<B, 3>::zeros([2, 5, 23], &Default::default());
    assert!(unet
        .forward(
            sample.clone(),
            t.clone(),
            &Conditioning::shared(wrong_width)
        )
        .is_err());
    let too_few = Conditioning::per_layer(vec![context.clone(); 3]);
    assert!(unet.forward(sample.clone(), t.clone(), &too_few).is_err());
    let wrong_batch = context.narrow(0, 0, 1);
    assert!(unet
        .forward(sample.clone(), t, &Conditioning::shared(wrong_batch))
        .is_err());
    let three_timesteps = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &Default::default());
    let ctx = Tensor::<B, 3>::zeros([2, 5, 24], &Default::default());
    assert!(unet
        .forward(sample, three_timesteps, &Conditioning::shared(ctx))
        .is_err());
}
