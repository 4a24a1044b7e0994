//! The fused attention on wgpu (on CI: Mesa's lavapipe, a Vulkan driver on the CPU) against
//! burn's plain `module::attention` on the Flex CPU backend: forward output and the gradients
//! of q, k and v, for the head widths Stable Diffusion uses (40, 64, 80, 160) and a tiny
//! one (8), query lengths 1, 64 and 100 and key lengths 77 and 100 (none a multiple of the
//! kernel's tile), and SD 1.5's long sequences (up to 1000 queries, 4096 keys), with batch 2
//! and 3 heads. Both sides compute in f32, the reference
//! through a materialised softmax, so they agree to rounding: 1e-4 relative to the largest
//! reference value.
use crate::common::{assert_close, to_vec, values, Gpu, GpuPlain, TOL_F32};

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, TensorData};
use cidm_diffusion::nn::attention_upcast;
use cidm_kernels::{
    dispatch_counts, fused_attention, set_attention_tensor_cores, tensor_core_attention_calls,
    tuned_attention_calls, UnfusedReason,
};

const BATCH: usize = 2;
const HEADS: usize = 3;

fn tensor<B: Backend>(data: &[f32], shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

/// Inputs of one case: q, k, v and the weights `w` of the loss `sum(out * w)`, whose
/// gradient with respect to `out` is `w` (a non-trivial dO for the backward).
struct Case {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    w: Vec<f32>,
    q_shape: [usize; 4],
    kv_shape: [usize; 4],
}

impl Case {
    fn new(len_q: usize, len_k: usize, head_dim: usize) -> Self {
        let q_shape = [BATCH, HEADS, len_q, head_dim];
        let kv_shape = [BATCH, HEADS, len_k, head_dim];
        let (nq, nk) = (q_shape.iter().product(), kv_shape.iter().product());
        let seed = (len_q * 1000 + len_k) as u64 * 1000 + head_dim as u64;
        Self {
            q: values(seed, nq),
            k: values(seed + 1, nk),
            v: values(seed + 2, nk),
            w: values(seed + 3, nq),
            q_shape,
            kv_shape,
        }
    }

    fn inputs<B: Backend>(&self, device: &B::Device) -> [Tensor<B, 4>; 3] {
        [
            tensor(&self.q, self.q_shape, device),
            tensor(&self.k, self.kv_shape, device),
            tensor(&self.v, self.kv_shape, device),
        ]
    }

    /// Output and gradients of q, k, v through `attend` on `Autodiff<B>`.
    fn run<B: Backend>(
        &self,
        device: &B::Device,
        dtype: DType,
        attend: impl FnOnce(
            Tensor<Autodiff<B>, 4>,
            Tensor<Autodiff<B>, 4>,
            Tensor<Autodiff<B>, 4>,
        ) -> Tensor<Autodiff<B>, 4>,
    ) -> [Vec<f32>; 4] {
        let [q, k, v] = self
            .inputs::<Autodiff<B>>(device)
            .map(|t| t.cast(dtype).require_grad());
        let w = tensor::<Autodiff<B>>(&self.w, self.q_shape, device).cast(dtype);
        let out = attend(q.clone(), k.clone(), v.clone());
        let grads = (out.clone() * w).cast(DType::F32).sum().backward();
        let grad = |t: &Tensor<Autodiff<B>, 4>| to_vec(t.grad(&grads).expect("input gradient"));
        [to_vec(out), grad(&q), grad(&k), grad(&v)]
    }

    /// The reference: burn's plain attention on Flex, f32.
    fn reference(&self) -> [Vec<f32>; 4] {
        self.run::<Flex>(&Default::default(), DType::F32, |q, k, v| {
            attention(q, k, v, None, None, AttentionModuleOptions::default())
        })
    }
}

fn fused<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    fused_attention(q, k, v, AttentionModuleOptions::default())
        .unwrap_or_else(|unfused| panic!("the fused kernel did not run: {unfused}"))
}

fn upcast<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    attention_upcast(q, k, v, AttentionModuleOptions::default())
}

const NAMES: [&str; 4] = ["output", "dq", "dk", "dv"];

