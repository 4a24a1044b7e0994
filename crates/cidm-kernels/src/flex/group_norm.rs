//! The group norm (and SiLU after it) on Flex: [`GroupNormOps`] as loops over each (sample,
//! group) block, which is contiguous in x's NCHW layout; the blocks run in parallel.

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::{
    contiguous, dispatch, sigmoid, sum_f64, tensor, values, vectorized, Declined, FlexKernel,
    Moments,
};
use crate::autodiff_node::NormGrads;
use crate::fused_ops::group_norm::{self as node, GroupNormOps, GroupNormParams};
use crate::{GroupNormOptions, GroupNormUnfused};

/// The fused norm on `B` if it is Flex or `Autodiff<Flex>` (shapes checked by the caller):
/// `Backend` for any other backend, `Device` for another dtype than f32.
pub(crate) fn fused<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    options: GroupNormOptions,
) -> Result<Tensor<B, D>, GroupNormUnfused> {
    let params = GroupNormParams::from(options);
    let inputs = [
        x.clone().into_primitive(),
        gamma.clone().into_primitive(),
        beta.clone().into_primitive(),
    ];
    dispatch::<B, FlexGroupNorm, 3, D>(inputs, params).map_err(|declined| match declined {
        Declined::Backend => GroupNormUnfused::Backend,
        Declined::DType(dtype) => GroupNormUnfused::Device { dtype },
    })
}

/// The group norm as a [`FlexKernel`]: inputs `[x, gamma, beta]`.
struct FlexGroupNorm;

impl FlexKernel<3> for FlexGroupNorm {
    type Params = GroupNormParams;

    fn plain([x, gamma, beta]: [FlexTensor; 3], params: GroupNormParams) -> FlexTensor {
        Flex::group_norm_forward(x, gamma, beta, params).0
    }

    fn autodiff(
        [x, gamma, beta]: [FloatTensor<Autodiff<Flex>>; 3],
        params: GroupNormParams,
    ) -> FloatTensor<Autodiff<Flex>> {
        node::forward::<Flex>(x, gamma, beta, params)
    }
}

impl GroupNormOps for Flex {
    fn group_norm_forward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        params: GroupNormParams,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let shape = x.shape();
        let [x, gamma, beta] = [x, gamma, beta].map(|t| contiguous(&t));
        let layout = Layout::of(&shape, params.groups);
        let (out, stats) = forward(values(&x), values(&gamma), values(&beta), layout, params);
        let (mean, rstd) = Moments::tensors(stats, &[layout.batch, layout.groups]);
        (tensor(out, shape), mean, rstd)
    }

    fn group_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        rstd: FlexTensor,
        grad_out: FlexTensor,
        params: GroupNormParams,
        affine: bool,
    ) -> NormGrads<FlexTensor> {
        let shape = x.shape();
        let [x, gamma, beta, mean, rstd, grad_out] =
            [x, gamma, beta, mean, rstd, grad_out].map(|t| contiguous(&t));
        let layout = Layout::of(&shape, params.groups);
        let inputs = Inputs {
            x: values(&x),
            gamma: values(&gamma),
            beta: values(&beta),
            mean: values(&mean),
            rstd: values(&rstd),
            grad_out: values(&grad_out),
        };
        let (dx, dgamma, dbeta) = backward(&inputs, layout, params.silu);
        let channels = [layout.channels];
        let affine = affine.then(|| [tensor(dgamma, channels), tensor(dbeta, channels)]);
        (tensor(dx, shape), affine)
    }
}

/// x's dimensions as the norm sees them.
#[derive(Debug, Clone, Copy)]
struct Layout {
    batch: usize,
    channels: usize,
    /// Values per sample and channel (the product of the dimensions after the second).
    spatial: usize,
    groups: usize,
}

impl Layout {
    fn of(dims: &[usize], groups: usize) -> Self {
        let [batch, channels, spatial] = crate::group_norm::layout(dims);
        Self {
            batch,
            channels,
            spatial,
            groups,
        }
    }

    fn per_group(&self) -> usize {
        self.channels / self.groups
    }

    /// Values of one (sample, group) block.
    fn block(&self) -> usize {
        self.per_group() * self.spatial
    }
}

