//! The f16 forward that no backward follows (inference: every attention of a denoising
//! step; under autodiff, a call with no input needing a gradient, see `autodiff.rs`), tuned
//! per shape between this crate's kernel and cubek's flash attention on tensor cores.
//!
//! This crate's kernel computes on a GPU's general cores (one to four threads per query
//! row, f32 multiply-adds). cubek, the kernel library burn-cubecl is built on, has a flash attention
//! whose two products run on tensor cores (CUDA's `wmma`: f16 tiles, f32 accumulators, the
//! probabilities rounded to f16 before the product with V, as in PyTorch's SDPA). burn's
//! `attention` reaches it only at the default scale and has no backward for it. Which is
//! faster depends on the device and the shape, so CubeCL's autotune times both the first time
//! a shape comes and keeps the faster (in memory and in CubeCL's autotune cache on disk).
//!
//! - Fewer keys than a tile (16) stay with this crate's kernel: cubek 0.2 checks bounds only
//!   where its tile is not a multiple of the problem's length, and 1, 2, 4 or 8 keys divide it.
//! - The key is the exact shape, without the bucketing of burn's own attention autotune: a
//!   choice made on one shape is never applied to another, where cubek's routine might not
//!   set up (it needs the queries to fill its stages). It also holds the limit that sets how
//!   this crate's kernel splits its rows ([`crate::HELD_VALUES_VAR`]).
//! - cubek's routine scales the scores by `1/sqrt(head width)` and needs the head width to be
//!   a multiple of its tiles' (16 for f16 `wmma`). SD 1.5's width 40 is padded with zero
//!   columns to 48 ([`padded_inputs`]): zero columns add nothing to `q k^T`, and V's give
//!   output columns that are cut off. q is multiplied by `scale * sqrt(padded width)`, so the
//!   routine's fixed scale gives the caller's.
//! - Only f16: the routine's tiles are f16, so f32 inputs would lose precision and bf16 ones
//!   range. Training keeps this crate's kernels wherever a backward follows: it needs the
//!   forward's logsumexp, which cubek's routine does not write.
//! - [`crate::TENSOR_CORES_SWITCH_VAR`] set to `0` leaves every call to this crate's kernel.

use burn::tensor::{backend::Backend, DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeBackend, CubeRuntime};
use cubecl::prelude::*;
use cubecl::tune::{local_tuner, AutotuneOutput, LocalTuner, Tunable, TunableSet};
use cubecl::{AutotuneKey, CubeTuneId};
use cubek::attention::definition::{AccumulatorPrecision, AttentionGlobalTypes, AttentionOptions};
use cubek::attention::launch::{launch_ref, BlueprintStrategy, Strategy};
use cubek::attention::routines::blackbox_accelerated::BlackboxAcceleratedStrategy;
use serde::{Deserialize, Serialize};

use super::launch;
use crate::cube::host::empty_on;
use crate::{stats, switch};

/// The tensor-core tile shape the padding aims at: f16 `wmma`'s 16 x 16 x 16 (the head width
/// is both the score product's inner dimension and the value product's column count, so it
/// must be a multiple of 16 in both roles).
const TILE: u32 = 16;

/// Planes (warps) per cube that cubek's routine is tried with, as in burn's own autotune.
const PLANES: [u8; 3] = [2, 4, 8];

/// The autotune key: the exact shape (see the module's doc), and the limit of values a unit
/// of this crate's kernel holds ([`crate::HELD_VALUES_VAR`]), which sets how that kernel
/// splits its rows: a choice timed under one limit is not reused under another (the
/// benchmark's `--held-values` runs compare them).
#[derive(Hash, Eq, PartialEq, Debug, Clone, Serialize, Deserialize, AutotuneKey)]
struct InferenceKey {
    batch_heads: usize,
    len_q: usize,
    len_k: usize,
    head_dim: usize,
    held_values: usize,
}

/// The tuned operation's inputs: q, k, v and the scale.
type Inputs<R> = (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>, f32);