/// Output and the three gradients through `Autodiff<Wgpu>` (the fused forward and backward
/// kernels under burn-fusion) against the f32 reference on Flex, for one shape.
fn check_fused_f32(device: &WgpuDevice, head_dim: usize, len_q: usize, len_k: usize) {
    let case = Case::new(len_q, len_k, head_dim);
    let want = case.reference();
    let got = case.run::<Gpu>(device, DType::F32, fused);
    for (name, (g, w)) in NAMES.iter().zip(got.iter().zip(&want)) {
        let what = format!("{name} d={head_dim} lq={len_q} lk={len_k}");
        assert_close(&what, g, w, TOL_F32);
    }
}

/// Forward and all three gradients through `Autodiff<Wgpu>` (the fused forward and the
/// fused backward kernels under burn-fusion), every head width and length: SD's four
/// widths, 8, and 3 and 41, whose rows are not whole vectors of the kernels' shared-memory
/// tiles (4 values) and end in zero padding there. At 41 the dQ and dK/dV kernels split a
/// row's 11 vectors over 2 units, 6 each (the second unit's part ends in a whole vector of
/// padding); at 40 dK/dV splits 10 vectors 5 and 5; at 64, 80 and 160 all three kernels
/// split rows but the forward at 64 (2 or 4 units per row).
#[test]
fn forward_and_gradients_match_plain_attention() {
    let device = WgpuDevice::default();
    for head_dim in [3, 8, 41, 40, 64, 80, 160] {
        for (len_q, len_k) in [(1, 77), (64, 100), (100, 77)] {
            check_fused_f32(&device, head_dim, len_q, len_k);
        }
    }
}

/// Long sequences, as in SD 1.5 at 64x64 latents. Many queries against few keys (its
/// cross-attention): the key/value gradient kernel splits the query rows into ranges and
/// adds up their partial sums (wgpu reports no multiprocessor count, so the kernel aims for
/// 512 cubes: at head width 40, 1000 queries make 3 ranges of 384 rows, the last shorter,
/// and 576 make 2). Few queries against 4096 keys (its self-attention at head width 40).
/// Forward and all gradients as above. These shapes also keep the kernels honest on
/// lavapipe, which stops the loops of a shader invocation after 65535 iterations in all:
/// with head-dimension loops that were not unrolled, each of them failed.
#[test]
fn long_sequences_match_plain_attention() {
    let device = WgpuDevice::default();
    let cases = [
        (40, 1000, 7),
        (40, 576, 77),
        (40, 64, 4096),
        (160, 1000, 7),
        (160, 576, 77),
    ];
    for (head_dim, len_q, len_k) in cases {
        check_fused_f32(&device, head_dim, len_q, len_k);
    }
}

/// q, k and v as the UNet makes them: projections `[batch, tokens, heads * head_dim]` seen as
/// `[batch, heads, tokens, head_dim]` (`reshape`, then `swap_dims(1, 2)`: a token's heads
/// side by side in memory), the output turned back the same way before the loss; v instead
/// a plain `[batch, heads, tokens, head_dim]` tensor when `v_as_heads` is false. Output and
/// gradients of the three leaves, as stored (the projections' layout, or v's).
fn run_head_views<B: Backend>(
    case: &Case,
    device: &B::Device,
    v_as_heads: bool,
    attend: impl FnOnce(
        Tensor<Autodiff<B>, 4>,
        Tensor<Autodiff<B>, 4>,
        Tensor<Autodiff<B>, 4>,
    ) -> Tensor<Autodiff<B>, 4>,
) -> [Vec<f32>; 4] {
    let projection = |data: &[f32], [batch, heads, tokens, head_dim]: [usize; 4]| {
        let shape = [batch, tokens, heads * head_dim];
        Tensor::<Autodiff<B>, 3>::from_data(TensorData::new(data.to_vec(), shape), device)
            .require_grad()
    };
    let heads = |x: Tensor<Autodiff<B>, 3>| {
        let [batch, tokens, inner] = x.dims();
        x.reshape([batch, tokens, HEADS, inner / HEADS])
            .swap_dims(1, 2)
    };
    let (q, k) = (
        projection(&case.q, case.q_shape),
        projection(&case.k, case.kv_shape),
    );
    let v_projection = projection(&case.v, case.kv_shape);
    let v_plain = tensor::<Autodiff<B>>(&case.v, case.kv_shape, device).require_grad();
    let v = if v_as_heads {
        heads(v_projection.clone())
    } else {
        v_plain.clone()
    };
    let out = attend(heads(q.clone()), heads(k.clone()), v);
    let [batch, _, tokens, head_dim] = out.dims();
    let out = out
        .swap_dims(1, 2)
        .reshape([batch, tokens, HEADS * head_dim]);
    let w =
        Tensor::<Autodiff<B>, 3>::from_data(TensorData::new(case.w.clone(), out.dims()), device);
    let grads = (out.clone() * w).sum().backward();
    let grad_v = if v_as_heads {
        to_vec(v_projection.grad(&grads).expect("v gradient"))
    } else {
        to_vec(v_plain.grad(&grads).expect("v gradient"))
    };
    let grad = |t: &Tensor<Autodiff<B>, 3>| to_vec(t.grad(&grads).expect("input gradient"));
    [to_vec(out), grad(&q), grad(&k), grad_v]
}

