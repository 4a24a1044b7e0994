//! Noise composition closed forms: alpha = 1 gives the global estimate; inside one box the
//! result is `alpha E + (1 - alpha) E_u`, outside it is `E`; overlapping boxes average.

use burn::tensor::{Distribution, Tensor, TensorData};
use cidm_diffusion::pipeline::apply_guidance;
use cidm_regions::compose_noise;

type B = burn::backend::Flex;
const TOLERANCE: f32 = 1e-5;

fn noise(batch: usize) -> Tensor<B, 4> {
    Tensor::random(
        [batch, 4, 3, 4],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    )
}

/// Masks `[U, 1, 3, 4]` from row-major 0/1 patterns.
fn masks(patterns: &[[f32; 12]]) -> Tensor<B, 4> {
    let values: Vec<f32> = patterns.iter().flatten().copied().collect();
    Tensor::from_data(
        TensorData::new(values, [patterns.len(), 1, 3, 4]),
        &Default::default(),
    )
}

fn max_abs(t: Tensor<B, 4>) -> f32 {
    t.abs().max().into_scalar()
}

#[test]
fn alpha_one_is_the_global_estimate() {
    let n = noise(4);
    let m = masks(&[
        [1.0; 12],
        [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]);
    let composed = compose_noise(n.clone(), m, 1.0, 7.5).unwrap();
    let global = apply_guidance(n.narrow(0, 0, 2), 7.5);
    assert_eq!(max_abs(composed - global), 0.0);
}

#[test]
fn inside_boxes_mixes_and_averages_outside_keeps_the_global_estimate() {
    let (alpha, s) = (0.1, 7.5);
    let n = noise(4);
    // Region 0 covers columns 0-1, region 1 columns 1-2 (overlap in column 1); column 3 free.
    let left = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let mid = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    let composed = compose_noise(n.clone(), masks(&[left, mid]), alpha, s).unwrap();
    let uncond = n.clone().narrow(0, 0, 1);
    let guide = |i: usize| uncond.clone() + (n.clone().narrow(0, i, 1) - uncond.clone()) * s;
    let (e, e0, e1) = (guide(1), guide(2), guide(3));
    let column = |t: Tensor<B, 4>, c: usize| t.narrow(3, c, 1);
    let expect = [
        e.clone() * alpha + e0.clone() * (1.0 - alpha),
        e.clone() * alpha + (e0 + e1.clone()) * (0.5 * (1.0 - alpha)),
        e.clone() * alpha + e1 * (1.0 - alpha),
        e,
    ];
    for (c, expected) in expect.into_iter().enumerate() {
        let diff = max_abs(column(composed.clone(), c) - column(expected, c));
        assert!(diff < TOLERANCE, "column {c}: {diff}");
    }
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    assert!(compose_noise(noise(3), masks(&[[1.0; 12], [1.0; 12]]), 0.1, 7.5).is_err());
    assert!(compose_noise(noise(2), masks(&[]), 0.1, 7.5).is_err());
}
