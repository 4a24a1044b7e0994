//! The layer norm over the last dimension on Flex: [`LayerNormOps`] as loops over rows, in
//! parallel over runs of rows.

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::{contiguous, dispatch, sum_f64, tensor, values, Declined, FlexKernel, Moments};
use crate::autodiff_node::NormGrads;
use crate::fused_ops::layer_norm::{self as node, LayerNormOps, LayerNormParams};
use crate::LayerNormUnfused;

/// Values of one parallel task: enough rows that a task is worth its scheduling.
const TASK_VALUES: usize = 1 << 14;

/// The fused norm on `B` if it is Flex or `Autodiff<Flex>`: x `[rows, dim]` (shapes checked
/// by the caller); `Backend` for any other backend, `Device` for another dtype than f32.
pub(crate) fn fused<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Result<Tensor<B, 2>, LayerNormUnfused> {
    let params = LayerNormParams::new(epsilon);
    let inputs = [
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    ];
    dispatch::<B, FlexLayerNorm, 3, 2>(inputs, params).map_err(|declined| match declined {
        Declined::Backend => LayerNormUnfused::Backend,
        Declined::DType(dtype) => LayerNormUnfused::Device { dtype },
    })
}

/// The layer norm as a [`FlexKernel`]: inputs `[x, gamma, beta]`.
struct FlexLayerNorm;

impl FlexKernel<3> for FlexLayerNorm {
    type Params = LayerNormParams;

    fn plain([x, gamma, beta]: [FlexTensor; 3], params: LayerNormParams) -> FlexTensor {
        Flex::layer_norm_forward(x, gamma, beta, params).0
    }

    fn autodiff(
        [x, gamma, beta]: [FloatTensor<Autodiff<Flex>>; 3],
        params: LayerNormParams,
    ) -> FloatTensor<Autodiff<Flex>> {
        node::forward::<Flex>(x, gamma, beta, params)
    }
}

impl LayerNormOps for Flex {
    fn layer_norm_forward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        params: LayerNormParams,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let shape = x.shape();
        let [x, gamma, beta] = [x, gamma, beta].map(|t| contiguous(&t));
        let (x, gamma, beta) = (values(&x), values(&gamma), values(&beta));
        let dim = gamma.len();
        let mut out = vec![0.0f32; x.len()];
        let rows = rows_per(dim);
        let stats: Vec<Vec<Moments>> = out
            .par_chunks_mut(rows * dim)
            .zip(x.par_chunks(rows * dim))
            .map(|(out, x)| {
                let rows = out.chunks_mut(dim).zip(x.chunks(dim));
                rows.map(|(out, x)| {
                    let moments = Moments::of(x, params.epsilon);
                    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
                        *o = moments.centre(v) * moments.rstd * g + b;
                    }
                    moments
                })
                .collect()
            })
            .collect();
        let stats: Vec<Moments> = stats.into_iter().flatten().collect();
        let (mean, rstd) = Moments::tensors(stats, &[shape[0]]);
        (tensor(out, shape), mean, rstd)
    }

    /// With `xhat = (x - mean) * rstd` and `g = grad_out * gamma`, per row
    /// `dx = rstd * (g - mean(g) - xhat * mean(g xhat))`; over all rows
    /// `dgamma = sum(grad_out xhat)` and `dbeta = sum(grad_out)`.
    fn layer_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        rstd: FlexTensor,
        grad_out: FlexTensor,
        affine: bool,
    ) -> NormGrads<FlexTensor> {
        let shape = x.shape();
        let [x, gamma, mean, rstd, grad_out] =
            [x, gamma, mean, rstd, grad_out].map(|t| contiguous(&t));
        let (x, gamma, grad_out) = (values(&x), values(&gamma), values(&grad_out));
        let (mean, rstd) = (values(&mean), values(&rstd));
        let dim = gamma.len();
        let mut dx = vec![0.0f32; x.len()];
        let task_rows = rows_per(dim);
        let columns = dx
            .par_chunks_mut(task_rows * dim)
            .zip(x.par_chunks(task_rows * dim))
            .zip(grad_out.par_chunks(task_rows * dim))
            .enumerate()
            .map(|(task, ((dx, x), grad_out))| {
                let mut sums = vec![[0.0f64; 2]; if affine { dim } else { 0 }];
                let rows = dx
                    .chunks_mut(dim)
                    .zip(x.chunks(dim))
                    .zip(grad_out.chunks(dim));
                for (row, ((dx, x), dy)) in (task * task_rows..).zip(rows) {
                    let moments = Moments::read(mean, rstd, row);
                    let rstd = moments.rstd;
                    let n = dim as f64;
                    let m1 = (sum_f64(dim, |j| dy[j] * gamma[j]) / n) as f32;
                    let m2 = (sum_f64(dim, |j| dy[j] * gamma[j] * moments.centre(x[j])) / n) as f32
                        * rstd;
                    for (((dx, &v), &d), &g) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
                        let xhat = moments.centre(v) * rstd;
                        *dx = rstd * (d * g - m1 - xhat * m2);
                    }
                    for (sum, (&v, &d)) in sums.iter_mut().zip(x.iter().zip(dy)) {
                        sum[0] += f64::from(d * moments.centre(v) * rstd);
                        sum[1] += f64::from(d);
                    }
                }
                sums
            })
            .reduce(Vec::new, add_columns);
        let affine = affine.then(|| {
            let [dgamma, dbeta] = [0, 1].map(|k| columns.iter().map(|s| s[k] as f32).collect());
            [tensor(dgamma, [dim]), tensor(dbeta, [dim])]
        });
        (tensor(dx, shape), affine)
    }
}

