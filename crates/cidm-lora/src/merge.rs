//! Merging an adapter into the base weights, `W0 <- W0 + weight * scale * down up`, and
//! undoing it. A merged model runs at exactly the base model's cost; unmerging subtracts the
//! same product, so the round trip is exact up to float rounding (one add and one subtract per
//! weight: ~1e-7 relative in f32).

use burn::tensor::backend::Backend;
use cidm_diffusion::precision::cast_to;
use cidm_diffusion::UNet2DConditionModel;

use crate::adapter::{check_layers_fit, LoraAdapter};
use crate::error::{LoraError, Result};
use crate::sites::{projection_sites, visit_projections_mut};

impl<B: Backend> LoraAdapter<B> {
    /// Adds `weight * alpha / rank * down up` to the base weight of every adapted projection.
    /// `weight` 1.0 merges the adapter as trained; LoRA-M merges g tasks with `1 / g` each.
    /// Checks that the adapter fits first, so a misfit changes nothing.
    pub fn merge_into(&self, unet: &mut UNet2DConditionModel<B>, weight: f64) -> Result<()> {
        self.add_to_base(unet, weight)
    }

    /// Subtracts what [`LoraAdapter::merge_into`] added with the same `weight`.
    pub fn unmerge_from(&self, unet: &mut UNet2DConditionModel<B>, weight: f64) -> Result<()> {
        self.add_to_base(unet, -weight)
    }

    fn add_to_base(&self, unet: &mut UNet2DConditionModel<B>, weight: f64) -> Result<()> {
        if !weight.is_finite() {
            return Err(LoraError::InvalidInput(format!(
                "merge weight must be finite, got {weight}"
            )));
        }
        check_layers_fit(self.layers(), &projection_sites(unet))?;
        let factor = weight * self.scale();
        visit_projections_mut(unet, |site, projection| {
            if let Some(factors) = self.layers().get(&site.path) {
                // In f32 (the factors' dtype), added in the base's (f16 under an f16 model).
                let delta = factors.delta()? * factor;
                let weight = projection.base.weight.clone();
                projection.base.weight = weight.map(|w| {
                    let dtype = w.dtype();
                    w + cast_to(delta, dtype)
                });
            }
            Ok::<(), LoraError>(())
        })
    }
}
