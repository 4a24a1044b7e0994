//! One regional sampling step as one batched UNet call, and the sampling loop over it.
//!
//! The batch is `[unconditional, global, region_1 .. region_U]`, U + 2 samples on the same
//! latent. Every sample runs with the global prompt's bank gates (the unconditional one too,
//! as with plain EWA sampling). Regional cross-attention applies:
//! - in the global sample, every region (inside box u the features attend to region u's
//!   layer-wise text with region u's gates; overlaps averaged): the context-controlled
//!   `eps(z|c)`;
//! - in region u's sample, region u alone: `eps(z|c_u, box_u)`.
//!
//! With one box covering the whole image both are the region prompt's own prediction, so the
//! composition equals plain guided sampling of the region's prompt.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_diffusion::conditioning::{Region, Regions};
use cidm_diffusion::pipeline::{sample_with, SamplingSettings};
use cidm_diffusion::{Conditioning, PerLayer, UNet2DConditionModel};
use cidm_ewa::{Ewa, PromptConditioning, PromptEncoder};

use crate::composition::compose_noise;
use crate::config::RegionalConfig;
use crate::error::{RegionError, Result};
use crate::masks::{box_cells, box_masks, box_positions};
use crate::spec::{BoundingBox, RegionSpec};

/// The batched conditioning of a regional step and the masks that compose its output.
#[derive(Debug, Clone)]
pub struct RegionalStep<B: Backend> {
    conditioning: Conditioning<B>,
    masks: Tensor<B, 4>,
    alpha: f64,
    latent_size: [usize; 2],
}

impl<B: Backend> RegionalStep<B> {
    /// Builds the step from the unconditional text `[1, tokens, hidden]` (per layer or
    /// shared), the global prompt and the regions, for latents of `latent_size` `[h, w]`.
    ///
    /// Errors: more regions than `config.max_regions`, none, a box that covers no whole latent
    /// cell, texts or gates that do not fit the UNet.
    pub fn new(
        unet: &UNet2DConditionModel<B>,
        uncond: &PerLayer<Tensor<B, 3>>,
        global: &PromptConditioning<B>,
        regions: &[(PromptConditioning<B>, BoundingBox)],
        latent_size: [usize; 2],
        config: &RegionalConfig,
    ) -> Result<Self> {
        config.validate()?;
        let count = regions.len();
        if count == 0 {
            return Err(RegionError::InvalidInput(
                "regional sampling needs at least one region".into(),
            ));
        }
        if count > config.max_regions {
            return Err(RegionError::TooManyRegions {
                found: count,
                limit: config.max_regions,
            });
        }
        let [height, width] = latent_size;
        for (u, (_, bbox)) in regions.iter().enumerate() {
            let (rows, cols) = box_cells(bbox, latent_size);
            if rows.is_empty() || cols.is_empty() {
                return Err(RegionError::BoxBelowOneCell {
                    region: u,
                    height,
                    width,
                });
            }
        }
        let layers = unet.cross_attention_layers();
        let text = batch_text(uncond, &global.text, count, layers)?;
        let device = text.get(0).device();
        let boxes: Vec<BoundingBox> = regions.iter().map(|(_, b)| *b).collect();
        let mut resolutions = unet.attention_resolutions(latent_size);
        resolutions.sort_unstable();
        resolutions.dedup();
        let positions = resolutions
            .into_iter()
            .map(|size| (size, boxes.iter().map(|b| box_positions(b, size)).collect()))
            .collect();
        let regions = Regions {
            regions: regions
                .iter()
                .enumerate()
                .map(|(u, (prompt, _))| Region {
                    text: prompt.text.clone(),
                    gates: Some(prompt.gates.clone()),
                    samples: vec![1, 2 + u],
                })
                .collect(),
            positions,
        };
        let conditioning = Conditioning {
            text,
            gates: Some(global.gates.clone()),
            regions: Some(regions),
        };
        let latent_masks =
            box_masks::<B>(&boxes, latent_size, &device).reshape([count, 1, height, width]);
        Ok(Self {
            conditioning,
            masks: latent_masks,
            alpha: config.alpha,
            latent_size,
        })
    }

