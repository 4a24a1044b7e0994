//! f16 numerics of the norms and the attention: statistics and softmax are computed in f32
//! under half precision, so inputs whose f16 sums or scores overflow still give the
//! full-precision result, rounded once to f16.
//!
//! burn's Flex backend stores f16 tensors (`cast(FloatDType::F16)`) and sums them into an f16
//! result. Its own attention kernel widens f16 to f32, but under `Autodiff` (training) every
//! backend runs burn's generic attention, which forms `Q K^T` in the input dtype. Each test first checks that the unprotected computation really fails on
//! these inputs, so it would fail without the f32 path.
//!
//! Expected values come from a closed form evaluated in f64 here, on the same f16-rounded
//! inputs. The output is f16, so it can differ from that value by the final rounding (half an
//! f16 ulp, at most `2^-11 |want|`) plus the f32 error of the statistics, far below it.
//! The tolerances are `2^-10 |want|` (two roundings' worth) plus a small absolute term, stated
//! per test.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use cidm_diffusion::nn::{attention_upcast, group_norm, GroupNorm, LayerNorm};
use cidm_diffusion::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

type B = Flex;

/// `n` draws of N(mean, std^2), rounded to f16 and back, so that the f64 reference sees
/// exactly the values the f16 tensor holds.
fn half_normal(n: usize, mean: f32, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(mean, std).unwrap();
    (0..n)
        .map(|_| half::f16::from_f32(normal.sample(&mut rng)).to_f32())
        .collect()
}

fn f16_tensor<Be: burn::tensor::backend::Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
) -> Tensor<Be, D> {
    Tensor::<Be, D>::from_data(TensorData::new(values, shape), &Default::default())
        .cast(FloatDType::F16)
}

fn values<Be: burn::tensor::backend::Backend, const D: usize>(t: Tensor<Be, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Largest `|got - want| / (2^-10 |want| + abs)` over all elements; at most 1 passes.
fn worst_ratio(got: &[f32], want: &[f64], abs: f64) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            assert!(g.is_finite(), "non-finite output {g} (expected {w})");
            (g as f64 - w).abs() / (w.abs() * 2f64.powi(-10) + abs)
        })
        .fold(0.0, f64::max)
}

/// Mean and biased variance of `xs` in f64.
fn moments(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// SD 1.5's up-block ResNets at 512 px: 640 channels in 32 groups over 64 x 64, so each group
/// holds 20 * 4096 = 81920 values. With a standard deviation of 1.5 the sum of squares of a
/// group is about 184000, past f16's 65504. Tolerance: `2^-10 |want| + 1e-4`; the outputs are
/// at most about 8, so this is about one f16 ulp.
#[test]
fn f16_group_norm_over_81920_values_matches_the_f64_closed_form() {
    let (channels, groups, side) = (640, 32, 64);
    let shape = [1, channels, side, side];
    let eps = 1e-5;
    let input = half_normal(channels * side * side, 0.3, 1.5, 7);
    // Non-trivial affine: gamma in [0.5, 1.5), beta in [-0.25, 0.25).
    let gamma: Vec<f32> = (0..channels)
        .map(|c| half::f16::from_f32(0.5 + (c % 10) as f32 / 10.0).to_f32())
        .collect();
    let beta: Vec<f32> = (0..channels)
        .map(|c| half::f16::from_f32((c % 5) as f32 / 10.0 - 0.25).to_f32())
        .collect();
    let device = Default::default();
    let mut norm: GroupNorm<B> =
        group_norm(&VarBuilder::random(&device), groups, channels, eps).unwrap();
    norm.gamma = Param::from_data(TensorData::new(gamma.clone(), [channels]), &device);
    norm.beta = Param::from_data(TensorData::new(beta.clone(), [channels]), &device);

    // The hazard is real: the f16 sum of squares of one group is inf.
    let x = f16_tensor::<B, 4>(input.clone(), shape);
    let grouped = x
        .clone()
        .reshape([1, groups, channels / groups * side * side]);
    let centered = grouped.clone() - grouped.mean_dim(2);
    let naive_sum = values(centered.square().sum_dim(2));
    assert!(naive_sum.iter().all(|v| v.is_infinite()), "{naive_sum:?}");

    let out = norm.forward(x);
    assert_eq!(out.dtype(), DType::F16);
    let got = values(out);

    let per_group = channels / groups * side * side;
    let plane = side * side;
    let mut want = vec![0.0; input.len()];
    for (g, chunk) in input.chunks(per_group).enumerate() {
        let (mean, var) = moments(chunk);
        let inv = 1.0 / (var + eps).sqrt();
        for (i, &x) in chunk.iter().enumerate() {
            let flat = g * per_group + i;
            let c = flat / plane;
            want[flat] = (x as f64 - mean) * inv * gamma[c] as f64 + beta[c] as f64;
        }
    }
    let ratio = worst_ratio(&got, &want, 1e-4);
    assert!(ratio <= 1.0, "worst error is {ratio} tolerances");
}

/// The UNet transformer's layer norms at SD 1.5's widest blocks: rows of 1280 features whose
/// values reach the hundreds (std 60): sum of squares 1280 * 3600 = 4.6e6, far past 65504.
/// Tolerance `2^-10 |want| + 1e-4` (outputs up to about 4).
#[test]
fn f16_layer_norm_of_large_activations_matches_the_f64_closed_form() {
    let (rows, dim) = (8, 1280);
    let input = half_normal(rows * dim, -5.0, 60.0, 11);
    let device = Default::default();
    let norm = LayerNorm::<B>::new(&VarBuilder::random(&device), dim, 1e-5).unwrap();

    let x = f16_tensor::<B, 3>(input.clone(), [1, rows, dim]);
    let (naive_var, _) = x.clone().var_mean_bias(2);
    assert!(values(naive_var).iter().all(|v| !v.is_finite()));

    let out = norm.forward(x);
    assert_eq!(out.dtype(), DType::F16);
    let got = values(out);
    let want: Vec<f64> = input
        .chunks(dim)
        .flat_map(|row| {
            let (mean, var) = moments(row);
            row.iter()
                .map(move |&x| (x as f64 - mean) / (var + 1e-5).sqrt())
        })
        .collect();
    let ratio = worst_ratio(&got, &want, 1e-4);
    assert!(ratio <= 1.0, "worst error is {ratio} tolerances");
}

/// `softmax(q k^T / 8) v` in f64 per batch-head: `[bh, n, d]` flattened.
fn attention_reference(q: &[f32], k: &[f32], v: &[f32], bh: usize, n: usize, d: usize) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; bh * n * d];
    for h in 0..bh {
        let at = |t: &[f32], i: usize, j: usize| t[(h * n + i) * d + j] as f64;
        for i in 0..n {
            let scores: Vec<f64> = (0..n)
                .map(|j| (0..d).map(|e| at(q, i, e) * at(k, j, e)).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for e in 0..d {
                out[(h * n + i) * d + e] =
                    (0..n).map(|j| weights[j] * at(v, j, e)).sum::<f64>() / total;
            }
        }
    }
    out
}

