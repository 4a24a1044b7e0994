//! The default build (feature `flex`) trains on the CPU with cidm-kernels' attention node,
//! whose backward keeps no score matrix (docs/performance.md, "Attention in CPU training"):
//! the feature reaches cidm-kernels through cidm-diffusion, and the UNet's attention call
//! takes the node under autodiff. Inference on the CPU keeps Flex's own attention.
#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, ops::AttentionModuleOptions, Tensor, TensorData};
use cidm::diffusion::nn::attention_upcast;
use cidm::kernels::dispatch_counts;

fn qkv<B: Backend>() -> [Tensor<B, 4>; 3] {
    [1.0f32, 2.0, 3.0].map(|seed| {
        let values = (0..2 * 6 * 4)
            .map(|i| (i as f32 * 0.37 + seed).sin())
            .collect();
        Tensor::from_data(TensorData::new(values, [1, 2, 6, 4]), &Default::default())
    })
}

/// One call under `Autodiff<Flex>` is counted as taken by the kernels and gives q, k and v
/// gradients; one call on `Flex` alone is handed back to burn's attention. (The counters are
/// global; this file is its own test binary with this one test.)
#[test]
fn training_on_the_cpu_takes_the_attention_node() {
    let before = dispatch_counts();
    let [q, k, v] = qkv::<Autodiff<Flex>>().map(Tensor::require_grad);
    let out = attention_upcast(
        q.clone(),
        k.clone(),
        v.clone(),
        AttentionModuleOptions::default(),
    );
    let grads = out.sum().backward();
    assert!([q, k, v].iter().all(|t| t.grad(&grads).is_some()));
    let after = dispatch_counts();
    assert_eq!(after.fused, before.fused + 1, "{before:?} -> {after:?}");
    assert_eq!(after.unfused, before.unfused);

    let [q, k, v] = qkv::<Flex>();
    attention_upcast(q, k, v, AttentionModuleOptions::default());
    let inference = dispatch_counts();
    assert_eq!(inference.fused, after.fused);
    assert_eq!(
        inference.unfused,
        after.unfused + 1,
        "{after:?} -> {inference:?}"
    );
}
