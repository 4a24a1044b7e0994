//! The fused operations on the CPU backend Flex (feature `flex`), in f32: attention
//! (`attention.rs`), GroupNorm (+SiLU), LayerNorm and GEGLU as loops over contiguous slices,
//! in inference and as nodes of `Autodiff<Flex>`.
//!
//! Why loops of our own: burn's norms and GEGLU are a dozen tensor operations each, and Flex
//! runs every operation whose operand is broadcast (a per-channel scale, a row's mean) or
//! strided (GEGLU's two halves of one projection) through its generic strided iterator, one
//! element at a time; at SD 1.5 size these took about a fifth of a UNet step on the CPU. Here
//! each is two passes over memory at most (statistics, then the output), parallel over
//! independent blocks (rayon, Flex's own thread pool), with sums in f64.

mod attention;
mod conv;
mod geglu;
mod group_norm;
mod layer_norm;
mod linear;
mod matmul;
#[cfg(test)]
mod testing;

pub(crate) use attention::run as attention;
pub(crate) use conv::{fused as fused_conv2d, ConvParams};
pub(crate) use geglu::fused as fused_geglu;
pub(crate) use group_norm::fused as fused_group_norm;
pub(crate) use layer_norm::fused as fused_layer_norm;
pub(crate) use linear::fused as fused_linear;

use std::any::Any;

use burn::backend::autodiff::{grads::Gradients, ops::Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{
    backend::Backend, ops::FloatTensor, DType, Shape, Tensor, TensorData, TensorMetadata,
    TensorPrimitive,
};

use crate::autodiff_node::register_fused;

/// One fused operation with `N` float inputs and one float output on Flex, without and with
/// autodiff; [`dispatch`] finds which.
trait FlexKernel<const N: usize> {
    /// The operation's scalar settings.
    type Params: Copy;

    /// The operation on Flex tensors (f32, checked by [`dispatch`]).
    fn plain(inputs: [FlexTensor; N], params: Self::Params) -> FlexTensor;

    /// The operation as one node of `Autodiff<Flex>`'s graph.
    fn autodiff(
        inputs: [FloatTensor<Autodiff<Flex>>; N],
        params: Self::Params,
    ) -> FloatTensor<Autodiff<Flex>>;
}

/// Why [`dispatch`] did not run a kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Declined {
    /// `B` is neither Flex nor `Autodiff<Flex>`, or an input is quantized.
    Backend,
    /// The inputs are not f32 (the only dtype these loops are written for).
    DType(DType),
}

/// `K` on `inputs` when `B` is Flex or `Autodiff<Flex>` and every input is f32; the output
/// with the rank `D`.
fn dispatch<B: Backend, K: FlexKernel<N>, const N: usize, const D: usize>(
    inputs: [TensorPrimitive<B>; N],
    params: K::Params,
) -> Result<Tensor<B, D>, Declined> {
    let floats = inputs.map(|input| match input {
        TensorPrimitive::Float(primitive) => Some(primitive),
        TensorPrimitive::QFloat(_) => None,
    });
    let Some(floats) = floats.into_iter().collect::<Option<Vec<_>>>() else {
        return Err(Declined::Backend);
    };
    if let Some(dtype) = floats.iter().map(|f| f.dtype()).find(|&d| d != DType::F32) {
        return Err(Declined::DType(dtype));
    }
    let out: Box<dyn Any> = if let Some(plain) = cast::<B, Flex, N>(&floats) {
        Box::new(K::plain(plain, params))
    } else if let Some(tracked) = cast::<B, Autodiff<Flex>, N>(&floats) {
        Box::new(K::autodiff(tracked, params))
    } else {
        return Err(Declined::Backend);
    };
    // `B` is the backend the inputs were cast to, so the cast back always succeeds.
    out.downcast::<FloatTensor<B>>()
        .map(|out| Tensor::from_primitive(TensorPrimitive::Float(*out)))
        .map_err(|_| Declined::Backend)
}

/// Clones of `inputs` as `X`'s float tensors, if `B`'s are `X`'s.
fn cast<B: Backend, X: Backend, const N: usize>(
    inputs: &[FloatTensor<B>],
) -> Option<[FloatTensor<X>; N]> {
    let cast: Option<Vec<_>> = inputs
        .iter()
        .map(|input| {
            (input as &dyn Any)
                .downcast_ref::<FloatTensor<X>>()
                .cloned()
        })
        .collect();
    cast?.try_into().ok()
}

