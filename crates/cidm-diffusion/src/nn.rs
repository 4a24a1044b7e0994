//! Building blocks shared by every diffusers module: layers built through a [`VarBuilder`]
//! under their diffusers names, the norms, and the attention every model calls.
//!
//! Half precision: burn 0.21 sums f16 tensors into an f16 result, so the sum of squares of one
//! SD 1.5 GroupNorm group (81920 elements of variance about 1) overflows 65504, and the raw
//! attention scores `QK^T` overflow before the softmax scale is applied. The norms therefore
//! compute their statistics, and the attention its scores and softmax, in f32 when the input
//! is f16 or bf16 (diffusers' `upcast_softmax`), and cast the result back. At f32 (and f64)
//! every cast is burn's same-dtype no-op, so the full-precision path is unchanged.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, PaddedConvOptions};
use burn::tensor::{DType, FloatDType, Tensor};

use crate::error::{Error, Result};
use crate::loading::{Init, VarBuilder};

/// A linear layer from `weight` `[out, in]` (PyTorch layout, stored transposed as burn wants
/// `[in, out]`) and, if `bias`, `bias` `[out]`.
pub fn linear<B: Backend>(
    vb: &VarBuilder<B>,
    d_in: usize,
    d_out: usize,
    bias: bool,
) -> Result<Linear<B>> {
    let weight = vb.matrix_transposed("weight", [d_out, d_in], Init::fan_in(d_in))?;
    let bias = if bias {
        Some(vb.param("bias", [d_out], Init::fan_in(d_in))?)
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias,
    })
}

/// `x W + b` over `x`'s last dimension (any leading dimensions), as one 2-D product: every
/// linear layer of the models runs through here rather than `Linear::forward`.
///
/// Why: burn's linear multiplies by the weight reshaped to `[1, in, out]`, and its backward by
/// the weight's transpose reshaped the same way, which on Flex copies the whole transpose on
/// every backward (about 3% of an SD 1.5 LoRA step on the CPU, a copy of every frozen
/// projection's weight). A 2-D product reads the weight and its transpose where they lie
/// both ways. On Flex in f32 the product is [`cidm_kernels::fused_linear`] (one product
/// added into an output that starts as the bias, one node under autodiff); elsewhere burn's
/// matmul (whose backward reads the transpose in place) and a broadcast add of the bias, as
/// many operations as burn's linear on every backend.
pub fn linear_forward<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let [d_in, d_out] = layer.weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let bias = layer.bias.as_ref().map(|bias| bias.val());
    let out = affine(x.reshape([rows, d_in]), layer.weight.val(), bias);
    dims[D - 1] = d_out;
    out.reshape(dims)
}

/// `x weight + bias` of a 2-D x, `weight` `[in, out]`: [`cidm_kernels::fused_linear`] where
/// it applies (Flex in f32), else burn's matmul and a broadcast add of the bias.
pub fn affine<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    cidm_kernels::fused_linear(&x, &weight, bias.as_ref()).unwrap_or_else(|_| {
        let out = x.matmul(weight);
        match bias {
            Some(bias) => out + bias.unsqueeze_dim(0),
            None => out,
        }
    })
}

/// A square-kernel 2D convolution with bias, `weight` `[out, in, k, k]`.
pub fn conv2d<B: Backend>(
    vb: &VarBuilder<B>,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d<B>> {
    let fan_in = c_in * kernel * kernel;
    Ok(Conv2d {
        weight: conv_weight(
            vb,
            "weight",
            [c_out, c_in, kernel, kernel],
            Init::fan_in(fan_in),
        )?,
        bias: Some(vb.param("bias", [c_out], Init::fan_in(fan_in))?),
        stride: [stride, stride],
        kernel_size: [kernel, kernel],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(padding, padding, padding, padding),
    })
}

/// `conv`'s forward: through [`cidm_kernels::fused_conv2d`] where it applies (Flex in f32, with
/// the `flex` feature: products of tiles of gathered patches on every core, where Flex's own
/// convolution re-lays out the weight on one thread on every call), else as
/// `Conv2d::forward` runs it (burn's convolution: the GPU backends, NdArray, f16).
pub fn conv_forward<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let Some(options) = conv_options(conv) else {
        return conv.forward(x);
    };
    let bias = conv.bias.as_ref().map(|bias| bias.val());
    cidm_kernels::fused_conv2d(&x, &conv.weight.val(), bias.as_ref(), &options)
        .unwrap_or_else(|_| conv.forward(x))
}

