//! The default build (feature `flex`) runs cidm-kernels' CPU paths through the model's own
//! calls: the feature reaches cidm-kernels through cidm-diffusion. Attention, GroupNorm,
//! LayerNorm, GEGLU and the convolutions take the Flex loops in inference and as nodes under autodiff, the
//! attention's backward keeping no score matrix (docs/performance.md, "Attention in CPU
//! training", "Fused CPU paths"). The dispatch counters are global, so each test here counts
//! a different operation.
#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::{
    backend::Backend, ops::AttentionModuleOptions, ElementConversion, Tensor, TensorData,
};
use cidm::diffusion::nn::{attention_upcast, conv_forward, geglu, GroupNorm, LayerNorm};
use cidm::kernels::{
    conv_dispatch_counts, dispatch_counts, geglu_dispatch_counts, group_norm_dispatch_counts,
    layer_norm_dispatch_counts, DispatchCounts,
};

/// A tensor of `shape` with smooth values that differ with `seed`.
fn values<B: Backend, const D: usize>(shape: [usize; D], seed: f32) -> Tensor<B, D> {
    let len = shape.iter().product::<usize>();
    let values = (0..len).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn qkv<B: Backend>() -> [Tensor<B, 4>; 3] {
    [1.0f32, 2.0, 3.0].map(|seed| values([1, 2, 6, 4], seed))
}

/// `counts()` went up by one fused call and no unfused call during `run`.
fn one_fused_call(what: &str, counts: fn() -> DispatchCounts, run: impl FnOnce()) {
    let before = counts();
    run();
    let after = counts();
    assert_eq!(
        after.fused,
        before.fused + 1,
        "{what}: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.unfused, before.unfused,
        "{what}: {before:?} -> {after:?}"
    );
}

/// The model's GroupNorm (with SiLU), LayerNorm and GEGLU on `B`, each counted as one call
/// taken by the kernels.
fn norms_and_geglu_take_the_loops<B: Backend>() {
    let norm = |channels| GroupNorm::<B> {
        gamma: Param::from_tensor(values([channels], 4.0)),
        beta: Param::from_tensor(values([channels], 5.0)),
        num_groups: 2,
        epsilon: 1e-5,
    };
    one_fused_call("group norm", group_norm_dispatch_counts, || {
        norm(4).forward_silu(values::<B, 4>([2, 4, 3, 3], 1.0));
    });
    let layer_norm = LayerNorm::<B> {
        weight: Param::from_tensor(values([6], 6.0)),
        bias: Param::from_tensor(values([6], 7.0)),
        eps: 1e-5,
    };
    one_fused_call("layer norm", layer_norm_dispatch_counts, || {
        layer_norm.forward(values::<B, 3>([2, 3, 6], 2.0));
    });
    one_fused_call("geglu", geglu_dispatch_counts, || {
        geglu(values::<B, 3>([2, 3, 8], 3.0)).expect("an even width");
    });
}

/// Inference on Flex and training on `Autodiff<Flex>` both take the loops, and a gradient
/// reaches GEGLU's input through its node (the nodes' gradients are checked against burn's
/// composed ops in cidm-kernels).
#[test]
fn norms_and_geglu_take_the_flex_loops() {
    norms_and_geglu_take_the_loops::<Flex>();
    norms_and_geglu_take_the_loops::<Autodiff<Flex>>();
    let x = values::<Autodiff<Flex>, 3>([2, 3, 8], 3.0).require_grad();
    let grads = geglu(x.clone()).expect("an even width").sum().backward();
    assert!(x.grad(&grads).is_some());
}

/// One call under `Autodiff<Flex>` is counted as taken by the kernels and gives q, k and v
/// gradients; one call on `Flex` alone is taken too (the parallel forward).
#[test]
fn attention_takes_the_flex_paths() {
    one_fused_call("training attention", dispatch_counts, || {
        let [q, k, v] = qkv::<Autodiff<Flex>>().map(Tensor::require_grad);
        let options = AttentionModuleOptions::default();
        let out = attention_upcast(q.clone(), k.clone(), v.clone(), options);
        let grads = out.sum().backward();
        assert!([q, k, v].iter().all(|t| t.grad(&grads).is_some()));
    });
    one_fused_call("attention", dispatch_counts, || {
        let [q, k, v] = qkv::<Flex>();
        attention_upcast(q, k, v, AttentionModuleOptions::default());
    });
}

/// A 3x3 convolution from 3 to 4 channels with `padding` (top, left, bottom, right) and
/// `stride`, as the model builds them.
fn conv<B: Backend>(padding: [usize; 4], stride: usize) -> Conv2d<B> {
    let [top, left, bottom, right] = padding;
    Conv2d {
        weight: Param::from_tensor(values([4, 3, 3, 3], 8.0)),
        bias: Some(Param::from_tensor(values([4], 9.0))),
        stride: [stride, stride],
        kernel_size: [3, 3],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(top, left, bottom, right),
    }
}

/// The model's convolutions (`nn::conv_forward`: the ResNets' and the downsamplers' with
/// padding 1, the VAE encoder's downsamplers with one row and column after) take the loops
/// on Flex and under `Autodiff<Flex>`, and give burn's convolution's output (`Conv2d::forward`,
/// which pads asymmetric inputs itself) to f32 rounding; under autodiff x gets a gradient.
#[test]
fn convolutions_take_the_flex_loops() {
    fn check<B: Backend>() {
        for (padding, stride) in [([1; 4], 1), ([1; 4], 2), ([0, 0, 1, 1], 2)] {
            let layer = conv::<B>(padding, stride);
            let x = values::<B, 4>([2, 3, 7, 6], 10.0);
            let mut out = None;
            one_fused_call("convolution", conv_dispatch_counts, || {
                out = Some(conv_forward(&layer, x.clone()));
            });
            let want = layer.forward(x);
            let err: f32 = (out.expect("ran") - want).abs().max().into_scalar().elem();
            assert!(err < 1e-5, "padding {padding:?} stride {stride}: {err}");
        }
    }
    check::<Flex>();
    check::<Autodiff<Flex>>();
    let x = values::<Autodiff<Flex>, 4>([1, 3, 5, 5], 11.0).require_grad();
    let grads = conv_forward(&conv([1; 4], 1), x.clone()).sum().backward();
    assert!(x.grad(&grads).is_some());
}
