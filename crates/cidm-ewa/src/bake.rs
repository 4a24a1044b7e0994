//! Baking one prompt's aggregated weights into the base: `W0 += (D * g^l) U` for every
//! stacked projection, where `g^l` are the prompt's layer-l gates. A baked UNet samples at
//! exactly the base model's cost, so repeated sampling of one prompt skips the bank; the
//! weights differ per layer, which is why this is not `LoraAdapter::merge_into` (one weight
//! for every layer). Unbaking subtracts the same product (~1e-7 relative error in f32).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_diffusion::UNet2DConditionModel;
use cidm_lora::projection_sites;

use crate::aggregation::Ewa;
use crate::error::{EwaError, Result};
use crate::weights::EwaWeights;

impl<B: Backend> Ewa<B> {
    /// Adds `alpha * sum_i w_i^l scale_i D_i U_i` to the base weight of every projection the
    /// tasks adapt. The UNet must not have the stack attached (the bank would count twice):
    /// a projection with a bank is an error, checked before anything changes.
    pub fn bake(&self, unet: &mut UNet2DConditionModel<B>, weights: &EwaWeights) -> Result<()> {
        self.add_to_base(unet, weights, 1.0)
    }

    /// Subtracts what [`Ewa::bake`] added with the same weights.
    pub fn unbake(&self, unet: &mut UNet2DConditionModel<B>, weights: &EwaWeights) -> Result<()> {
        self.add_to_base(unet, weights, -1.0)
    }

    fn add_to_base(
        &self,
        unet: &mut UNet2DConditionModel<B>,
        weights: &EwaWeights,
        sign: f64,
    ) -> Result<()> {
        let layers = self.stack().layers();
        let Some(device) = layers.values().next().map(|f| f.down.device()) else {
            return Ok(());
        };
        let gates = self.gates(weights, &device)?;
        let sites = projection_sites(unet);
        for site in &sites {
            if let Some(factors) = layers.get(&site.path) {
                let [d_in, _] = factors.down.dims();
                let [_, d_out] = factors.up.dims();
                if (d_in, d_out) != (site.d_in, site.d_out) {
                    return Err(EwaError::Shape {
                        what: format!("stacked factors of `{}`", site.path),
                        found: vec![d_in, d_out],
                        expected: format!("[{}, {}]", site.d_in, site.d_out),
                    });
                }
            }
        }
        if let Some(missing) = layers
            .keys()
            .find(|path| !sites.iter().any(|s| &s.path == *path))
        {
            return Err(EwaError::InvalidInput(format!(
                "the UNet has no projection `{missing}`"
            )));
        }
        let mut site = sites.iter();
        let mut targets = Vec::new();
        for block in unet.transformer_blocks_mut() {
            for attention in [&mut block.attn1, &mut block.attn2] {
                for (_, projection) in attention.projections_mut() {
                    if let Some(s) = site.next() {
                        if let Some(factors) = layers.get(&s.path) {
                            targets.push((s, factors, projection));
                        }
                    }
                }
            }
        }
        if let Some((s, _, _)) = targets.iter().find(|(_, _, p)| p.bank.is_some()) {
            return Err(EwaError::InvalidInput(format!(
                "`{}` has a bank attached: detach the stack before baking",
                s.path
            )));
        }
        for (s, factors, projection) in targets {
            let gate: Tensor<B, 2> = gates.get(s.layer).clone();
            let delta = (factors.down.clone() * gate).matmul(factors.up.clone()) * sign;
            let weight = projection.base.weight.clone();
            projection.base.weight = weight.map(|w| w + delta);
        }
        Ok(())
    }
}
