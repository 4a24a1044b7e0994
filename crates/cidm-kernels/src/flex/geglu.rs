//! GEGLU on Flex: [`GegluOps`] as one loop over rows each way, in parallel over runs of rows.
//! The plain ops read the two halves of each row as strided views (Flex's slow path) and
//! differentiate through a product and a GELU, then place each half's gradient into a zero
//! tensor of x's shape and add them; here each pass reads and writes every value once.

use std::f32::consts::FRAC_1_SQRT_2;

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, ops::FloatTensor, Shape, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::{contiguous, dispatch, erf, exp, tensor, values, vectorized, Declined, FlexKernel};
use crate::fused_ops::geglu::{self as node, GegluOps};
use crate::GegluUnfused;

/// Values of one parallel task: enough rows that a task is worth its scheduling.
const TASK_VALUES: usize = 1 << 14;

/// `1 / sqrt(2 pi)`, the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// The fused GEGLU on `B` if it is Flex or `Autodiff<Flex>`: x `[rows, 2 n]` (shape checked
/// by the caller); `Backend` for any other backend, `Device` for another dtype than f32.
pub(crate) fn fused<B: Backend>(x: Tensor<B, 2>) -> Result<Tensor<B, 2>, GegluUnfused> {
    dispatch::<B, FlexGeglu, 1, 2>([x.into_primitive()], ()).map_err(|declined| match declined {
        Declined::Backend => GegluUnfused::Backend,
        Declined::DType(dtype) => GegluUnfused::Device { dtype },
    })
}

/// GEGLU as a [`FlexKernel`]: input `[x]`.
struct FlexGeglu;

impl FlexKernel<1> for FlexGeglu {
    type Params = ();

    fn plain([x]: [FlexTensor; 1], _: ()) -> FlexTensor {
        Flex::geglu_forward(x)
    }

    fn autodiff([x]: [FloatTensor<Autodiff<Flex>>; 1], _: ()) -> FloatTensor<Autodiff<Flex>> {
        node::forward::<Flex>(x)
    }
}

impl GegluOps for Flex {
    fn geglu_forward(x: FlexTensor) -> FlexTensor {
        let shape = x.shape();
        let x = contiguous(&x);
        let x = values(&x);
        let width = shape[1];
        let half = width / 2;
        let mut out = vec![0.0f32; x.len() / 2];
        let rows = (TASK_VALUES / width).max(1);
        out.par_chunks_mut(rows * half)
            .zip(x.par_chunks(rows * width))
            .for_each(|(out, x)| vectorized(Forward { out, x, half }));
        tensor(out, Shape::new([shape[0], half]))
    }

    /// One pass over rows in parallel ([`Backward`]).
    fn geglu_backward(x: FlexTensor, grad_out: FlexTensor) -> FlexTensor {
        let shape = x.shape();
        let [x, grad_out] = [x, grad_out].map(|t| contiguous(&t));
        let (x, grad_out) = (values(&x), values(&grad_out));
        let width = shape[1];
        let half = width / 2;
        let mut dx = vec![0.0f32; x.len()];
        let rows = (TASK_VALUES / width).max(1);
        dx.par_chunks_mut(rows * width)
            .zip(x.par_chunks(rows * width))
            .zip(grad_out.par_chunks(rows * half))
            .for_each(|((dx, x), dy)| vectorized(Backward { dx, x, dy, half }));
        tensor(dx, shape)
    }
}

/// The output of a run of rows `x` (`[rows, 2 half]`) into `out` (`[rows, half]`), for
/// [`vectorized`].
struct Forward<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    half: usize,
}

impl pulp::WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self { out, x, half } = self;
        for (out, x) in out.chunks_mut(half).zip(x.chunks(2 * half)) {
            let (hidden, gate) = x.split_at(half);
            for ((o, &h), &g) in out.iter_mut().zip(hidden).zip(gate) {
                *o = h * g * normal_cdf(g);
            }
        }
    }
}

/// x's gradient `dx` of a run of rows `x` from the output's gradient `dy`, for
/// [`vectorized`]: `d hidden = dy * gelu(g)`, `d gate = dy * h * (Phi(g) + g * phi(g))`,
/// GELU's exact derivative, with `Phi` and `phi` the standard normal distribution and
/// density.
struct Backward<'a> {
    dx: &'a mut [f32],
    x: &'a [f32],
    dy: &'a [f32],
    half: usize,
}

impl pulp::WithSimd for Backward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self { dx, x, dy, half } = self;
        let rows = dx
            .chunks_mut(2 * half)
            .zip(x.chunks(2 * half))
            .zip(dy.chunks(half));
        for ((dx, x), dy) in rows {
            let (d_hidden, d_gate) = dx.split_at_mut(half);
            let (hidden, gate) = x.split_at(half);
            let values = d_hidden.iter_mut().zip(d_gate).zip(hidden).zip(gate);
            for ((((dh, dg), &h), &g), &d) in values.zip(dy) {
                let cdf = normal_cdf(g);
                *dh = d * g * cdf;
                *dg = d * h * (cdf + g * FRAC_1_SQRT_2PI * exp(-0.5 * g * g));
            }
        }
    }
}

