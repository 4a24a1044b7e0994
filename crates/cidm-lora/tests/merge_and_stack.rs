//! Merging and unmerging, and stacked gated banks, on the tiny fixture UNet.
//!
//! Tolerances: merged vs attached and stacked vs merged differ only by float summation order
//! (measured ~1e-6 on outputs of magnitude ~1; asserted < 1e-4); unmerging restores the base
//! weights to ~1e-7.

mod common;

use burn::tensor::Tensor;
use cidm_diffusion::{Conditioning, PerLayer, UNet2DConditionModel};
use cidm_lora::{detach_all, projection_sites, LoraAdapter, LoraConfig, LoraStack, LoraTargets};
use common::{max_abs_diff, random_adapter, unet, uniform, B};

const TOLERANCE: f32 = 1e-4;

fn inputs(batch: usize) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 3>) {
    let device = Default::default();
    let sample = Tensor::from_data(
        burn::tensor::TensorData::new(uniform(21, batch * 4 * 64, 1.7), [batch, 4, 8, 8]),
        &device,
    );
    let context = Tensor::from_data(
        burn::tensor::TensorData::new(uniform(22, batch * 5 * 24, 1.7), [batch, 5, 24]),
        &device,
    );
    (sample, Tensor::from_floats([321.0], &device), context)
}

fn run(unet: &UNet2DConditionModel<B>, batch: usize, gates: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
    let (sample, t, context) = inputs(batch);
    let mut cond = Conditioning::shared(context);
    if let Some(gates) = gates {
        cond = cond.with_gates(PerLayer::Shared(gates));
    }
    unet.forward(sample, t, &cond).unwrap()
}

fn base_weights(unet: &UNet2DConditionModel<B>) -> Vec<Tensor<B, 2>> {
    unet.transformer_blocks()
        .iter()
        .flat_map(|b| {
            b.attn1
                .projections()
                .into_iter()
                .chain(b.attn2.projections())
        })
        .map(|(_, p)| p.base.weight.val())
        .collect()
}

/// The default targets are q, k, v, out of every cross-attention: 64 adapters in the
/// SD 1.5-shaped benchmark config (16 layers), 44 in the fixture (11 layers).
#[test]
fn default_targets_are_every_cross_attention_projection() {
    let device = Default::default();
    let small =
        UNet2DConditionModel::<B>::random(&cidm_benches::small_unet_config(), &device).unwrap();
    let adapter = LoraAdapter::init(&LoraConfig::default(), &small, &device).unwrap();
    assert_eq!(
        (small.cross_attention_layers(), adapter.layers().len()),
        (16, 64)
    );

    let unet = unet();
    let sites = projection_sites(&unet);
    assert_eq!(sites.len(), 8 * unet.cross_attention_layers());
    let adapter = LoraAdapter::init(&LoraConfig::default(), &unet, &Default::default()).unwrap();
    assert_eq!(adapter.layers().len(), 4 * unet.cross_attention_layers());
    assert!(adapter.layers().keys().all(|p| p.contains(".attn2.")));
    assert!(adapter
        .layers()
        .contains_key("up_blocks.2.attentions.2.transformer_blocks.0.attn2.to_out.0"));
    let patterns = LoraConfig::default().with_targets(LoraTargets::Patterns(vec![
        "mid_block.*.attn1.to_q".into(),
        "down_blocks.1.*.to_out.0".into(),
    ]));
    let adapter = LoraAdapter::init(&patterns, &unet, &Default::default()).unwrap();
    let paths: Vec<&str> = adapter.layers().keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0",
            "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0",
            "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_out.0",
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_q",
        ]
    );
}

