//! 2-D convolution on Flex (groups of one): the products of im2col tiles with the weight, on
//! rayon's pool, forward and, as one node of `Autodiff<Flex>`, backward.
//!
//! Why our own: Flex's convolution re-lays out the whole weight (`[out, kh, kw, in]`) and the
//! input (channels-last) on one thread on every call, then writes the product's results back
//! one value at a time. At SD 1.5's 1280 channels on 8x8 latents the weight's re-layout
//! (15M values) costs more than the product itself. Here the patches' rows are gathered in
//! the weight's own order (`in, kh, kw`), so the weight is multiplied as it lies, and each
//! tile's product is written by gemm straight into the output's rows; the input's gradient
//! scatters the product of the weight's transpose with the output's gradient back over the
//! patches (col2im), and the weight's gradient is the output's gradient times the gathered
//! patches: the same tiles each way.

use std::cell::Cell;
use std::ops::Range;

use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, ops::FloatTensor, Shape, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::matmul::{product, View, ViewMut};
use super::{
    contiguous, dispatch, register_with_optional_bias, sum_f64, tensor, values, with_optional_bias,
    Declined, FlexKernel,
};
use crate::autodiff_node::record_fused;
use crate::ConvUnfused;

/// Values of one tile of gathered patches (16 MiB): the tiles are whole rows of the output,
/// as many as fit, at least one.
const TILE_VALUES: usize = 1 << 22;

/// The convolution's settings, per axis `[height, width]` (checked by the caller: stride and
/// dilation at least 1, an output of at least one value each way); the padding before
/// (top, left) and after (bottom, right) the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvParams {
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) padding_end: [usize; 2],
    pub(crate) dilation: [usize; 2],
}

/// The convolution on `B` if it is Flex or `Autodiff<Flex>`: x `[batch, in, h, w]`, weight
/// `[out, in, kh, kw]`, bias `[out]` if any (shapes checked by the caller); `Backend` for
/// any other backend, `DType` for another dtype than f32.
pub(crate) fn fused<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    params: ConvParams,
) -> Result<Tensor<B, 4>, ConvUnfused> {
    let [x, weight] = [x, weight].map(Tensor::into_primitive);
    let result = match bias {
        Some(bias) => dispatch::<B, FlexConv, 3, 4>([x, weight, bias.into_primitive()], params),
        None => dispatch::<B, FlexConv, 2, 4>([x, weight], params),
    };
    result.map_err(|declined| match declined {
        Declined::Backend => ConvUnfused::Backend,
        Declined::DType(dtype) => ConvUnfused::DType { dtype },
    })
}

/// The convolution as a [`FlexKernel`]: inputs `[x, weight, bias]` (`N = 3`) or `[x,
/// weight]` (`N = 2`).
struct FlexConv;

impl<const N: usize> FlexKernel<N> for FlexConv {
    type Params = ConvParams;

    fn plain(inputs: [FlexTensor; N], params: ConvParams) -> FlexTensor {
        let (x, weight, bias) = with_optional_bias(inputs);
        forward(&x, &weight, bias.as_ref(), params, TILE_VALUES)
    }

    fn autodiff(
        inputs: [FloatTensor<Autodiff<Flex>>; N],
        params: ConvParams,
    ) -> FloatTensor<Autodiff<Flex>> {
        let (x, weight, bias) = with_optional_bias(inputs.each_ref());
        let out = forward(
            &x.primitive,
            &weight.primitive,
            bias.map(|bias| &bias.primitive),
            params,
            TILE_VALUES,
        );
        // x is kept only for a trained weight's gradient: with a frozen one (LoRA
        // training) the node would otherwise hold every convolution's input until its
        // backward.
        let weight_tracked = !weight.node.requirement.is_none();
        record_fused(ConvBackward, inputs, out, |inputs, _| {
            let (x, weight, _bias) = with_optional_bias(inputs);
            Saved {
                x_shape: x.shape(),
                x: weight_tracked.then_some(x),
                weight,
                params,
            }
        })
    }
}

/// What the backward needs: x's shape, x itself where the weight is trained (for its
/// gradient), and the weight (for x's).
#[derive(Debug, Clone)]
struct Saved {
    x_shape: Shape,
    x: Option<FlexTensor>,
    weight: FlexTensor,
    params: ConvParams,
}