/// `Phi(g) = (1 + erf(g / sqrt 2)) / 2`, so that `gelu(g) = g * Phi(g)` (diffusers' GEGLU uses
/// the erf GELU), with [`erf`]'s polynomial, as PyTorch's vectorised CPU GELU.
#[inline(always)]
fn normal_cdf(g: f32) -> f32 {
    0.5 * (1.0 + erf(g * FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{activation, DType, FloatDType, Tensor};
    use proptest::prelude::*;

    use pulp::WithSimd;

    use super::{fused, vectorized, Backward, Forward};
    use crate::flex::testing::{max_rel_err, normal, AB};
    use crate::GegluUnfused;

    /// Output and x's gradient of `sum(out * w)` for x `[rows, 2 half]`, through the loops or,
    /// as the reference, through burn's ops in f64 (two halves, Flex's exact GELU and its
    /// exact derivative, a product: the plain path of `cidm-diffusion`'s GEGLU).
    fn run(rows: usize, half: usize, seed: u64, loops: bool) -> Vec<Tensor<Flex, 2>> {
        let x = normal([rows, 2 * half], seed, 0.0).mul_scalar(2.0);
        let x = Tensor::<AB, 2>::from_inner(x.inner()).require_grad();
        let out = if loops {
            fused(x.clone()).expect("f32 on Autodiff<Flex>")
        } else {
            let wide = x.clone().cast(FloatDType::F64);
            let hidden = wide.clone().narrow(1, 0, half);
            let gate = wide.narrow(1, half, half);
            (hidden * activation::gelu(gate)).cast(FloatDType::F32)
        };
        let w = normal([rows, half], seed + 1, 0.0).detach();
        let grads = (out.clone() * w).sum().backward();
        vec![out.inner(), x.grad(&grads).expect("x is tracked")]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The loops' output and gradient equal the composed ops' in f64, for inputs of
        /// standard deviation 2 (GELU's curved part and both tails): to f32 rounding
        /// (libm's `erff` is within an ulp or two), 1e-5 of the largest value.
        #[test]
        fn output_and_gradient_equal_the_composed_ops(
            rows in 1usize..40,
            half in 1usize..40,
            seed in 0u64..1000,
        ) {
            let got = run(rows, half, seed, true);
            let want = run(rows, half, seed, false);
            for (name, (a, b)) in ["out", "dx"].iter().zip(got.into_iter().zip(want)) {
                let err = max_rel_err(a, b);
                prop_assert!(err < 1e-5, "{name}: {err}");
            }
        }
    }

    /// Both passes compiled for the CPU's widest vectors (`vectorized`) give the same bits as
    /// compiled for baseline x86-64 (pulp's scalar path): rows of 2 x 21 values (a remainder
    /// past any vector width) from -6 to 6.
    #[test]
    fn wide_vectors_give_the_same_bits() {
        let half = 21;
        let x: Vec<f32> = (0..8 * 2 * half)
            .map(|i| ((i * 53) % 241) as f32 / 20.0 - 6.0)
            .collect();
        let dy: Vec<f32> = x.iter().map(|v| 0.5 - v / 7.0).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (mut wide, mut base) = (vec![0.0; 8 * half], vec![0.0; 8 * half]);
        vectorized(Forward {
            out: &mut wide,
            x: &x,
            half,
        });
        Forward {
            out: &mut base,
            x: &x,
            half,
        }
        .with_simd(pulp::Scalar);
        assert_eq!(bits(&wide), bits(&base));
        let (mut wide, mut base) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        vectorized(Backward {
            dx: &mut wide,
            x: &x,
            dy: &dy,
            half,
        });
        Backward {
            dx: &mut base,
            x: &x,
            dy: &dy,
            half,
        }
        .with_simd(pulp::Scalar);
        assert_eq!(bits(&wide), bits(&base));
    }

    /// More rows than one parallel task takes (16384 values each): the same agreement.
    #[test]
    fn many_tasks() {
        let got = run(50, 640, 9, true);
        let want = run(50, 640, 9, false);
        for (a, b) in got.into_iter().zip(want) {
            let err = max_rel_err(a, b);
            assert!(err < 1e-5, "{err}");
        }
    }

    /// Known values without autodiff: `h * gelu(g)` with `gelu(0) = 0`, `gelu(1) =
    /// Phi(1) = 0.841345`, `gelu(-1) = -Phi(-1) = -0.158655`; f16 is declined.
    #[test]
    fn known_values_and_half_precision() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::from_floats([[2.0, 3.0, -1.0, 0.0, 1.0, -1.0]], &device);
        let out = fused(x.clone()).expect("f32 on Flex");
        let want = Tensor::<Flex, 2>::from_floats([[0.0, 3.0 * 0.841_345, 0.158_655]], &device);
        assert!(max_rel_err(out, want) < 1e-6);
        assert_eq!(
            fused(x.cast(FloatDType::F16)).unwrap_err(),
            GegluUnfused::Device { dtype: DType::F16 }
        );
    }
}
