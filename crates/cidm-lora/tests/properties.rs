//! Properties of adapters on the tiny fixture UNet, over random ranks, alphas, targets, seeds
//! and gate weights. Few cases each: every case runs full UNet forwards on 2 CPU cores.

mod common;

use std::sync::OnceLock;

use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::{Conditioning, PerLayer, UNet2DConditionModel};
use cidm_lora::{LoraAdapter, LoraConfig, LoraStack, LoraTargets};
use common::{max_abs_diff, random_adapter, uniform, B};
use proptest::prelude::*;

fn base() -> UNet2DConditionModel<B> {
    static UNET: OnceLock<UNet2DConditionModel<B>> = OnceLock::new();
    UNET.get_or_init(common::unet).clone()
}

fn run(unet: &UNet2DConditionModel<B>, seed: u64, gates: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
    let device = Default::default();
    let sample = Tensor::from_data(
        TensorData::new(uniform(seed, 2 * 4 * 36, 1.7), [2, 4, 6, 6]),
        &device,
    );
    let context = Tensor::from_data(
        TensorData::new(uniform(seed + 1, 2 * 3 * 24, 1.7), [2, 3, 24]),
        &device,
    );
    let mut cond = Conditioning::shared(context);
    if let Some(gates) = gates {
        cond = cond.with_gates(PerLayer::Shared(gates));
    }
    unet.forward(
        sample,
        Tensor::from_floats([seed as f32 % 1000.0], &device),
        &cond,
    )
    .unwrap()
}

fn targets() -> impl Strategy<Value = LoraTargets> {
    prop_oneof![
        Just(LoraTargets::CrossAttention),
        Just(LoraTargets::SelfAttention),
        Just(LoraTargets::AllAttention),
        Just(LoraTargets::Patterns(vec![
            "up_blocks.*.to_v".into(),
            "mid_block.*".into()
        ])),
    ]
}

fn config() -> impl Strategy<Value = LoraConfig> {
    (1usize..5, 0.5f64..16.0, targets(), any::<u64>()).prop_map(|(rank, alpha, targets, seed)| {
        LoraConfig::new(rank, alpha)
            .with_targets(targets)
            .with_init_seed(seed)
    })
}

/// 2 or 3 adapter configs, gate weights `[2, n]` (row-major) and a permutation of `0..n`.
fn stack_case() -> impl Strategy<Value = (Vec<LoraConfig>, Vec<f32>, Vec<usize>)> {
    (2usize..4).prop_flat_map(|n| {
        (
            prop::collection::vec(config(), n),
            prop::collection::vec(-1.0f32..1.0, 2 * n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        )
    })
}

fn adapters(
    base: &UNet2DConditionModel<B>,
    configs: &[LoraConfig],
    seed: u64,
) -> Vec<LoraAdapter<B>> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| random_adapter(base, c, seed + i as u64))
        .collect()
}

/// The output with `adapters` stacked and gated by per-adapter `weights` `[2, n]`.
fn stacked_output(
    base: &UNet2DConditionModel<B>,
    adapters: &[LoraAdapter<B>],
    weights: Vec<f32>,
    seed: u64,
) -> Tensor<B, 4> {
    let stack = LoraStack::new(adapters).unwrap();
    let mut stacked = base.clone();
    stack.attach(&mut stacked).unwrap();
    let weights = Tensor::from_data(
        TensorData::new(weights, [2, adapters.len()]),
        &Default::default(),
    );
    run(&stacked, seed, Some(stack.gates(weights).unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// PEFT's init (zero up factor) leaves every output unchanged, bit for bit.
    #[test]
    fn fresh_adapters_leave_outputs_unchanged(config in config(), seed in 0u64..1000) {
        let base = base();
        let mut adapted = base.clone();
        let adapter = LoraAdapter::init(&config, &base, &Default::default()).unwrap();
        adapter.attach(&mut adapted).unwrap();
        let err = max_abs_diff(run(&adapted, seed, None), run(&base, seed, None));
        prop_assert_eq!(err, 0.0);
    }

    /// Merged weights compute what the attached adapter computes.
    #[test]
    fn merged_equals_unmerged(config in config(), seed in 0u64..1000) {
        let base = base();
        let adapter = random_adapter(&base, &config, seed);
        let mut attached = base.clone();
        adapter.attach(&mut attached).unwrap();
        let mut merged = base;
        adapter.merge_into(&mut merged, 1.0).unwrap();
        let err = max_abs_diff(run(&attached, seed, None), run(&merged, seed, None));
        prop_assert!(err < 1e-4, "max abs error {}", err);
    }

    /// Zero gates switch every stacked adapter off.
    #[test]
    fn zero_gates_equal_the_base(
        configs in prop::collection::vec(config(), 1..4),
        seed in 0u64..1000,
    ) {
        let base = base();
        let list = adapters(&base, &configs, seed);
        let out = stacked_output(&base, &list, vec![0.0; 2 * list.len()], seed);
        prop_assert_eq!(max_abs_diff(out, run(&base, seed, None)), 0.0);
    }

    /// Saving and loading gives back the same config and bit-identical factors.
    #[test]
    fn save_load_round_trip_is_lossless(config in config(), seed in 0u64..1000) {
        let base = base();
        let adapter = random_adapter(&base, &config, seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        adapter.save(&path).unwrap();
        let loaded = LoraAdapter::<B>::load(&path, &base, &Default::default()).unwrap();
        prop_assert_eq!(loaded.config(), adapter.config());
        prop_assert_eq!(loaded.layers().len(), adapter.layers().len());
        for ((pa, a), (pb, b)) in loaded.layers().iter().zip(adapter.layers()) {
            prop_assert_eq!(pa, pb);
            prop_assert_eq!(a.down.to_data(), b.down.to_data());
            prop_assert_eq!(a.up.to_data(), b.up.to_data());
        }
    }

    /// Permuting the stack and its gate weights together leaves the output unchanged.
    #[test]
    fn stack_order_does_not_matter((configs, weights, order) in stack_case(), seed in 0u64..1000) {
        let base = base();
        let n = configs.len();
        let list = adapters(&base, &configs, seed);
        let permuted: Vec<_> = order.iter().map(|&i| list[i].clone()).collect();
        let permuted_weights: Vec<f32> = (0..2)
            .flat_map(|row| order.iter().map(move |&i| (row, i)))
            .map(|(row, i)| weights[row * n + i])
            .collect();
        let err = max_abs_diff(
            stacked_output(&base, &list, weights, seed),
            stacked_output(&base, &permuted, permuted_weights, seed),
        );
        prop_assert!(err < 1e-5, "max abs error {}", err);
    }
}