/// The inputs of a kernel whose last input, the bias, is optional: `[x, weight, bias]` (`N
/// = 3`) or `[x, weight]` (`N = 2`, no bias: no zero tensor made, no zeros added).
fn with_optional_bias<T, const N: usize>(inputs: [T; N]) -> (T, T, Option<T>) {
    const { assert!(N == 2 || N == 3, "[x, weight] or [x, weight, bias]") };
    let mut inputs = inputs.into_iter();
    let mut next = || inputs.next().expect("N >= 2 inputs");
    let (x, weight) = (next(), next());
    (x, weight, inputs.next())
}

/// The body of the `Backward` of a node whose inputs are [`with_optional_bias`]'s:
/// [`register_fused`] with `backward` given which of `[x, weight, bias]` are tracked (no
/// bias: not tracked) and returning their gradients in that order (the bias's dropped where
/// there is none).
fn register_with_optional_bias<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    backward: impl FnOnce(S, FlexTensor, [bool; 3]) -> [Option<FlexTensor>; 3],
) {
    register_fused::<Flex, _, N>(ops, grads, |saved, grad_out, tracked| {
        let tracked = [0, 1, 2].map(|input| tracked.get(input).copied().unwrap_or(false));
        let mut grads = backward(saved, grad_out, tracked).into_iter();
        std::array::from_fn(|_| grads.next().flatten())
    });
}

/// `tensor` laid out contiguously from offset 0 (itself, shared, when it already is).
fn contiguous(tensor: &FlexTensor) -> FlexTensor {
    tensor.to_contiguous()
}

/// The f32 values of a tensor made by [`contiguous`], in row-major order.
fn values(tensor: &FlexTensor) -> &[f32] {
    // Every tensor given to the loops is f32 (checked by `dispatch`, or made by a loop) and
    // contiguous (`contiguous`), which is all `as_slice` asks.
    tensor
        .as_slice::<f32>()
        .expect("an f32 tensor laid out contiguously")
}

/// A tensor of `shape` holding `values` (moved, not copied).
fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// `sum(term(i) for i in 0..len)` in f64, each term rounded to f32 only by its own
/// arithmetic, in eight independent lanes rather than one chain of dependent additions.
#[inline(always)]
fn sum_f64(len: usize, term: impl Fn(usize) -> f32) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut i = 0;
    while i + 8 <= len {
        for (lane, sum) in lanes.iter_mut().enumerate() {
            *sum += f64::from(term(i + lane));
        }
        i += 8;
    }
    let rest: f64 = (i..len).map(|i| f64::from(term(i))).sum();
    lanes.iter().sum::<f64>() + rest
}

/// The statistics of one block of values: its mean as the sum of two f32 (`hi`, the mean
/// rounded, and `lo`, what the rounding lost) and `rstd = 1 / sqrt(var + epsilon)`.
///
/// Why two parts: centring on an f32 mean is off by up to half its ulp for every value alike,
/// which is all there is of a block whose values are large and close together (two values of
/// 100.00 and 100.01: the mean's 3.8e-6 is 4e-4 of their spread). `v - hi` is exact for
/// values near the mean (Sterbenz), so `(v - hi) - lo` is centred to f32 rounding of the
/// difference itself.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Moments {
    hi: f32,
    lo: f32,
    rstd: f32,
}

impl Moments {
    /// The biased variance of the centred values: two passes, no cancellation.
    #[inline(always)]
    fn of(values: &[f32], epsilon: f32) -> Self {
        let n = values.len() as f64;
        let mean = sum_f64(values.len(), |i| values[i]) / n;
        let hi = mean as f32;
        let lo = (mean - f64::from(hi)) as f32;
        let centred = |i: usize| (values[i] - hi) - lo;
        let var = sum_f64(values.len(), |i| centred(i) * centred(i)) / n;
        let rstd = (1.0 / (var + f64::from(epsilon)).sqrt()) as f32;
        Self { hi, lo, rstd }
    }

    /// `v - mean`.
    #[inline(always)]
    fn centre(&self, v: f32) -> f32 {
        (v - self.hi) - self.lo
    }

    /// The statistics of `blocks` as the forward hands them to the backward: the mean's two
    /// parts `[blocks, 2]` and `rstd` `[blocks]`, f32.
    fn tensors(blocks: Vec<Self>, shape: &[usize]) -> (FlexTensor, FlexTensor) {
        let mean = blocks.iter().flat_map(|m| [m.hi, m.lo]).collect();
        let rstd = blocks.iter().map(|m| m.rstd).collect();
        let mut mean_shape = shape.to_vec();
        mean_shape.push(2);
        (tensor(mean, mean_shape), tensor(rstd, shape.to_vec()))
    }