/// The tuned operation's output, and which candidate wrote it.
#[derive(Debug)]
struct Attended<R: CubeRuntime> {
    out: CubeTensor<R>,
    tensor_cores: bool,
}

impl<R: CubeRuntime> AutotuneOutput for Attended<R> {}

/// `softmax(q k^T * scale) v` without the logsumexp: on f16 inputs (with the switch on) the
/// faster of this crate's kernel and cubek's tensor-core routine for this shape, else this
/// crate's kernel.
pub(crate) fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    scale: f32,
) -> CubeTensor<R> {
    if q.dtype != DType::F16 || !switch::TENSOR_CORES.enabled() {
        return launch::forward(q, k, v, scale).0;
    }
    static TUNER: LocalTuner<InferenceKey, CubeTuneId> = local_tuner!("cidm-attention-f16");
    let tunables = TUNER.init(|| {
        let mut set = TunableSet::<InferenceKey, Inputs<R>, Attended<R>>::new_cloning_inputs(
            key::<R>,
        )
        .with(Tunable::new("cidm_flash", |(q, k, v, scale): Inputs<R>| {
            Ok::<_, String>(Attended {
                out: launch::forward(q, k, v, scale).0,
                tensor_cores: false,
            })
        }));
        for planes in PLANES {
            let name = format!("cubek_blackbox_accelerated_{planes}_planes");
            set = set.with(Tunable::new(&name, move |(q, k, v, scale): Inputs<R>| {
                tensor_cores(q, k, v, scale, planes).map(|out| Attended {
                    out,
                    tensor_cores: true,
                })
            }));
        }
        set
    });
    let client = q.client.clone();
    let id = CubeTuneId::new(&q.client, &q.device);
    let attended = TUNER.execute(&id, &client, tunables, (q, k, v, scale));
    stats::record_tuned_attention(attended.tensor_cores);
    attended.out
}

/// The autotune key of the inputs: their exact shape, and the limit in force.
fn key<R: CubeRuntime>((q, k, _, _): &Inputs<R>) -> InferenceKey {
    let [batch, heads, len_q, head_dim] = q.shape().dims::<4>();
    let len_k = k.shape().dims::<4>()[2];
    let held_values = switch::attention_held_values();
    InferenceKey::new(batch * heads, len_q, len_k, head_dim, held_values)
}

/// burn-cubecl's backend, for the padding's tensor operations (which follow the tensors'
/// own dtype, whatever the backend's default float type).
type Ops<R> = CubeBackend<R, f32, i32, u32>;

/// cubek's tensor-core flash attention with `planes` planes per cube: an error (for the
/// autotune to skip it) where the device has no 16 x 16 x 16 f16 tensor-core product or the
/// routine cannot set up for this shape.
fn tensor_cores<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    scale: f32,
    planes: u8,
) -> Result<CubeTensor<R>, String> {
    let f16 = StorageType::from(DType::F16);
    let f32 = StorageType::from(DType::F32);
    let has_tile = q
        .client
        .properties()
        .features
        .matmul
        .cmma
        .iter()
        .any(|mma| {
            (mma.a_type, mma.b_type, mma.cd_type) == (f16, f16, f32)
                && (mma.m, mma.n, mma.k) == (TILE, TILE, TILE)
        });
    if !has_tile {
        return Err("no 16x16x16 f16 tensor-core product on this device".into());
    }
    let [batch, heads, len_q, head_dim] = q.shape().dims::<4>();
    // cubek 0.2 turns its bounds checks on where a tile's length is not a multiple of the
    // problem's (`AttentionTilingScheme::check_bounds`), so fewer keys than a tile that
    // divide it (1, 2, 4 or 8) would be read past their end, unmasked.
    if k.shape().dims::<4>()[2] < TILE as usize {
        return Err("fewer keys than a tensor-core tile".into());
    }
    let width = head_dim.next_multiple_of(TILE as usize);
    let tensor = |t: CubeTensor<R>| Tensor::<Ops<R>, 4>::from_primitive(TensorPrimitive::Float(t));
    let [q, k, v] = padded_inputs(tensor(q), tensor(k), tensor(v), scale, width)
        .map(|t| into_contiguous(t.into_primitive().tensor()));
    let out = empty_on(&q, Shape::new([batch, heads, len_q, width]), DType::F16);
    let client = q.client.clone();
    let strategy = BlackboxAcceleratedStrategy {
        num_planes: planes,
        seq_q: 1,
        seq_kv: 1,
    };
    launch_ref::<R>(
        Strategy::BlackboxAccelerated(BlueprintStrategy::Inferred(strategy)),
        &client,
        q.binding(),
        k.binding(),
        v.binding(),
        None,
        out.clone().binding(),
        &AttentionGlobalTypes {
            query: f16,
            key: f16,
            value: f16,
            mask: StorageType::from(DType::U8),
            out: f16,
        },
        AttentionOptions {
            causal: false,
            accumulator_precision: AccumulatorPrecision::Strict(f32),
        },
    )
    .map_err(|err| format!("{err:?}"))?;
    let out = tensor(out);
    Ok(if width == head_dim {
        out
    } else {
        out.narrow(3, 0, head_dim)
    }
    .into_primitive()
    .tensor())
}

