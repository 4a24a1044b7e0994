//! The UNet reproduces diffusers on tiny random models (tools/unet_fixtures.py).
//!
//! Tolerance: max abs error 1e-4 on outputs of magnitude ~1. Both sides compute in f32; the
//! difference comes from summation order in convolutions, matmuls and softmax, which grows
//! with depth (measured: a few 1e-6 here).

mod common;

use burn::tensor::Tensor;
use cidm_diffusion::{Conditioning, ModelDir, SafetensorsWeights, UNet2DConditionModel};
use common::{fixtures, max_abs_diff, tensor, B};

const TOLERANCE: f32 = 1e-4;

fn check(model_name: &str) {
    let device = Default::default();
    let dir = ModelDir::open(fixtures().join(format!("{model_name}-model"))).unwrap();
    let unet = UNet2DConditionModel::<B>::from_model_dir(&dir, None, &device).unwrap();
    let io =
        SafetensorsWeights::open(fixtures().join(format!("{model_name}-io.safetensors"))).unwrap();
    for case in ["even", "odd"] {
        let sample: Tensor<B, 4> = tensor(&io, &format!("{case}.sample"));
        let timesteps: Tensor<B, 1> = tensor(&io, &format!("{case}.timesteps"));
        let context: Tensor<B, 3> = tensor(&io, &format!("{case}.context"));
        let expected: Tensor<B, 4> = tensor(&io, &format!("{case}.out"));
        let out = unet
            .forward(sample, timesteps, &Conditioning::shared(context))
            .unwrap();
        let err = max_abs_diff(out, expected.clone());
        let scale: f32 = expected.abs().max().into_scalar();
        assert!(
            scale > 0.1,
            "{model_name}/{case}: expected output is degenerate ({scale})"
        );
        eprintln!("{model_name}/{case}: max abs error {err:e}, output scale {scale}");
        assert!(
            err < TOLERANCE,
            "{model_name}/{case}: max abs error {err} vs diffusers (output scale {scale})"
        );
    }
}

/// SD 1.x layout: conv `proj_in`/`proj_out`, one head count, two ResNets per block.
#[test]
fn sd1_style_unet_matches_diffusers() {
    check("sd1");
}

/// SD 2.x layout: linear projections, per-block head list, two transformer blocks in the
/// last down block, `flip_sin_to_cos = false`, `freq_shift = 1`.
#[test]
fn sd2_style_unet_matches_diffusers() {
    check("sd2");
}

/// The SD2 fixture has 1 + 2 cross-attention layers down (its last block has two transformer
/// blocks), 2 mid, 2 x 2 + 2 x 1 up (up blocks have one more ResNet each): 11.
#[test]
fn cross_attention_layers_are_counted_in_stable_order() {
    let device = Default::default();
    let dir = ModelDir::open(fixtures().join("sd2-model")).unwrap();
    let unet = UNet2DConditionModel::<B>::from_model_dir(&dir, None, &device).unwrap();
    assert_eq!(unet.cross_attention_layers(), 11);
    let layers: Vec<usize> = unet.transformer_blocks().iter().map(|b| b.layer).collect();
    assert_eq!(layers, (0..11).collect::<Vec<_>>());
}