#[test]
fn merge_equals_attached_and_unmerge_restores_the_base() {
    let base = unet();
    let adapter = random_adapter(
        &base,
        &LoraConfig::new(4, 8.0).with_targets(LoraTargets::AllAttention),
        3,
    );
    let mut attached = base.clone();
    adapter.attach(&mut attached).unwrap();
    let mut merged = base.clone();
    adapter.merge_into(&mut merged, 1.0).unwrap();
    let err = max_abs_diff(run(&attached, 2, None), run(&merged, 2, None));
    let change = max_abs_diff(run(&attached, 2, None), run(&base, 2, None));
    eprintln!("merged vs attached: {err:e} (adapter changes the output by {change})");
    assert!(err < TOLERANCE && change > 0.05);

    adapter.unmerge_from(&mut merged, 1.0).unwrap();
    let weight_err = base_weights(&merged)
        .into_iter()
        .zip(base_weights(&base))
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0.0, f32::max);
    let out_err = max_abs_diff(run(&merged, 2, None), run(&base, 2, None));
    eprintln!("unmerge: weights {weight_err:e}, output {out_err:e}");
    assert!(weight_err < 1e-6 && out_err < 1e-5);

    assert_eq!(detach_all(&mut attached), adapter.layers().len());
    assert_eq!(
        max_abs_diff(run(&attached, 1, None), run(&base, 1, None)),
        0.0
    );
}

#[test]
fn stack_of_one_with_gate_one_equals_the_adapter() {
    let base = unet();
    let adapter = random_adapter(&base, &LoraConfig::new(4, 8.0), 4);
    let mut single = base.clone();
    adapter.attach(&mut single).unwrap();
    let stack = LoraStack::new(std::slice::from_ref(&adapter)).unwrap();
    let mut stacked = base;
    stack.attach(&mut stacked).unwrap();
    let gates = stack
        .gates(Tensor::from_floats([[1.0]], &Default::default()))
        .unwrap();
    let err = max_abs_diff(run(&single, 2, None), run(&stacked, 2, Some(gates)));
    eprintln!("stack of one, gate 1: {err:e}");
    assert!(err < 1e-5);
}

/// Two adapters of different ranks and targets: shared gates give the weighted merge, and
/// per-sample gates run a different adapter in each sample of one batch.
#[test]
fn stacked_gates_equal_weighted_merges_per_sample() {
    let base = unet();
    let device = Default::default();
    let a = random_adapter(&base, &LoraConfig::new(2, 4.0), 5);
    let b = random_adapter(
        &base,
        &LoraConfig::new(3, 1.5).with_targets(LoraTargets::AllAttention),
        6,
    );
    let stack = LoraStack::new(&[a.clone(), b.clone()]).unwrap();
    assert_eq!((stack.total_rank(), stack.ranks()), (5, &[2, 3][..]));
    let mut stacked = base.clone();
    stack.attach(&mut stacked).unwrap();

    let mut merged = base.clone();
    a.merge_into(&mut merged, 0.7).unwrap();
    b.merge_into(&mut merged, 0.2).unwrap();
    let shared = stack
        .gates(Tensor::from_floats([[0.7, 0.2]], &device))
        .unwrap();
    let err = max_abs_diff(run(&stacked, 2, Some(shared)), run(&merged, 2, None));
    eprintln!("stack 0.7/0.2 vs merge: {err:e}");
    assert!(err < TOLERANCE);

    let per_sample = stack
        .gates(Tensor::from_floats([[1.0, 0.0], [0.0, 1.0]], &device))
        .unwrap();
    let out = run(&stacked, 2, Some(per_sample));
    for (i, adapter) in [&a, &b].into_iter().enumerate() {
        let mut only = base.clone();
        adapter.merge_into(&mut only, 1.0).unwrap();
        let expected = run(&only, 2, None).narrow(0, i, 1);
        let err = max_abs_diff(out.clone().narrow(0, i, 1), expected);
        eprintln!("sample {i} with adapter {i} alone: {err:e}");
        assert!(err < TOLERANCE);
    }

    let layers = base.cross_attention_layers();
    let weights = vec![Tensor::from_floats([[0.7, 0.2]], &device); layers];
    let per_layer = stack.per_layer_gates(PerLayer::Layers(weights)).unwrap();
    let (sample, t, context) = inputs(2);
    let out = stacked
        .forward(
            sample,
            t,
            &Conditioning::shared(context).with_gates(per_layer),
        )
        .unwrap();
    assert!(max_abs_diff(out, run(&merged, 2, None)) < TOLERANCE);
}