/// The output and each block's statistics: the statistics, then the block's channels
/// normalised, scaled, shifted and, with `silu`, activated, in one pass per channel.
fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    layout: Layout,
    params: GroupNormParams,
) -> (Vec<f32>, Vec<Moments>) {
    let mut out = vec![0.0f32; x.len()];
    let stats = out
        .par_chunks_mut(layout.block())
        .zip(x.par_chunks(layout.block()))
        .enumerate()
        .map(|(block, (out, x))| {
            let first = (block % layout.groups) * layout.per_group();
            let (gamma, beta) = (&gamma[first..], &beta[first..]);
            vectorized(BlockForward {
                out,
                x,
                gamma,
                beta,
                spatial: layout.spatial,
                params,
            })
        })
        .collect();
    (out, stats)
}

/// One block of [`forward`], for [`vectorized`]: its statistics, then its channels
/// normalised, scaled (`gamma`, from the block's first channel), shifted (`beta`) and, with
/// `silu`, activated.
struct BlockForward<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    spatial: usize,
    params: GroupNormParams,
}

impl pulp::WithSimd for BlockForward<'_> {
    type Output = Moments;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Moments {
        let Self {
            out,
            x,
            gamma,
            beta,
            spatial,
            params,
        } = self;
        let moments = Moments::of(x, params.epsilon);
        let channels = out.chunks_mut(spatial).zip(x.chunks(spatial));
        for ((out, x), (&gamma, &beta)) in channels.zip(gamma.iter().zip(beta)) {
            let scale = moments.rstd * gamma;
            for (o, &v) in out.iter_mut().zip(x) {
                *o = moments.centre(v) * scale + beta;
            }
            if params.silu {
                for o in out.iter_mut() {
                    *o *= sigmoid(*o);
                }
            }
        }
        moments
    }
}

/// What the backward reads, all contiguous.
struct Inputs<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    mean: &'a [f32],
    rstd: &'a [f32],
    grad_out: &'a [f32],
}

/// `(dx, dgamma, dbeta)`. With `dz` the gradient of the affine output (`grad_out`, or with
/// `silu` `grad_out * s * (1 + y (1 - s))` for `s = sigmoid(y)`, y recomputed) and
/// `xhat = (x - mean) * rstd`: `dgamma_c = sum(dz xhat)`, `dbeta_c = sum(dz)` over the
/// channel's values of every sample, and within a block of n values
/// `dx = rstd * (gamma_c dz - mean(gamma dz) - xhat * mean(gamma dz xhat))`.
fn backward(inputs: &Inputs, layout: Layout, silu: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; inputs.x.len()];
    let block = layout.block();
    let sums: Vec<Vec<[f64; 2]>> = dx
        .par_chunks_mut(block)
        .zip(inputs.x.par_chunks(block))
        .zip(inputs.grad_out.par_chunks(block))
        .enumerate()
        .map(|(index, ((dx, x), grad_out))| {
            vectorized(BlockBackward {
                inputs,
                layout,
                silu,
                index,
                dx,
                x,
                grad_out,
            })
        })
        .collect();
    let mut dgamma = vec![0.0f64; layout.channels];
    let mut dbeta = vec![0.0f64; layout.channels];
    for (index, block_sums) in sums.iter().enumerate() {
        let first = (index % layout.groups) * layout.per_group();
        for (channel, [dz_xhat, dz]) in (first..).zip(block_sums) {
            dgamma[channel] += dz_xhat;
            dbeta[channel] += dz;
        }
    }
    let narrow = |sums: Vec<f64>| sums.into_iter().map(|s| s as f32).collect();
    (dx, narrow(dgamma), narrow(dbeta))
}

/// One block's part of [`backward`], for [`vectorized`]: writes its dx, returns
/// `[sum(dz xhat), sum(dz)]` per channel.
struct BlockBackward<'a> {
    inputs: &'a Inputs<'a>,
    layout: Layout,
    silu: bool,
    index: usize,
    dx: &'a mut [f32],
    x: &'a [f32],
    grad_out: &'a [f32],
}