/// The options [`conv_forward`] gives `cidm_kernels::fused_conv2d` for `conv`: its explicit
/// padding (top, left before; bottom, right after), stride, dilation and groups; `None` for
/// `Same` and `Valid` padding, which only burn's layer resolves.
pub fn conv_options<B: Backend>(conv: &Conv2d<B>) -> Option<PaddedConvOptions<2>> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return None;
    };
    Some(PaddedConvOptions::asymmetric(
        conv.stride,
        [top, left],
        [bottom, right],
        conv.dilation,
        conv.groups,
    ))
}

/// The convolution weight `name` of shape `shape` (`[out, in, kh, kw]`), as a parameter laid
/// out for the backend's convolutions: on burn-cubecl's backends (wgpu, CUDA) stored
/// channels-last (`[out, kh, kw, in]` in memory, seen as `[out, in, kh, kw]`, as the
/// transposed linear weights above are views), because their convolutions permute the weight
/// to channels-last and copy an NCHW-contiguous one on every call, forward and backward;
/// on the CPU backends NCHW, which theirs read directly. The values are the same either way.
pub fn conv_weight<B: Backend>(
    vb: &VarBuilder<B>,
    name: &str,
    shape: [usize; 4],
    init: Init,
) -> Result<Param<Tensor<B, 4>>> {
    let weight = vb.tensor(name, shape, init)?;
    if !cidm_kernels::on_cube_backend(&weight) {
        return Ok(Param::from_tensor(weight));
    }
    // burn has no "make contiguous" operation, but flattening the channels-last view is one:
    // burn's reshape cannot merge permuted axes, so it copies them, in that order, into a new
    // buffer on the device. Flattened to one dimension, whose allocation CUDA never pads (it
    // pads the rows of 2-D and larger tensors), the copy is dense.
    let [out, input, kh, kw] = shape;
    let stored = weight
        .permute([0, 2, 3, 1])
        .reshape([out * kh * kw * input])
        .reshape([out, kh, kw, input]);
    Ok(Param::from_tensor(stored.permute([0, 3, 1, 2])))
}

/// Flattens an image `[b, c, h, w]` to tokens `[b, h * w, c]`. The axes are permuted before
/// the spatial ones are merged: a channels-last image (a convolution's output on burn-cubecl's
/// backends) then becomes contiguous tokens without a copy, where merging first would copy
/// it (burn's reshape merges only contiguous axes) and the swapped view be copied again by
/// whatever needs contiguous rows. A channels-first image is copied once either way.
pub(crate) fn to_tokens<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([b, h * w, c])
}

/// Inverse of [`to_tokens`]: contiguous tokens become a channels-last view of the image,
/// without a copy.
pub(crate) fn to_image<B: Backend>(x: Tensor<B, 3>, h: usize, w: usize) -> Tensor<B, 4> {
    let [b, _, c] = x.dims();
    x.swap_dims(1, 2).reshape([b, c, h, w])
}

/// The dtype that statistics and softmax are computed in for a tensor of `dtype`: f32 for the
/// half types, whose range (f16: 65504) and precision (bf16: 8 bits) cannot hold a sum over
/// tens of thousands of elements; the tensor's own dtype otherwise, so that f32 costs nothing
/// and f64 loses nothing.
fn compute_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F16 | DType::BF16 => FloatDType::F32,
        other => FloatDType::from(other),
    }
}

