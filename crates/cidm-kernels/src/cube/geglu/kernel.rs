//! The GEGLU kernels: `out = h * gelu(g)` for each pair `(h, g) = (x[r, c], x[r, n + c])` of a
//! contiguous x `[rows, 2 n]`, with the exact GELU `gelu(g) = g * Phi(g)`, `Phi` the standard
//! normal distribution function, and its backward: `dh = dy * gelu(g)`,
//! `dg = dy * h * (Phi(g) + g * phi(g))`, `phi` the standard normal density (the exact
//! derivative, as PyTorch's). One unit per output value each way, f32 arithmetic whatever
//! the dtype.

use cubecl::prelude::*;

/// `1 / sqrt(2)`.
const FRAC_1_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
/// `1 / sqrt(2 pi)`, the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// The standard normal distribution function, `0.5 * (1 + erf(g / sqrt(2)))`.
#[cube]
fn normal_cdf(g: f32) -> f32 {
    f32::new(0.5) * (f32::new(1.0) + Erf::erf(g * f32::new(FRAC_1_SQRT_2)))
}

/// Index in x of the `hidden` value paired with output value `i`, for halves of `half`
/// values: the `gate` value is `half` further.
#[cube]
fn hidden_index(i: usize, half: usize) -> usize {
    (i / half) * 2 * half + i % half
}

/// `out[r, c] = x[r, c] * gelu(x[r, n + c])`, `out` `[rows, n]`, one unit per value.
#[cube(launch)]
pub(crate) fn geglu_forward_kernel<E: Float>(
    x: &Tensor<E>,
    out: &mut Tensor<E>,
    half: u32,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let at = hidden_index(i, half as usize);
        let h = f32::cast_from(x[at]);
        let g = f32::cast_from(x[at + half as usize]);
        out[i] = E::cast_from(h * g * normal_cdf(g));
    }
}

/// Both halves of x's gradient from the output's, one unit per output value: `grad_x` as x.
#[cube(launch)]
pub(crate) fn geglu_backward_kernel<E: Float>(
    x: &Tensor<E>,
    grad_out: &Tensor<E>,
    grad_x: &mut Tensor<E>,
    half: u32,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i < grad_out.len() {
        let at = hidden_index(i, half as usize);
        let h = f32::cast_from(x[at]);
        let g = f32::cast_from(x[at + half as usize]);
        let dy = f32::cast_from(grad_out[i]);
        let cdf = normal_cdf(g);
        let pdf = f32::new(FRAC_1_SQRT_2PI) * (f32::new(-0.5) * g * g).exp();
        grad_x[at] = E::cast_from(dy * g * cdf);
        grad_x[at + half as usize] = E::cast_from(dy * h * (cdf + g * pdf));
    }
}