    /// Block `index`'s statistics from the tensors' values of [`Moments::tensors`].
    fn read(mean: &[f32], rstd: &[f32], index: usize) -> Self {
        Self {
            hi: mean[2 * index],
            lo: mean[2 * index + 1],
            rstd: rstd[index],
        }
    }
}

/// `op` compiled for the widest vector instructions the CPU has (AVX2 and FMA, or AVX-512),
/// chosen at run time. The crate is built for baseline x86-64, whose vectors are SSE2's four
/// lanes: the loops of [`exp`], [`erf`] and the softmax vectorise, but at that width. The
/// loops must be in `op`'s `with_simd`, marked `#[inline(always)]` like the helpers it calls,
/// so that they are compiled inside pulp's function for those instructions (a closure's body
/// is compiled apart, for the baseline). No fused multiply-add is formed where the code does
/// not ask for one, so the results are the same bits on every CPU.
fn vectorized<Op: pulp::WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
}

/// `1 / (1 + exp(-x))`, saturating cleanly: 1 for large x, `exp(x)` down to 0 for very
/// negative x (through [`exp`]'s clamped range).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `e^x` in f32 without a call into libm, so that loops of it vectorise: Cephes' `expf`
/// (`x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 polynomial for `e^r`, `2^n` put into
/// the exponent bits), every step branch-free. Within 2 ulp of the exact value (tested
/// against f64 over the whole range); 0 below -87.3, where `e^x` leaves f32's normal range;
/// above 88.3 it stays at `e^88.3` (about 2.1e38) instead of overflowing to infinity.
/// `expf` was, with its call and the spills around it, a sixth of a UNet step on the CPU (the
/// attention's softmax); PyTorch's CPU kernels use a polynomial too.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two: the first with few mantissa bits, so that `n * LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in float arithmetic
    // (`f32::round` is a libm call on the baseline x86-64 target).
    const ROUND: f32 = 12_582_912.0;
    // 2^23: an integer m below it added to it lies in the mantissa's bits, so the exponent
    // bits of 2^n come from float arithmetic and shifts, without a (saturating, so
    // scalar) float-to-integer conversion.
    const MANTISSA: f32 = 8_388_608.0;
    let clamped = x.clamp(-87.3, 88.3);
    let n = (clamped * LOG2_E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let poly = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e_r = poly * r * r + r + 1.0;
    let biased = (n + 127.0 + MANTISSA).to_bits() - MANTISSA.to_bits();
    let two_n = f32::from_bits(biased << 23);
    if x < -87.3 {
        0.0
    } else {
        e_r * two_n
    }
}

/// The error function, Abramowitz and Stegun's 7.1.26 (`1 - t (a1 + t (a2 + ...)) e^(-x^2)`
/// with `t = 1 / (1 + p |x|)`, odd), within 8e-7 of the exact value (tested against f64: the
/// formula's own error is 1.5e-7, and near 0, where `1` and the product nearly cancel, f32
/// rounding adds up to 6e-7; in GELU's `(1 + erf) / 2`, around 1/2 there, that is 3e-7):
/// the approximation PyTorch's vectorised CPU `erf` uses, without a call into libm, so that
/// GEGLU's loops vectorise (libm's `erff` was most of their time).
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let value = 1.0 - poly * exp(-a * a);
    value.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::{erf, exp};

    /// Within 8e-7 of f64's erf (libm's) at a million points over [-6, 6] (0 among them), odd,
    /// and 1 beyond 4 (to f32's resolution there).
    #[test]
    fn erf_is_within_8e_7() {
        let steps = 1_000_000;
        for i in 0..=steps {
            let x = -6.0 + 12.0 * i as f32 / steps as f32;
            let want = libm::erf(f64::from(x));
            let got = f64::from(erf(x));
            assert!((got - want).abs() < 8e-7, "erf({x}) = {got}, want {want}");
            assert_eq!(erf(-x), -erf(x));
        }
        assert_eq!(erf(4.5), 1.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
    }

    /// Within 2 ulp (2.4e-7 relative) of f64's `exp` at a million points over [-87.3, 88.3],
    /// exact at 0, 0 below the range and finite above it.
    #[test]
    fn exp_is_within_two_ulp() {
        let steps = 1_000_000;
        for i in 0..=steps {
            let x = -87.3 + (88.3 + 87.3) * i as f32 / steps as f32;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - want) / want).abs() < 2.4e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(100.0).is_finite());
    }
}