#[derive(Debug)]
struct ConvBackward;

impl<const N: usize> Backward<Flex, N> for ConvBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        register_with_optional_bias(ops, grads, |saved, grad_out, tracked| {
            backward(&saved, &grad_out, tracked, TILE_VALUES)
        });
    }
}

thread_local! {
    /// The tiles' buffer, kept between calls: a fresh buffer of up to 32 MiB per call (two
    /// tiles in the backward) is thousands of page faults and the kernel zeroing each page,
    /// for every convolution of a step.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `work` on a buffer of `len` values (whatever an earlier call left in them): this thread's
/// scratch, grown to `len` if shorter, taken for the call and given back after, so that a
/// call made meanwhile on the same thread (a rayon job it runs while it waits) gets a buffer
/// of its own rather than this one.
fn with_scratch<T>(len: usize, work: impl FnOnce(&mut [f32]) -> T) -> T {
    let mut buffer = SCRATCH.take();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = work(&mut buffer[..len]);
    SCRATCH.set(buffer);
    result
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    c_in: usize,
    c_out: usize,
    input: [usize; 2],
    kernel: [usize; 2],
    output: [usize; 2],
    params: ConvParams,
    /// Output rows per tile.
    tile_rows: usize,
}

impl Geometry {
    /// The sizes for x's and the weight's shapes, in tiles of at most `tile_values` gathered
    /// values (at least one output row).
    fn new(x: &Shape, weight: &Shape, params: ConvParams, tile_values: usize) -> Self {
        let input = [x[2], x[3]];
        let kernel = [weight[2], weight[3]];
        let output = [0, 1].map(|axis| {
            let span = params.dilation[axis] * (kernel[axis] - 1) + 1;
            let padded = input[axis] + params.padding[axis] + params.padding_end[axis];
            (padded - span) / params.stride[axis] + 1
        });
        let patch = x[1] * kernel[0] * kernel[1];
        Self {
            batch: x[0],
            c_in: x[1],
            c_out: weight[0],
            input,
            kernel,
            output,
            params,
            tile_rows: (tile_values / (patch * output[1])).clamp(1, output[0]),
        }
    }

    /// Values of one tile of gathered patches (none when pointwise).
    fn tile_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.patch() * self.tile_rows * self.output[1]
        }
    }

    /// Values of one patch: a row of the weight, a column of the gathered tile.
    fn patch(&self) -> usize {
        self.c_in * self.kernel[0] * self.kernel[1]
    }

    fn in_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn out_plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// A 1x1 kernel at stride 1 without padding: the input is its own patches.
    fn pointwise(&self) -> bool {
        let ConvParams {
            stride,
            padding,
            padding_end,
            ..
        } = self.params;
        self.kernel == [1, 1] && stride == [1, 1] && padding == [0, 0] && padding_end == [0, 0]
    }

    /// The ranges of output rows of each tile (all rows at once when pointwise).
    fn tiles(&self) -> impl Iterator<Item = Range<usize>> {
        let (rows, step) = (self.output[0], self.tile_rows);
        let step = if self.pointwise() { rows } else { step };
        (0..rows)
            .step_by(step)
            .map(move |start| start..(start + step).min(rows))
    }

    /// The output positions `o` along `axis` whose input position `o * stride + offset` lies
    /// inside the input, for the kernel tap at `offset = tap * dilation - padding`.
    fn inside(&self, axis: usize, tap: usize) -> (Range<usize>, isize) {
        let offset =
            (tap * self.params.dilation[axis]) as isize - self.params.padding[axis] as isize;
        let (stride, len) = (self.params.stride[axis] as isize, self.input[axis] as isize);
        let start = if offset >= 0 {
            0
        } else {
            (-offset + stride - 1) / stride
        };
        let end = if len <= offset {
            0
        } else {
            (len - offset + stride - 1) / stride
        };
        let out = self.output[axis] as isize;
        let (start, end) = (start.min(out), end.min(out));
        (start as usize..end.max(start) as usize, offset)
    }

    /// The patches of one sample's output rows `rows` into `tile` (`[patch, rows * out_w]`):
    /// row `(c, ky, kx)` holds input channel `c` at tap `(ky, kx)` for every output position,
    /// 0 in the padding.
    fn gather(&self, x: &[f32], rows: Range<usize>, tile: &mut [f32]) {
        let width = self.output[1];
        let taps = self.kernel[0] * self.kernel[1];
        tile.par_chunks_mut(rows.len() * width)
            .enumerate()
            .for_each(|(row, tile)| {
                let (c, tap) = (row / taps, row % taps);
                let plane = &x[c * self.in_plane()..(c + 1) * self.in_plane()];
                let (ys, y_offset) = self.inside(0, tap / self.kernel[1]);
                let (xs, x_offset) = self.inside(1, tap % self.kernel[1]);
                let stride = self.params.stride[1];
                for (oy, out) in rows.clone().zip(tile.chunks_mut(width)) {
                    if !ys.contains(&oy) || xs.is_empty() {
                        out.fill(0.0);
                        continue;
                    }
                    let y = (oy * self.params.stride[0]) as isize + y_offset;
                    let line = &plane[y as usize * self.input[1]..][..self.input[1]];
                    out[..xs.start].fill(0.0);
                    out[xs.end..].fill(0.0);
                    let first = (xs.start * stride) as isize + x_offset;
                    let source = line[first as usize..].iter().step_by(stride);
                    for (o, &v) in out[xs.clone()].iter_mut().zip(source) {
                        *o = v;
                    }
                }
            });
    }

    /// The inverse of [`Geometry::gather`]'s copy: adds each value of `tile` to the input
    /// position it was gathered from, in one sample's `dx`, parallel over channels.
    fn scatter_add(&self, tile: &[f32], rows: Range<usize>, dx: &mut [f32]) {
        let width = self.output[1];
        let taps = self.kernel[0] * self.kernel[1];
        let tile_len = rows.len() * width;
        dx.par_chunks_mut(self.in_plane())
            .zip(tile.par_chunks(taps * tile_len))
            .for_each(|(plane, tile)| {
                for (tap, tile) in tile.chunks(tile_len).enumerate() {
                    let (ys, y_offset) = self.inside(0, tap / self.kernel[1]);
                    let (xs, x_offset) = self.inside(1, tap % self.kernel[1]);
                    let stride = self.params.stride[1];
                    for (oy, values) in rows.clone().zip(tile.chunks(width)) {
                        if !ys.contains(&oy) || xs.is_empty() {
                            continue;
                        }
                        let y = (oy * self.params.stride[0]) as isize + y_offset;
                        let line = &mut plane[y as usize * self.input[1]..][..self.input[1]];
                        let first = (xs.start * stride) as isize + x_offset;
                        let target = line[first as usize..].iter_mut().step_by(stride);
                        for (t, &v) in target.zip(&values[xs.clone()]) {
                            *t += v;
                        }
                    }
                }
            });
    }
}