/// `(x - mean) / sqrt(var + eps)` over the last dimension with the biased variance, computed in
/// the tensor's [`compute_dtype`]. The centred values are reused for the variance, so the f32
/// path does the same work as burn's own norms.
fn standardize<B: Backend>(x: Tensor<B, 3>, eps: f64) -> Tensor<B, 3> {
    let work = compute_dtype(x.dtype());
    let x = x.cast(work);
    let centered = x.clone() - x.mean_dim(2);
    let var = centered.clone().square().mean_dim(2);
    centered / (var + eps).sqrt()
}

/// An affine group norm, `weight` and `bias` `[channels]`.
pub fn group_norm<B: Backend>(
    vb: &VarBuilder<B>,
    groups: usize,
    channels: usize,
    eps: f64,
) -> Result<GroupNorm<B>> {
    Ok(GroupNorm {
        gamma: vb.param("weight", [channels], Init::Ones)?,
        beta: vb.param("bias", [channels], Init::Zeros)?,
        num_groups: groups,
        epsilon: eps,
    })
}

/// `torch.nn.GroupNorm(groups, channels, eps)` with affine weights, whose mean and variance are
/// computed in f32 under f16/bf16 (see the module docs) and whose output has the input's dtype.
/// It replaces `burn::nn::GroupNorm`, which sums in the input's dtype; the struct and field
/// names are burn's, so module paths (`norm1.gamma`) and exporters keyed on them are unchanged.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Scale `[channels]` (diffusers' `weight`).
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift `[channels]` (diffusers' `bias`).
    pub beta: Param<Tensor<B, 1>>,
    /// Groups the channels are split into; divides the channel count (the model configs
    /// check this before any norm is built).
    pub num_groups: usize,
    /// Added to the variance.
    pub epsilon: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// # Shapes
    /// - x: `[batch, channels, ...]` -> the same shape and dtype
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_activated(x, false)
    }

    /// `silu(self.forward(x))`, as every ResNet block of the UNet and the VAE applies after
    /// its norms: one fused pass on the GPU backends.
    ///
    /// # Shapes
    /// - x: `[batch, channels, ...]` -> the same shape and dtype
    pub fn forward_silu<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_activated(x, true)
    }

    /// The norm, then SiLU when `silu`. The fused group norm of `cidm-kernels` runs first:
    /// its CubeCL kernels on the GPU backends (features `wgpu`/`cuda`), its loops on Flex
    /// (feature `flex`, f32), statistics in f32 or better as here, a fused backward under
    /// autodiff; wherever it does not apply (NdArray, f16 on Flex, weights of another dtype
    /// than x, `CIDM_FUSED_GROUP_NORM=0`) the plain ops below run.
    fn forward_activated<const D: usize>(&self, x: Tensor<B, D>, silu: bool) -> Tensor<B, D> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        let options = cidm_kernels::GroupNormOptions {
            groups: self.num_groups,
            epsilon: self.epsilon,
            silu,
        };
        if let Ok(out) = cidm_kernels::fused_group_norm(&x, &gamma, &beta, options) {
            return out;
        }
        let dtype = FloatDType::from(x.dtype());
        let shape = x.shape();
        let (batch, channels) = (shape[0], shape[1]);
        let groups = self.num_groups;
        let per_group = shape
            .num_elements()
            .checked_div(batch * groups)
            .unwrap_or(0);
        let normed = standardize(x.reshape([batch, groups, per_group]), self.epsilon);
        let work = FloatDType::from(normed.dtype());
        let mut affine = [1; D];
        affine[1] = channels;
        let scale = gamma.cast(work).reshape(affine);
        let shift = beta.cast(work).reshape(affine);
        let out = normed.reshape(shape) * scale + shift;
        if silu { activation::silu(out) } else { out }.cast(dtype)
    }
}