/// q, k and v `[batch, heads, tokens, head_dim]` with their head width padded with zero
/// columns to `width`, and q multiplied by `scale * sqrt(width)`: attention on the results at
/// the default scale `1/sqrt(width)`, its output cut to the first `head_dim` columns, is
/// attention on the inputs at `scale`.
pub(crate) fn padded_inputs<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    width: usize,
) -> [Tensor<B, 4>; 3] {
    let factor = scale * (width as f32).sqrt();
    // At the default scale without padding the factor is 1 up to f32 rounding: skip the pass.
    let q = if (factor - 1.0).abs() > 4.0 * f32::EPSILON {
        q.mul_scalar(factor)
    } else {
        q
    };
    [q, k, v].map(|t| {
        let [batch, heads, tokens, head_dim] = t.dims();
        if head_dim >= width {
            return t;
        }
        let zeros = Tensor::<B, 4>::zeros(
            [batch, heads, tokens, width - head_dim],
            (&t.device(), t.dtype()),
        );
        Tensor::cat(vec![t, zeros], 3)
    })
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::module::attention_fallback;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Distribution, Tensor};

    use super::padded_inputs;

    /// Attention on the padded inputs at the padded width's default scale, cut to the
    /// original width, is attention on the inputs at their scale (the default one and
    /// another), to f32 rounding: SD 1.5's width 40 padded to 48, and a width already whole.
    #[test]
    fn padded_inputs_give_the_same_attention() {
        let device = Default::default();
        for (head_dim, width) in [(40, 48), (5, 16), (32, 32)] {
            for scale in [1.0 / (head_dim as f32).sqrt(), 0.3] {
                let random = |len| {
                    Tensor::<Flex, 4>::random(
                        [2, 3, len, head_dim],
                        Distribution::Normal(0.0, 1.0),
                        &device,
                    )
                };
                let (q, k, v) = (random(7), random(5), random(5));
                let options = |scale: Option<f32>| AttentionModuleOptions {
                    scale: scale.map(f64::from),
                    ..Default::default()
                };
                let want = attention_fallback(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    None,
                    options(Some(scale)),
                );
                let [pq, pk, pv] = padded_inputs(q, k, v, scale, width);
                assert_eq!(pq.dims(), [2, 3, 7, width]);
                let got = attention_fallback(pq, pk, pv, None, None, options(None))
                    .narrow(3, 0, head_dim);
                let err: f32 = (got - want).abs().max().into_scalar();
                assert!(
                    err < 1e-5,
                    "width {head_dim} -> {width}, scale {scale}: {err}"
                );
            }
        }
    }
}