    /// Encodes `[negative, prompt, region prompts...]` in one batch, computes each prompt's
    /// EWA weights (each region with its own), and builds the step. The UNet must have the
    /// EWA stack attached ([`Ewa::attach`]).
    #[allow(clippy::too_many_arguments)]
    pub fn from_prompts(
        unet: &UNet2DConditionModel<B>,
        ewa: &Ewa<B>,
        encoder: &PromptEncoder<'_, B>,
        prompt: &str,
        negative: &str,
        regions: &[RegionSpec],
        latent_size: [usize; 2],
        config: &RegionalConfig,
    ) -> Result<Self> {
        if regions.len() > config.max_regions {
            return Err(RegionError::TooManyRegions {
                found: regions.len(),
                limit: config.max_regions,
            });
        }
        let mut texts = vec![negative, prompt];
        texts.extend(regions.iter().map(|r| r.prompt.as_str()));
        // The negative prompt's own weights are not used: it runs with the global gates.
        let prompts = ewa.prompts(encoder, &texts)?;
        let [uncond, global, rest @ ..] = prompts.as_slice() else {
            return Err(RegionError::InvalidInput("no global prompt".into()));
        };
        let pairs: Vec<(PromptConditioning<B>, BoundingBox)> = rest
            .iter()
            .cloned()
            .zip(regions.iter().map(|r| r.bbox))
            .collect();
        Self::new(unet, &uncond.text, global, &pairs, latent_size, config)
    }

    /// The conditioning of the batched UNet call (U + 2 samples).
    pub fn conditioning(&self) -> &Conditioning<B> {
        &self.conditioning
    }

    /// The batch size of the UNet call, U + 2.
    pub fn batch(&self) -> usize {
        self.masks.dims()[0] + 2
    }

    /// The regions' masks at the latent resolution, `[U, 1, h, w]`.
    pub fn masks(&self) -> &Tensor<B, 4> {
        &self.masks
    }

    /// The UNet's prediction for one latent at timestep `t`, composed: one batched call.
    ///
    /// # Shapes
    /// - latents: `[1, c, h, w]` -> `[1, c, h, w]`
    pub fn predict(
        &self,
        unet: &UNet2DConditionModel<B>,
        latents: Tensor<B, 4>,
        t: Tensor<B, 1>,
        guidance_scale: f64,
    ) -> Result<Tensor<B, 4>> {
        let [n, _, h, w] = latents.dims();
        if n != 1 || [h, w] != self.latent_size {
            return Err(RegionError::InvalidInput(format!(
                "latents {:?}, expected [1, channels, {}, {}]",
                latents.dims(),
                self.latent_size[0],
                self.latent_size[1]
            )));
        }
        let noise = unet.forward(latents.repeat_dim(0, self.batch()), t, &self.conditioning)?;
        compose_noise(noise, self.masks.clone(), self.alpha, guidance_scale)
    }
}

/// Denoises one latent with regional guidance: every step is one UNet call on U + 2 samples,
/// composed by [`compose_noise`], then the scheduler's step, through the core's sampling loop
/// ([`sample_with`]), so a NaN is reported at the step where it appears.
/// `on_step(done, total)` reports progress.
///
/// # Shapes
/// - latents: `[1, in_channels, h, w]` -> `[1, out_channels, h, w]`
pub fn sample_regional<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    latents: Tensor<B, 4>,
    step: &RegionalStep<B>,
    settings: &SamplingSettings,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor<B, 4>> {
    let guidance = settings.guidance_scale;
    let mut predict =
        |latents: Tensor<B, 4>, t: Tensor<B, 1>| step.predict(unet, latents, t, guidance);
    sample_with(unet, latents, settings, &mut predict, on_step)
}

/// The text of the batch `[uncond, global, global x U]` per layer (shared when both are).
fn batch_text<B: Backend>(
    uncond: &PerLayer<Tensor<B, 3>>,
    global: &PerLayer<Tensor<B, 3>>,
    regions: usize,
    layers: usize,
) -> Result<PerLayer<Tensor<B, 3>>> {
    let one = |u: &Tensor<B, 3>, g: &Tensor<B, 3>| -> Result<Tensor<B, 3>> {
        if u.dims()[0] != 1 || g.dims()[0] != 1 || u.dims()[1..] != g.dims()[1..] {
            return Err(RegionError::InvalidInput(format!(
                "unconditional text {:?} and global text {:?} must both be [1, tokens, hidden]",
                u.dims(),
                g.dims()
            )));
        }
        Ok(Tensor::cat(
            vec![u.clone(), g.clone().repeat_dim(0, regions + 1)],
            0,
        ))
    };
    Ok(match (uncond, global) {
        (PerLayer::Shared(u), PerLayer::Shared(g)) => PerLayer::Shared(one(u, g)?),
        _ => {
            let count = |p: &PerLayer<Tensor<B, 3>>| match p {
                PerLayer::Shared(_) => layers,
                PerLayer::Layers(v) => v.len(),
            };
            if count(uncond) != layers || count(global) != layers {
                return Err(RegionError::InvalidInput(format!(
                    "texts have {} and {} layers, the UNet {layers}",
                    count(uncond),
                    count(global)
                )));
            }
            PerLayer::Layers(
                (0..layers)
                    .map(|l| one(uncond.get(l), global.get(l)))
                    .collect::<Result<_>>()?,
            )
        }
    })
}