/// `out = conv(x, weight) + bias`, sample by sample and tile by tile: the bias written
/// first, then each tile's product added into its rows of the output; without a bias each
/// tile's product written there directly.
fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    params: ConvParams,
    tile_values: usize,
) -> FlexTensor {
    let g = Geometry::new(&x.shape(), &weight.shape(), params, tile_values);
    let [x, weight] = [x, weight].map(contiguous);
    let bias = bias.map(contiguous);
    let (x, weight, bias) = (values(&x), values(&weight), bias.as_ref().map(values));
    let (patch, plane) = (g.patch(), g.out_plane());
    let mut out = vec![0.0f32; g.batch * g.c_out * plane];
    with_scratch(g.tile_len(), |tile| {
        let samples = x
            .chunks(g.c_in * g.in_plane())
            .zip(out.chunks_mut(g.c_out * plane));
        for (x, out) in samples {
            if let Some(bias) = bias {
                out.par_chunks_mut(plane)
                    .zip(bias)
                    .for_each(|(channel, &b)| channel.fill(b));
            }
            for rows in g.tiles() {
                let (start, len) = (rows.start * g.output[1], rows.len() * g.output[1]);
                let patches = if g.pointwise() {
                    View::strided(&x[start..], patch, len, g.in_plane())
                } else {
                    g.gather(x, rows, &mut tile[..patch * len]);
                    View::rows(&tile[..patch * len], patch, len)
                };
                let dst = ViewMut::rows(&mut out[start..], g.c_out, len, plane);
                product(
                    dst,
                    View::rows(weight, g.c_out, patch),
                    patches,
                    1.0,
                    bias.is_some(),
                    true,
                );
            }
        }
    });
    tensor(out, [g.batch, g.c_out, g.output[0], g.output[1]])
}