/// Attention with head width 64 (SD's) whose queries and keys share a large component: each
/// is `m + noise`, with `m` = ±34 in every coordinate (norm 272) and noise of std 0.1. Every
/// raw score is about 64 * 34^2 = 73984, past f16's 65504, while the scaled scores differ by
/// a few units (std about 34 * 0.1 * 8 / 8 = 3.4), so the softmax is not one-hot. burn's
/// generic attention (used under autodiff) gets inf scores and `inf - inf = NaN` rows. Values
/// are N(0, 1). Tolerance `2^-10 |want| + 1e-2`: in f32 a raw score near 74000 carries a
/// rounding error of up to 2^-8 per addition (about 0.03 over 64 terms), 0.004 after scaling,
/// which moves a weighted mean of values spread over about +-3 by up to about 0.01 (measured:
/// 1.8e-3).
#[test]
fn f16_attention_with_overflowing_scores_matches_the_f64_closed_form() {
    type AB = Autodiff<Flex>;
    let (heads, n, d) = (2, 24, 64);
    let shared = |i: usize| {
        if (i * 7 / 3).is_multiple_of(2) {
            34.0
        } else {
            -34.0
        }
    };
    let around_shared = |seed| -> Vec<f32> {
        half_normal(heads * n * d, 0.0, 0.1, seed)
            .iter()
            .enumerate()
            .map(|(i, e)| half::f16::from_f32(shared(i % d) + e).to_f32())
            .collect()
    };
    let (q, k) = (around_shared(3), around_shared(4));
    let v = half_normal(heads * n * d, 0.0, 1.0, 5);
    let shape = [1, heads, n, d];
    let tensors = || {
        (
            f16_tensor::<AB, 4>(q.clone(), shape),
            f16_tensor::<AB, 4>(k.clone(), shape),
            f16_tensor::<AB, 4>(v.clone(), shape),
        )
    };

    let (tq, tk, tv) = tensors();
    let naive = values(attention(tq, tk, tv, None, None, Default::default()));
    assert!(
        naive.iter().any(|x| !x.is_finite()),
        "generic f16 attention stayed finite"
    );

    let (tq, tk, tv) = tensors();
    let out = attention_upcast(tq, tk, tv, AttentionModuleOptions::default());
    assert_eq!(out.dtype(), DType::F16);
    let got = values(out);
    let want = attention_reference(&q, &k, &v, heads, n, d);
    let ratio = worst_ratio(&got, &want, 1e-2);
    assert!(ratio <= 1.0, "worst error is {ratio} tolerances");
}

/// At f32 every cast is a no-op: with the fused paths switched off the helper is burn's
/// attention itself (bit-identical output); with them on (the default CPU build's attention,
/// `cidm-kernels`' loops over blocks of query rows) it sums in another order, so agrees to
/// f32 rounding. (The switch is global, but the other tests here attend in f16, which the CPU
/// paths decline either way.)
#[test]
fn f32_attention_is_untouched() {
    let shape = [1, 2, 9, 8];
    let make = |seed| {
        Tensor::<B, 4>::from_data(
            TensorData::new(half_normal(2 * 9 * 8, 0.0, 1.0, seed), shape),
            &Default::default(),
        )
    };
    let (q, k, v) = (make(1), make(2), make(3));
    let plain = attention(
        q.clone(),
        k.clone(),
        v.clone(),
        None,
        None,
        Default::default(),
    );
    let options = AttentionModuleOptions::default();
    let fused = attention_upcast(q.clone(), k.clone(), v.clone(), options);
    cidm_kernels::set_fused_attention(Some(false));
    let ours = attention_upcast(q, k, v, options);
    cidm_kernels::set_fused_attention(None);
    assert_eq!(ours.dtype(), DType::F32);
    let plain = values(plain);
    assert_eq!(values(ours), plain);
    for (got, want) in values(fused).iter().zip(&plain) {
        assert!((got - want).abs() < 1e-6, "{got} against {want}");
    }
}