/// The kernels read strided heads where they lie and write the output and the gradients in
/// their inputs' layout (the views' above), which the way back to tokens then takes without
/// a copy: values as the plain attention's on the same views, with one range of query rows
/// in the key/value gradient (self-attention, 64 keys) and several (576 queries, 77 keys),
/// and with v laid out otherwise than q and k.
#[test]
fn head_views_match_plain_attention() {
    let device = WgpuDevice::default();
    for (head_dim, len_q, len_k) in [(40, 64, 64), (40, 576, 77), (8, 100, 77)] {
        let case = Case::new(len_q, len_k, head_dim);
        for v_as_heads in [true, false] {
            let want = run_head_views::<Flex>(&case, &Default::default(), v_as_heads, |q, k, v| {
                attention(q, k, v, None, None, AttentionModuleOptions::default())
            });
            let got = run_head_views::<Gpu>(&case, &device, v_as_heads, fused);
            for (name, (g, w)) in NAMES.iter().zip(got.iter().zip(&want)) {
                let what =
                    format!("{name} d={head_dim} lq={len_q} lk={len_k} v_as_heads={v_as_heads}");
                assert_close(&what, g, w, TOL_F32);
            }
        }
    }
}

/// Under `Autodiff`, inputs that need no gradient (the first transformer block's
/// self-attention in LoRA training: frozen layers before it) take the forward without
/// logsumexp, whose output is the reference's; one tracked input (v alone, frozen q and k)
/// is enough for the node and its backward, and v's gradient is the reference's. In f32 both
/// forwards give that output: that the untracked call takes the inference forward is checked
/// in f16 by `half_precision_inference`, whose tuned-call count includes such a call.
#[test]
fn untracked_inputs_under_autodiff() {
    let device = WgpuDevice::default();
    let case = Case::new(100, 77, 40);
    let want = case.reference();
    let [q, k, v] = case.inputs::<Autodiff<Gpu>>(&device);
    let out = fused(q.clone(), k.clone(), v.clone());
    assert_close("untracked output", &to_vec(out), &want[0], TOL_F32);

    let v = v.require_grad();
    let w = tensor::<Autodiff<Gpu>>(&case.w, case.q_shape, &device);
    let out = fused(q, k, v.clone());
    assert_close("output, v tracked", &to_vec(out.clone()), &want[0], TOL_F32);
    let grads = (out * w).sum().backward();
    let dv = to_vec(v.grad(&grads).expect("gradient of v"));
    assert_close("dv, v tracked", &dv, &want[3], TOL_F32);
}