impl pulp::WithSimd for BlockBackward<'_> {
    type Output = Vec<[f64; 2]>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<[f64; 2]> {
        let Self {
            inputs,
            layout,
            silu,
            index,
            dx,
            x,
            grad_out,
        } = self;
        let moments = Moments::read(inputs.mean, inputs.rstd, index);
        let rstd = moments.rstd;
        let first = (index % layout.groups) * layout.per_group();
        let spatial = layout.spatial;
        // dz into dx, and its sums per channel.
        let mut sums = Vec::with_capacity(layout.per_group());
        for (c, ((dz, x), grad_out)) in dx
            .chunks_mut(spatial)
            .zip(x.chunks(spatial))
            .zip(grad_out.chunks(spatial))
            .enumerate()
        {
            let channel = first + c;
            dz.copy_from_slice(grad_out);
            if silu {
                let (scale, shift) = (rstd * inputs.gamma[channel], inputs.beta[channel]);
                for (dz, &v) in dz.iter_mut().zip(x) {
                    let y = moments.centre(v) * scale + shift;
                    let s = sigmoid(y);
                    *dz *= s * (1.0 + y * (1.0 - s));
                }
            }
            let dz: &[f32] = dz;
            let dz_xhat = sum_f64(spatial, |i| dz[i] * moments.centre(x[i])) * f64::from(rstd);
            sums.push([dz_xhat, sum_f64(spatial, |i| dz[i])]);
        }
        let n = layout.block() as f64;
        let gamma_of = |c: usize| f64::from(inputs.gamma[first + c]);
        let m1 = (sums.iter().enumerate())
            .map(|(c, [_, dz])| gamma_of(c) * dz)
            .sum::<f64>()
            / n;
        let m2 = (sums.iter().enumerate())
            .map(|(c, [dz_xhat, _])| gamma_of(c) * dz_xhat)
            .sum::<f64>()
            / n;
        let (m1, m2) = (m1 as f32, m2 as f32);
        let channels = dx.chunks_mut(spatial).zip(x.chunks(spatial));
        for (channel, (dx, x)) in (first..).zip(channels) {
            let gamma = inputs.gamma[channel];
            for (dx, &v) in dx.iter_mut().zip(x) {
                let xhat = moments.centre(v) * rstd;
                *dx = rstd * (gamma * *dx - m1 - xhat * m2);
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{activation, DType, FloatDType, Tensor};
    use proptest::prelude::*;

    use super::fused;
    use crate::flex::testing::{max_rel_err, normal, AB};
    use crate::{GroupNormOptions, GroupNormUnfused};

    const EPS: f64 = 1e-5;

    /// burn's composed ops, as `cidm-diffusion`'s plain norm computes them (checked against
    /// diffusers there): the reference, run in f64 so that its own rounding (an f32 mean of
    /// values around 100 is off by 1e-5) does not count against the loops.
    fn composed(
        x: Tensor<AB, 4>,
        gamma: Tensor<AB, 1>,
        beta: Tensor<AB, 1>,
        groups: usize,
        silu: bool,
    ) -> Tensor<AB, 4> {
        let shape = x.shape();
        let [batch, channels, ..] = x.dims();
        let grouped = x.reshape([batch, groups, shape.num_elements() / (batch * groups)]);
        let centered = grouped.clone() - grouped.mean_dim(2);
        let var = centered.clone().square().mean_dim(2);
        let normed = (centered / (var + EPS).sqrt()).reshape(shape);
        let out = normed * gamma.reshape([1, channels, 1, 1]) + beta.reshape([1, channels, 1, 1]);
        if silu {
            activation::silu(out)
        } else {
            out
        }
    }

    /// One case's inputs: x `[batch, channels, h, w]` (laid out channels-last in memory when
    /// `strided`, as a permuted view), weights around 1 and 0, tracked when `affine`.
    struct Case {
        x: Tensor<AB, 4>,
        gamma: Tensor<AB, 1>,
        beta: Tensor<AB, 1>,
        weight: Tensor<AB, 4>,
        groups: usize,
        silu: bool,
    }

    impl Case {
        #[allow(clippy::too_many_arguments)]
        fn new(
            [batch, channels, h, w]: [usize; 4],
            groups: usize,
            silu: bool,
            offset: f32,
            strided: bool,
            affine: bool,
            seed: u64,
        ) -> Self {
            let x = if strided {
                let last = normal([batch, h, w, channels], seed, offset).inner();
                Tensor::from_inner(last.permute([0, 3, 1, 2])).require_grad()
            } else {
                normal([batch, channels, h, w], seed, offset)
            };
            let weights = |seed, around: f32| {
                let t = normal([channels], seed, 0.0).inner().mul_scalar(0.25) + around;
                let t = Tensor::from_inner(t);
                if affine {
                    t.require_grad()
                } else {
                    t
                }
            };
            Self {
                x,
                gamma: weights(seed + 1, 1.0),
                beta: weights(seed + 2, 0.0),
                weight: normal([batch, channels, h, w], seed + 3, 0.0).detach(),
                groups,
                silu,
            }
        }

        /// Output and the gradients of x, gamma and beta (those tracked) of `sum(out * w)`,
        /// through the loops or through the composed ops.
        fn run(&self, loops: bool) -> Vec<Tensor<burn::backend::Flex, 4>> {
            let (x, gamma, beta) = (self.x.clone(), self.gamma.clone(), self.beta.clone());
            let out = if loops {
                let options = GroupNormOptions {
                    groups: self.groups,
                    epsilon: EPS,
                    silu: self.silu,
                };
                fused(&x, &gamma, &beta, options).expect("f32 on Autodiff<Flex>")
            } else {
                let [gamma, beta] = [gamma, beta].map(|t| t.cast(FloatDType::F64));
                composed(x.cast(FloatDType::F64), gamma, beta, self.groups, self.silu)
                    .cast(FloatDType::F32)
            };
            let grads = (out.clone() * self.weight.clone()).sum().backward();
            let mut results = vec![out.inner()];
            results.extend(self.x.grad(&grads));
            for weights in [&self.gamma, &self.beta] {
                results.extend(weights.grad(&grads).map(|g| g.unsqueeze::<4>()));
            }
            results
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The loops' output and gradients equal those of burn's composed ops, for any shape,
        /// with and without SiLU, x contiguous or a channels-last view, weights trained or
        /// frozen (then only x gets a gradient), and inputs around 0 or around 100 (the
        /// mean is kept in two parts, so that even two close values around 100 are centred
        /// exactly): against the reference in f64, the loops' f32 arithmetic (with f64 sums)
        /// is off by rounding, under 1e-5 of the largest value.
        #[test]
        fn output_and_gradients_equal_the_composed_ops(
            batch in 1usize..3,
            groups in 1usize..4,
            per_group in 1usize..4,
            h in 1usize..9,
            w in 1usize..9,
            silu: bool,
            strided: bool,
            affine: bool,
            offset in prop::sample::select(vec![0.0f32, 100.0]),
            seed in 0u64..1000,
        ) {
            let shape = [batch, groups * per_group, h, w];
            let case = Case::new(shape, groups, silu, offset, strided, affine, seed);
            let (got, want) = (case.run(true), case.run(false));
            prop_assert_eq!(got.len(), if affine { 4 } else { 2 });
            prop_assert_eq!(got.len(), want.len());
            let names = ["out", "dx", "dgamma", "dbeta"];
            for (name, (a, b)) in names.iter().zip(got.into_iter().zip(want)) {
                let err = max_rel_err(a, b);
                prop_assert!(err < 1e-5, "{name}: {err}");
            }
        }
    }

    /// Without autodiff (inference) the loops give the composed ops' output too.
    #[test]
    fn inference_equals_the_composed_ops() {
        let case = Case::new([2, 6, 5, 7], 3, true, 0.0, false, true, 3);
        let options = GroupNormOptions {
            groups: 3,
            epsilon: EPS,
            silu: true,
        };
        let x = case.x.clone().inner();
        let [gamma, beta] = [&case.gamma, &case.beta].map(|t| t.clone().inner());
        let got = fused(&x, &gamma, &beta, options).expect("f32 on Flex");
        let want = case.run(false).remove(0);
        assert!(max_rel_err(got, want) < 1e-5);
    }

    /// f16 on Flex is declined (the loops are f32), for the plain norm to run.
    #[test]
    fn half_precision_is_declined() {
        let case = Case::new([1, 2, 2, 2], 1, false, 0.0, false, false, 1);
        let x = case.x.clone().inner();
        let [gamma, beta] = [&case.gamma, &case.beta].map(|t| t.clone().inner());
        let half = |t: Tensor<burn::backend::Flex, 1>| t.cast(FloatDType::F16);
        let options = GroupNormOptions {
            groups: 1,
            epsilon: EPS,
            silu: false,
        };
        let declined = fused(&x.cast(FloatDType::F16), &half(gamma), &half(beta), options);
        assert_eq!(
            declined.unwrap_err(),
            GroupNormUnfused::Device { dtype: DType::F16 }
        );
    }
}
