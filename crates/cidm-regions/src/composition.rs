//! Noise composition (METHOD.md section 5). With guidance s, for a batch laid out
//! `[unconditional, global, region_1 .. region_U]`:
//!
//! - `E = eps(z|0) + s (eps(z|c) - eps(z|0))`, the global estimate;
//! - `E_u = eps(z|0) + s (eps(z|c_u, box_u) - eps(z|0))`, region u's estimate;
//! - `E* = alpha E + (1 - alpha) mean_u(E_u)` where at least one box covers the pixel (the
//!   mean over the boxes covering it), and `E* = E` outside every box.
//!
//! Eq. 5 of the paper read literally leaves `alpha E` outside the boxes, which would shrink
//! the noise estimate of the background by a factor of ten; the released code keeps `E`
//! there, and so does this.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_diffusion::pipeline::apply_guidance;

use crate::error::{RegionError, Result};

/// Composes the UNet's output for one regional step.
///
/// # Shapes
/// - noise: `[U + 2, c, h, w]` (unconditional, global, then one per region)
/// - masks: `[U, 1, h, w]`, region u's box at the latent resolution (0/1)
/// - output: `[1, c, h, w]`
pub fn compose_noise<B: Backend>(
    noise: Tensor<B, 4>,
    masks: Tensor<B, 4>,
    alpha: f64,
    guidance_scale: f64,
) -> Result<Tensor<B, 4>> {
    let [batch, _, h, w] = noise.dims();
    let [regions, one, mh, mw] = masks.dims();
    if batch < 3 || regions != batch - 2 || one != 1 || [mh, mw] != [h, w] {
        return Err(RegionError::InvalidInput(format!(
            "noise {:?} and masks {:?} do not fit [U + 2, c, h, w] and [U, 1, h, w]",
            noise.dims(),
            masks.dims()
        )));
    }
    if !alpha.is_finite() || !guidance_scale.is_finite() {
        return Err(RegionError::InvalidInput(format!(
            "alpha {alpha} and guidance scale {guidance_scale} must be finite"
        )));
    }
    let uncond = noise.clone().narrow(0, 0, 1);
    let global = apply_guidance(noise.clone().narrow(0, 0, 2), guidance_scale);
    let per_region = apply_guidance(
        Tensor::cat(
            vec![uncond.repeat_dim(0, regions), noise.narrow(0, 2, regions)],
            0,
        ),
        guidance_scale,
    );
    let count = masks.clone().sum_dim(0);
    let mean = (per_region * masks).sum_dim(0) / count.clone().clamp_min(1.0);
    let inside = count.clamp_max(1.0) * (1.0 - alpha);
    Ok(global.clone() + (mean - global) * inside)
}