/// burn-cubecl's backend without fusion takes the kernel directly (another dispatch path);
/// forward and gradients as above, and a non-default scale.
#[test]
fn plain_cube_backend_matches_plain_attention() {
    let device = WgpuDevice::default();
    let options = AttentionModuleOptions {
        scale: Some(0.3),
        ..Default::default()
    };
    let case = Case::new(100, 77, 64);
    let want = case.run::<Flex>(&Default::default(), DType::F32, |q, k, v| {
        attention(q, k, v, None, None, options)
    });
    let got = case.run::<GpuPlain>(&device, DType::F32, |q, k, v| {
        fused_attention(q, k, v, options).expect("fused kernel on the plain cube backend")
    });
    for (name, (g, w)) in NAMES.iter().zip(got.iter().zip(&want)) {
        assert_close(name, g, w, TOL_F32);
    }
}

/// f16 inputs: where the adapter supports f16 shaders the kernel runs (scores and softmax in
/// f32, output and gradients rounded to f16, so 1e-2 against the f32 reference on the same
/// f16-rounded inputs); where it does not, the call must come back unfused with the device
/// reason, never run a wrong kernel. The test prints which of the two it checked.
#[test]
fn half_precision_inputs() {
    let device = WgpuDevice::default();
    let mut case = Case::new(64, 77, 40);
    // Round the inputs to f16 so both sides see the same values.
    for data in [&mut case.q, &mut case.k, &mut case.v, &mut case.w] {
        for x in data.iter_mut() {
            *x = half::f16::from_f32(*x).to_f32();
        }
    }
    let [q, k, v] = case.inputs::<Gpu>(&device).map(|t| t.cast(DType::F16));
    match fused_attention(q, k, v, AttentionModuleOptions::default()) {
        Err(unfused) => {
            assert_eq!(
                unfused.reason,
                UnfusedReason::Device {
                    dtype: DType::F16,
                    head_dim: 40
                }
            );
            eprintln!("f16 NOT TESTED on this adapter: it has no f16 shader support ({unfused})");
        }
        Ok(out) => {
            assert_eq!(out.dtype(), DType::F16);
            let want = case.reference();
            let got = case.run::<Gpu>(&device, DType::F16, fused);
            for (name, (g, w)) in NAMES.iter().zip(got.iter().zip(&want)) {
                assert_close(&format!("f16 {name}"), g, w, 1e-2);
            }
            eprintln!("f16 tested: the adapter supports f16 shaders");
        }
    }
}