/// Rows of one parallel task for rows of `dim` values.
fn rows_per(dim: usize) -> usize {
    (TASK_VALUES / dim).max(1)
}

/// Two tasks' column sums added (an empty one is nothing yet).
fn add_columns(mut a: Vec<[f64; 2]>, b: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    if a.is_empty() {
        return b;
    }
    for (a, b) in a.iter_mut().zip(b) {
        a[0] += b[0];
        a[1] += b[1];
    }
    a
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{DType, FloatDType, Tensor};
    use proptest::prelude::*;

    use super::fused;
    use crate::flex::testing::{max_rel_err, normal, AB};
    use crate::LayerNormUnfused;

    const EPS: f64 = 1e-5;

    /// Output and the gradients of x, gamma and beta (those tracked) of `sum(out * w)` for x
    /// `[rows, dim]` (a transposed view when `strided`) around `offset` and weights around 1
    /// and 0 (tracked when `affine`), through the loops or, as the reference, through burn's
    /// composed ops in f64 (what `cidm-diffusion`'s plain norm computes, without its f32
    /// rounding).
    fn run(
        [rows, dim]: [usize; 2],
        offset: f32,
        strided: bool,
        affine: bool,
        seed: u64,
        loops: bool,
    ) -> Vec<Tensor<Flex, 2>> {
        let x = if strided {
            let t = normal([dim, rows], seed, offset).inner();
            Tensor::<AB, 2>::from_inner(t.transpose()).require_grad()
        } else {
            normal([rows, dim], seed, offset)
        };
        let weights = |seed, around: f32| {
            let t = Tensor::<AB, 1>::from_inner(normal([dim], seed, 0.0).inner() * 0.25 + around);
            if affine {
                t.require_grad()
            } else {
                t
            }
        };
        let (gamma, beta) = (weights(seed + 1, 1.0), weights(seed + 2, 0.0));
        let out = if loops {
            fused(x.clone(), gamma.clone(), beta.clone(), EPS).expect("f32 on Autodiff<Flex>")
        } else {
            let wide = x.clone().cast(FloatDType::F64);
            let centered = wide.clone() - wide.mean_dim(1);
            let var = centered.clone().square().mean_dim(1);
            let [g, b] = [&gamma, &beta].map(|t| t.clone().cast(FloatDType::F64).unsqueeze());
            (centered / (var + EPS).sqrt() * g + b).cast(FloatDType::F32)
        };
        let w = normal([rows, dim], seed + 3, 0.0).detach();
        let grads = (out.clone() * w).sum().backward();
        let mut results = vec![out.inner()];
        results.extend(x.grad(&grads));
        for weights in [&gamma, &beta] {
            results.extend(weights.grad(&grads).map(|g| g.unsqueeze::<2>()));
        }
        results
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The loops' output and gradients equal the composed ops' (in f64) for any shape, x
        /// contiguous or a transposed view, weights trained or frozen (then only x gets a
        /// gradient), inputs around 0 or 100 (rows of two close values too): to f32 rounding,
        /// 1e-5 of the largest value.
        #[test]
        fn output_and_gradients_equal_the_composed_ops(
            rows in 1usize..40,
            dim in 1usize..70,
            strided: bool,
            affine: bool,
            offset in prop::sample::select(vec![0.0f32, 100.0]),
            seed in 0u64..1000,
        ) {
            let got = run([rows, dim], offset, strided, affine, seed, true);
            let want = run([rows, dim], offset, strided, affine, seed, false);
            prop_assert_eq!(got.len(), if affine { 4 } else { 2 });
            prop_assert_eq!(got.len(), want.len());
            let names = ["out", "dx", "dgamma", "dbeta"];
            for (name, (a, b)) in names.iter().zip(got.into_iter().zip(want)) {
                let err = max_rel_err(a, b);
                prop_assert!(err < 1e-5, "{name}: {err}");
            }
        }
    }

    /// Rows of 2560 values and more rows than one parallel task takes (16384 values each),
    /// as at SD 1.5's widest norms: the same agreement.
    #[test]
    fn many_tasks_of_wide_rows() {
        let got = run([20, 2560], 0.0, false, true, 5, true);
        let want = run([20, 2560], 0.0, false, true, 5, false);
        for (a, b) in got.into_iter().zip(want) {
            let err = max_rel_err(a, b);
            assert!(err < 1e-5, "{err}");
        }
    }

    /// Without autodiff the loops run too; f16 on Flex is declined for the plain norm.
    #[test]
    fn inference_runs_and_half_precision_is_declined() {
        let x = normal([3, 8], 1, 0.0).inner();
        let ones = Tensor::<Flex, 1>::ones([8], &Default::default());
        let out = fused(x, ones.clone(), ones.zeros_like(), EPS).expect("f32 on Flex");
        let mean: f32 = out.clone().sum_dim(1).abs().max().into_scalar();
        let var: f32 = out.square().mean_dim(1).max().into_scalar();
        assert!(mean < 1e-5, "rows are centred: {mean}");
        assert!((var - 1.0).abs() < 1e-3, "and of unit variance: {var}");
        let half = |t: Tensor<Flex, 1>| t.cast(FloatDType::F16);
        let x = normal([3, 8], 1, 0.0).inner().cast(FloatDType::F16);
        assert_eq!(
            fused(x, half(ones.clone()), half(ones), EPS).unwrap_err(),
            LayerNormUnfused::Device { dtype: DType::F16 }
        );
    }
}