/// Layer norm over the last dimension, as `torch.nn.LayerNorm(dim, eps)` with affine weights.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale `[dim]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[dim]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Builds `weight` and `bias` of size `dim`.
    pub fn new(vb: &VarBuilder<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.param("weight", [dim], Init::Ones)?,
            bias: vb.param("bias", [dim], Init::Zeros)?,
            eps,
        })
    }

    /// The statistics are computed in f32 under f16/bf16 (a width-1280 row of activations in
    /// the hundreds overflows an f16 sum of squares); the output has the input's dtype.
    ///
    /// The fused layer norm of `cidm-kernels` runs first: its CubeCL kernel on the GPU
    /// backends (features `wgpu`/`cuda`), its loops on Flex (feature `flex`, f32), one pass
    /// per row, statistics in f32 or better as here, a fused backward under autodiff;
    /// wherever it does not apply (NdArray, f16 on Flex, weights of another dtype than x,
    /// `CIDM_FUSED_LAYER_NORM=0`) the plain ops below run.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, dim]` -> `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (weight, bias) = (self.weight.val(), self.bias.val());
        if let Ok(out) = cidm_kernels::fused_layer_norm(&x, &weight, &bias, self.eps) {
            return out;
        }
        let dtype = FloatDType::from(x.dtype());
        let normed = standardize(x, self.eps);
        let work = FloatDType::from(normed.dtype());
        let scale = weight.cast(work).unsqueeze::<3>();
        let shift = bias.cast(work).unsqueeze::<3>();
        (normed * scale + shift).cast(dtype)
    }
}

/// GEGLU, the activation of diffusers' `FeedForward` (its `GEGLU` after the projection):
/// `hidden * gelu(gate)` from the two halves `[hidden, gate]` of x's last dimension, with the
/// exact (erf) GELU. The fused GEGLU of `cidm-kernels` runs first: its CubeCL kernel on the
/// GPU backends (features `wgpu`/`cuda`), its loops on Flex (feature `flex`, f32), one pass
/// each way, and in training GELU's exact derivative (burn's CubeCL backends differentiate
/// the exact GELU with the tanh approximation's derivative; Flex and NdArray are exact).
/// Wherever it does not apply (NdArray, f16 on Flex, `CIDM_FUSED_GEGLU=0`) the plain ops
/// run.
///
/// # Shapes
/// - x: `[..., 2 n]` -> `[..., n]`
///
/// # Errors
/// [`Error::InvalidInput`] when x's last dimension is odd or 0.
pub fn geglu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>> {
    let width = x.dims()[D - 1];
    if width == 0 || !width.is_multiple_of(2) {
        return Err(Error::InvalidInput(format!(
            "GEGLU needs a last dimension of two equal, non-empty halves, got {width}"
        )));
    }
    if let Ok(out) = cidm_kernels::fused_geglu(&x) {
        return Ok(out);
    }
    let half = width / 2;
    let hidden = x.clone().narrow(D - 1, 0, half);
    let gate = x.narrow(D - 1, half, half);
    Ok(hidden * activation::gelu(gate))
}