/// The gradients `[x, weight, bias]` of the convolution from the output's gradient, each
/// where `tracked` asks for it: x's by the weight's transpose times the output's gradient,
/// scattered over the patches; the weight's by the output's gradient times the gathered
/// patches, summed over samples and tiles; the bias's by summing the output's gradient.
fn backward(
    saved: &Saved,
    grad_out: &FlexTensor,
    [x_tracked, weight_tracked, bias_tracked]: [bool; 3],
    tile_values: usize,
) -> [Option<FlexTensor>; 3] {
    let g = Geometry::new(
        &saved.x_shape,
        &saved.weight.shape(),
        saved.params,
        tile_values,
    );
    let [weight, grad_out] = [&saved.weight, grad_out].map(contiguous);
    let (weight, dy) = (values(&weight), values(&grad_out));
    // x was saved only if the weight was tracked then, which is when it is now.
    let x = saved.x.as_ref().filter(|_| weight_tracked).map(contiguous);
    let x = x.as_ref().map(values);
    let (patch, plane, in_len) = (g.patch(), g.out_plane(), g.c_in * g.in_plane());
    let mut dx = x_tracked.then(|| vec![0.0f32; g.batch * in_len]);
    let mut dw = x.map(|_| vec![0.0f32; weight.len()]);
    let weight_t = View::transposed(weight, patch, g.c_out);
    // One tile for x's gradient, one for the patches of the weight's.
    let tiles = usize::from(x_tracked) + usize::from(dw.is_some());
    with_scratch(tiles * g.tile_len(), |scratch| {
        let (d_tile, x_tile) = scratch.split_at_mut(if x_tracked { g.tile_len() } else { 0 });
        for sample in 0..g.batch {
            let dy = &dy[sample * g.c_out * plane..][..g.c_out * plane];
            for rows in g.tiles() {
                let (start, len) = (rows.start * g.output[1], rows.len() * g.output[1]);
                let dy_rows = View::strided(&dy[start..], g.c_out, len, plane);
                if let Some(dx) = &mut dx {
                    let dx = &mut dx[sample * in_len..][..in_len];
                    if g.pointwise() {
                        let dst = ViewMut::rows(&mut dx[start..], patch, len, g.in_plane());
                        product(dst, weight_t, dy_rows, 1.0, false, true);
                    } else {
                        let d_tile = &mut d_tile[..patch * len];
                        let dst = ViewMut::rows(d_tile, patch, len, len);
                        product(dst, weight_t, dy_rows, 1.0, false, true);
                        g.scatter_add(d_tile, rows.clone(), dx);
                    }
                }
                if let (Some(dw), Some(x)) = (&mut dw, x) {
                    let x = &x[sample * in_len..][..in_len];
                    let patches = if g.pointwise() {
                        View::transposed(&x[start..], len, patch)
                    } else {
                        g.gather(x, rows.clone(), &mut x_tile[..patch * len]);
                        View::transposed(&x_tile[..patch * len], len, patch)
                    };
                    let dst = ViewMut::rows(dw, g.c_out, patch, patch);
                    let first = sample == 0 && rows.start == 0;
                    product(dst, dy_rows, patches, 1.0, !first, true);
                }
            }
        }
    });
    let db = bias_tracked.then(|| {
        let sums: Vec<f32> = (0..g.c_out)
            .into_par_iter()
            .map(|c| {
                let per_sample = (0..g.batch).map(|b| {
                    let channel = &dy[(b * g.c_out + c) * plane..][..plane];
                    sum_f64(plane, |i| channel[i])
                });
                per_sample.sum::<f64>() as f32
            })
            .collect();
        tensor(sums, [g.c_out])
    });
    [
        dx.map(|dx| tensor(dx, saved.x_shape.clone())),
        dw.map(|dw| tensor(dw, saved.weight.shape())),
        db,
    ]
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::{ConvOptions, PadMode};
    use burn::tensor::{DType, FloatDType, Tensor, TensorMetadata};
    use proptest::prelude::*;

    use super::{backward, forward, fused, ConvParams, Saved};
    use crate::flex::testing::{max_rel_err, normal};
    use crate::ConvUnfused;

    /// One convolution's sizes: `[batch, in, out, h, w, kh, kw]`.
    type Sizes = [usize; 7];

    /// Output and the gradients of x, the weight and the bias of `sum(out * w)`, through the
    /// loops or, as the reference, through burn's convolution in f64 (Flex's, differentiated
    /// by burn's autodiff); with a bias where `biased`, the weight and the bias frozen
    /// unless `train`.
    fn run(
        sizes: Sizes,
        params: ConvParams,
        [biased, train]: [bool; 2],
        seed: u64,
        loops: bool,
    ) -> Vec<Tensor<Flex, 4>> {
        let [batch, c_in, c_out, h, w, kh, kw] = sizes;
        let x = normal([batch, c_in, h, w], seed, 0.0);
        let weight = normal([c_out, c_in, kh, kw], seed + 1, 0.0);
        let bias = biased.then(|| normal::<1>([c_out], seed + 2, 0.0));
        // Frozen: leaves without `require_grad` (burn's `detach` keeps it).
        let (weight, bias) = if train {
            (weight, bias)
        } else {
            (
                Tensor::from_inner(weight.inner()),
                bias.map(|bias| Tensor::from_inner(bias.inner())),
            )
        };
        let out = if loops {
            fused(x.clone(), weight.clone(), bias.clone(), params).expect("f32 on Autodiff<Flex>")
        } else {
            // Padded in f32 (exact: zeros) before the cast: burn's own asymmetric padding
            // pads an f64 tensor with f32 zeros, which Flex refuses.
            let ([top, left], [bottom, right]) = (params.padding, params.padding_end);
            let padded = x
                .clone()
                .pad([(top, bottom), (left, right)], PadMode::Constant(0.0));
            let [x, weight] = [&padded, &weight].map(|t| t.clone().cast(FloatDType::F64));
            let bias = bias.clone().map(|bias| bias.cast(FloatDType::F64));
            let options = ConvOptions::new(params.stride, [0, 0], params.dilation, 1);
            conv2d(x, weight, bias, options).cast(FloatDType::F32)
        };
        let w = normal(out.dims(), seed + 3, 0.0).detach();
        let grads = (out.clone() * w).sum().backward();
        let mut results = vec![out.inner()];
        results.extend(x.grad(&grads));
        results.extend(weight.grad(&grads));
        let bias_grad = bias.and_then(|bias| bias.grad(&grads));
        results.extend(bias_grad.map(|g| g.reshape([1, 1, 1, c_out])));
        results
    }

    /// Sizes and settings whose output has at least one value each way.
    fn valid(sizes: Sizes, params: ConvParams) -> bool {
        let [.., h, w, kh, kw] = sizes;
        [(h, kh), (w, kw)]
            .into_iter()
            .enumerate()
            .all(|(axis, (len, k))| {
                let padded = len + params.padding[axis] + params.padding_end[axis];
                padded > params.dilation[axis] * (k - 1)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The loops' output and gradients equal burn's convolution in f64 for any sizes,
        /// strides, paddings (the same or different before and after) and dilations (1x1
        /// kernels without padding take the pointwise path), with or without a bias, weights
        /// trained or frozen (then only x gets a gradient): to f32 rounding, 1e-5 of the
        /// largest value.
        #[test]
        fn output_and_gradients_equal_burns_convolution(
            sizes in (1usize..3, 1usize..6, 1usize..6, 1usize..10, 1usize..10, 1usize..4, 1usize..4)
                .prop_map(|(b, i, o, h, w, kh, kw)| [b, i, o, h, w, kh, kw]),
            stride in (1usize..3, 1usize..3),
            padding in (0usize..3, 0usize..3),
            padding_end in (0usize..3, 0usize..3),
            dilation in (1usize..3, 1usize..3),
            biased: bool,
            train: bool,
            seed in 0u64..1000,
        ) {
            let params = ConvParams {
                stride: [stride.0, stride.1],
                padding: [padding.0, padding.1],
                padding_end: [padding_end.0, padding_end.1],
                dilation: [dilation.0, dilation.1],
            };
            prop_assume!(valid(sizes, params));
            let got = run(sizes, params, [biased, train], seed, true);
            let want = run(sizes, params, [biased, train], seed, false);
            let trained = 1 + usize::from(biased);
            prop_assert_eq!(got.len(), 2 + usize::from(train) * trained, "ours");
            prop_assert_eq!(want.len(), got.len(), "burn's");
            for (name, (a, b)) in ["out", "dx", "dw", "db"].iter().zip(got.into_iter().zip(want)) {
                let err = max_rel_err(a, b);
                prop_assert!(err < 1e-5, "{name}: {err}");
            }
        }
    }

    /// Tiles of one output row (gathered patches that overlap their neighbours' inputs, a
    /// scatter that adds across tiles) give what one tile gives, forward and every gradient,
    /// at stride 1 and 2, with a bias (added into by every tile) and without (written by
    /// each).
    #[test]
    fn row_tiles_equal_one_tile() {
        for (stride, biased) in [(1, true), (2, true), (1, false), (2, false)] {
            let params = ConvParams {
                stride: [stride; 2],
                padding: [1; 2],
                padding_end: [1; 2],
                dilation: [1; 2],
            };
            let x = normal([2, 3, 9, 7], 4, 0.0)
                .inner()
                .into_primitive()
                .tensor();
            let weight = normal([4, 3, 3, 3], 5, 0.0)
                .inner()
                .into_primitive()
                .tensor();
            let bias = normal([4], 6, 0.0).inner().into_primitive().tensor();
            let bias = biased.then_some(&bias);
            let run = |tile_values| {
                let out = forward(&x, &weight, bias, params, tile_values);
                let saved = Saved {
                    x_shape: x.shape(),
                    x: Some(x.clone()),
                    weight: weight.clone(),
                    params,
                };
                let grads = backward(&saved, &out, [true, true, biased], tile_values);
                let mut results = vec![out];
                results.extend(grads.into_iter().flatten());
                results
            };
            let (rows, whole) = (run(1), run(usize::MAX));
            for (a, b) in rows.into_iter().zip(whole) {
                let flat = |t| {
                    Tensor::<Flex, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(t))
                        .reshape([1, 1, 1, -1])
                };
                let err = max_rel_err(flat(a), flat(b));
                assert!(err < 1e-6, "stride {stride}, bias {biased}: {err}");
            }
        }
    }

    /// Known values without autodiff: a 3x3 kernel of ones over a 3x3 input of ones with
    /// padding 1 sums each position's neighbourhood inside the input (4 at the corners, 6 at
    /// the edges, 9 in the middle), plus the bias if any; at stride 2 only the corners remain.
    /// f16 is declined.
    #[test]
    fn known_values_and_half_precision() {
        let device = Default::default();
        let ones = Tensor::<Flex, 4>::ones([1, 1, 3, 3], &device);
        let bias = Tensor::<Flex, 1>::from_floats([0.5], &device);
        let params = |stride| ConvParams {
            stride: [stride; 2],
            padding: [1; 2],
            padding_end: [1; 2],
            dilation: [1; 2],
        };
        let conv = |bias: Option<&Tensor<Flex, 1>>, stride| {
            let (x, weight) = (ones.clone(), ones.clone());
            fused(x, weight, bias.cloned(), params(stride)).expect("f32 on Flex")
        };
        let want = [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]];
        let want = Tensor::<Flex, 4>::from_floats([[want]], &device);
        assert!(max_rel_err(conv(None, 1), want.clone()) < 1e-7);
        assert!(max_rel_err(conv(Some(&bias), 1), want + 0.5) < 1e-7);
        let want = Tensor::from_floats([[[[4.5, 4.5], [4.5, 4.5]]]], &device);
        assert!(max_rel_err(conv(Some(&bias), 2), want) < 1e-7);
        let half = ones.cast(FloatDType::F16);
        let half_bias = Some(bias.cast(FloatDType::F16));
        assert_eq!(
            fused(half.clone(), half, half_bias, params(1)).unwrap_err(),
            ConvUnfused::DType { dtype: DType::F16 }
        );
    }
}