/// f16 forwards that no backward follows, on the inference backend (under burn-fusion), on
/// burn-cubecl's plain backend and under autodiff with untracked inputs: CubeCL's autotune
/// chooses, per shape, between this crate's kernel and cubek's tensor-core attention (on
/// inputs padded from width 40 to 48, q rescaled for a non-default scale), and each of the
/// three calls counts as tuned; with the tensor cores switched off, this crate's kernel
/// alone, and none counts. Lavapipe has no tensor cores, so there the autotune must settle
/// on this crate's kernel; a GPU with them checks the tensor-core path the same way. Output
/// against the f32 reference on the same f16-rounded inputs, to 1e-2 as above.
#[test]
fn half_precision_inference() {
    let device = WgpuDevice::default();
    let flex = Default::default();
    for (head_dim, scale) in [(40, None), (64, Some(0.3))] {
        let mut case = Case::new(128, 77, head_dim);
        for data in [&mut case.q, &mut case.k, &mut case.v] {
            for x in data.iter_mut() {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
        let options = AttentionModuleOptions {
            scale,
            ..Default::default()
        };
        let [q, k, v] = case.inputs::<Flex>(&flex);
        let want = to_vec(attention(q, k, v, None, None, options));
        for tensor_cores in [true, false] {
            set_attention_tensor_cores(Some(tensor_cores));
            let tuned_before = tuned_attention_calls();
            let [q, k, v] = case.inputs::<Gpu>(&device).map(|t| t.cast(DType::F16));
            let fusion = fused_attention(q, k, v, options).map_err(|unfused| unfused.reason);
            let [q, k, v] = case.inputs::<GpuPlain>(&device).map(|t| t.cast(DType::F16));
            let plain = fused_attention(q, k, v, options).map_err(|unfused| unfused.reason);
            let [q, k, v] = case
                .inputs::<Autodiff<Gpu>>(&device)
                .map(|t| t.cast(DType::F16));
            let frozen = fused_attention(q, k, v, options).map_err(|unfused| unfused.reason);
            let (fusion, plain, frozen) = match (fusion, plain, frozen) {
                (Ok(fusion), Ok(plain), Ok(frozen)) => (fusion, plain, frozen),
                (Err(reason), _, _) | (_, Err(reason), _) | (_, _, Err(reason)) => {
                    assert!(matches!(reason, UnfusedReason::Device { .. }), "{reason}");
                    eprintln!("f16 inference NOT TESTED on this adapter ({reason})");
                    set_attention_tensor_cores(None);
                    return;
                }
            };
            let what = format!("f16 inference d={head_dim} tensor cores {tensor_cores}");
            assert_eq!(fusion.dtype(), DType::F16);
            assert_close(&format!("{what}, fusion"), &to_vec(fusion), &want, 1e-2);
            assert_close(&format!("{what}, plain"), &to_vec(plain), &want, 1e-2);
            assert_close(&format!("{what}, untracked"), &to_vec(frozen), &want, 1e-2);
            // Reading the outputs ran the fusion streams. No other test of this binary runs
            // an f16 attention that no backward follows, so none lands in these counts.
            let tuned = tuned_attention_calls() - tuned_before;
            if tensor_cores {
                assert_eq!(tuned, 3, "{what}: calls tuned, want the 3 above, once each");
            } else {
                assert_eq!(tuned, 0, "{what}: calls tuned with the tensor cores off");
            }
        }
    }
    set_attention_tensor_cores(None);
    eprintln!(
        "f16 inference tested; calls on tensor cores: {}",
        tensor_core_attention_calls()
    );
}

/// The core's `attention_upcast` takes the fused kernel on wgpu, with and without autodiff
/// (the dispatch counter grows), and agrees with `attention_upcast` on Flex, which runs
/// burn's plain attention.
#[test]
fn attention_upcast_runs_the_kernel() {
    let device = WgpuDevice::default();
    let case = Case::new(64, 77, 40);

    let before = dispatch_counts().fused;
    let [q, k, v] = case.inputs::<Gpu>(&device);
    let got = to_vec(upcast(q, k, v));
    let [q, k, v] = case.inputs::<Flex>(&Default::default());
    let want = to_vec(upcast(q, k, v));
    assert_close("attention_upcast output", &got, &want, TOL_F32);

    let got = case.run::<Gpu>(&device, DType::F32, upcast);
    let want = case.run::<Flex>(&Default::default(), DType::F32, upcast);
    for (name, (g, w)) in NAMES.iter().zip(got.iter().zip(&want)) {
        assert_close(&format!("attention_upcast {name}"), g, w, TOL_F32);
    }
    assert!(
        dispatch_counts().fused >= before + 2,
        "attention_upcast on wgpu did not take the fused kernel"
    );
}

/// What the kernel does not take comes back unchanged with its reason: a CPU backend,
/// causal masking, and k/v of different lengths.
#[test]
fn unsupported_inputs_come_back() {
    let case = Case::new(4, 5, 8);
    let [q, k, v] = case.inputs::<Flex>(&Default::default());
    let unfused = fused_attention(q, k, v, AttentionModuleOptions::default())
        .expect_err("Flex has no fused kernel");
    assert_eq!(unfused.reason, UnfusedReason::Backend);
    assert_eq!(to_vec(unfused.q), case.q);

    let device = WgpuDevice::default();
    let [q, k, v] = case.inputs::<Gpu>(&device);
    let causal = AttentionModuleOptions {
        is_causal: true,
        ..Default::default()
    };
    let unfused = fused_attention(q, k, v, causal).expect_err("causal is not fused");
    assert_eq!(unfused.reason, UnfusedReason::Options);

    let [q, k, _] = case.inputs::<Gpu>(&device);
    let v = k.clone().slice([0..BATCH, 0..HEADS, 0..4, 0..8]);
    let unfused = fused_attention(q, k, v, AttentionModuleOptions::default())
        .expect_err("k and v of different lengths");
    assert!(matches!(unfused.reason, UnfusedReason::Shape { .. }));
}