/// `softmax(Q K^T * scale) V` through burn's attention, with the scores and softmax in f32
/// when the inputs are f16/bf16: diffusers' `upcast_attention` + `upcast_softmax`. burn's
/// generic attention (the one autodiff and the GPU fallback use) forms `Q K^T` in the input
/// dtype before scaling, so queries and keys of norm ~256 (head width 64, entries ~32) give
/// inf scores and `inf - inf = NaN` rows in f16. At f32 the casts are no-ops. Every attention
/// of the UNet, the VAE and CLIP goes through here.
///
/// On the GPU backends (features `wgpu`/`cuda`) the fused flash-attention kernel of
/// `cidm-kernels` runs first: the same f32 scores and softmax without materialising them,
/// and a fused backward under autodiff. On Flex (feature `flex`, f32) its CPU attention runs,
/// parallel over heads and blocks of query rows (Flex's own runs on one thread), and under
/// autodiff as a node with a recomputing backward, which keeps no score matrix either.
/// Wherever neither applies (NdArray, f16 on Flex, causal masks, `CIDM_FUSED_ATTENTION=0`)
/// the inputs come back and burn's attention runs.
///
/// # Shapes
/// - q: `[batch, heads, tokens, head_dim]`, k and v: `[batch, heads, context, head_dim]`
/// - output: `[batch, heads, tokens, head_dim]`, in q's dtype
pub fn attention_upcast<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let (q, k, v) = match cidm_kernels::fused_attention(q, k, v, options) {
        Ok(out) => return out,
        Err(unfused) => (unfused.q, unfused.k, unfused.v),
    };
    let dtype = FloatDType::from(q.dtype());
    let work = compute_dtype(q.dtype());
    attention(
        q.cast(work),
        k.cast(work),
        v.cast(work),
        None,
        None,
        options,
    )
    .cast(dtype)
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorData};

    use super::{geglu, linear, linear_forward};
    use crate::error::Error;
    use crate::loading::VarBuilder;

    /// `linear_forward` is `Linear::forward` (burn's linear, which it replaces): the same
    /// output for 2-D and 3-D inputs with and without a bias, and the same gradients of the
    /// input, the weight and the bias, to f32 rounding (the same products in another order),
    /// through `cidm_kernels::fused_linear` where this build has it (Flex with `flex`).
    #[test]
    fn linear_forward_is_burns_linear() {
        type AB = burn::backend::Autodiff<Flex>;
        let device = Default::default();
        let vb = VarBuilder::<AB>::random(&device);
        for bias in [true, false] {
            let layer = linear(&vb.pp(format!("l{bias}")), 6, 5, bias).unwrap();
            let x3 = Tensor::<AB, 3>::random(
                [2, 3, 6],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            )
            .require_grad();
            let close = |a: Tensor<Flex, 1>, b: Tensor<Flex, 1>| {
                let err: f32 = (a - b).abs().max().into_scalar();
                assert!(err < 1e-5, "bias {bias}: {err}");
            };
            let fused_before = cidm_kernels::linear_dispatch_counts().fused;
            let ours = linear_forward(&layer, x3.clone());
            // With the `flex` feature this is the CPU linear layer (other tests may add
            // calls meanwhile: the counts are the process's).
            if cfg!(feature = "flex") {
                assert!(cidm_kernels::linear_dispatch_counts().fused > fused_before);
            }
            let burns = layer.forward(x3.clone());
            close(
                ours.clone().inner().flatten(0, 2),
                burns.clone().inner().flatten(0, 2),
            );
            let grads_ours = (ours * 1.5).sum().backward();
            let grads_burns = (burns * 1.5).sum().backward();
            let grad = |t: &Tensor<AB, 3>, g| t.grad(g).unwrap().flatten(0, 2);
            close(grad(&x3, &grads_ours), grad(&x3, &grads_burns));
            let weight = layer.weight.val();
            let w_grad = |g| weight.grad(g).unwrap().flatten(0, 1);
            close(w_grad(&grads_ours), w_grad(&grads_burns));
            if let Some(b) = &layer.bias {
                close(
                    b.val().grad(&grads_ours).unwrap(),
                    b.val().grad(&grads_burns).unwrap(),
                );
            }
            let x2 = x3.clone().flatten::<2>(0, 1);
            close(
                linear_forward(&layer, x2.clone()).inner().flatten(0, 1),
                layer.forward(x2).inner().flatten(0, 1),
            );
        }
    }

    /// `hidden * gelu(gate)` with the exact GELU, `g * Phi(g)`: gelu(1) = 0.8413447 and
    /// gelu(-1) = -0.1586553 (PyTorch's `F.gelu`), so `[2, -3 | 1, -1]` gives
    /// `[1.6826895, 0.4759658]`; each row of a batch on its own.
    #[test]
    fn geglu_of_known_values() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![2.0f32, -3.0, 1.0, -1.0, 0.0, 5.0, 7.0, 0.0], [2, 4]),
            &device,
        );
        let got = geglu(x).unwrap().into_data().to_vec::<f32>().unwrap();
        let want = [1.682_689_5, 0.475_965_8, 0.0, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} against {want:?}");
        }
    }

    /// An odd or empty last dimension has no two halves: a typed error, not a panic.
    #[test]
    fn geglu_needs_two_halves() {
        let device = Default::default();
        for width in [3, 0] {
            let x = Tensor::<Flex, 2>::zeros([2, width], &device);
            assert!(
                matches!(geglu(x), Err(Error::InvalidInput(_))),
                "width {width}"
            );
        }
    }
}
