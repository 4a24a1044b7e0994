//! # cidm-regions
//!
//! Context-controllable multi-concept synthesis (METHOD.md section 5): a global prompt plus
//! regions, each a prompt in a box, e.g. `--region "a <dog1> dog@0.0,0.0,0.5,1.0"`.
//!
//! - [`RegionSpec`], [`BoundingBox`], [`parse_regions`]: specs and their command-line form,
//!   with typed errors;
//! - [`box_cells`], [`box_masks`]: masks at every attention resolution (start rounded up,
//!   end rounded down);
//! - [`RegionalStep`]: the batched conditioning of one step, `[uncond, global, region_1..U]`
//!   in ONE UNet call, with layer-wise regional cross-attention in every cross-attention
//!   layer (each region with its own layer-wise text and its own EWA gates, through the
//!   core's `cidm_diffusion::conditioning::Regions`);
//! - [`compose_noise`]: `E* = alpha E + (1 - alpha) mean_u E_u` inside the boxes, `E` outside;
//! - [`sample_regional`]: the sampling loop (DPM-Solver++ or DDIM, classifier-free guidance).
//!
//! ```no_run
//! # use burn::backend::Flex as B;
//! # fn run(
//! #     sd: &cidm_diffusion::StableDiffusion<B>,
//! #     unet: &cidm_diffusion::UNet2DConditionModel<B>,
//! #     ewa: &cidm_ewa::Ewa<B>,
//! #     encoder: &cidm_ewa::PromptEncoder<'_, B>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use cidm_diffusion::pipeline::{gaussian_latents, SamplingSettings};
//! use cidm_diffusion::Sampler;
//! use cidm_regions::{parse_regions, sample_regional, RegionalConfig, RegionalStep, MAX_REGIONS};
//!
//! let specs = parse_regions(
//!     &["a <dog1> dog@0.0,0.0,0.5,1.0", "a <cat1> cat@0.5,0.0,1.0,1.0"],
//!     MAX_REGIONS,
//! )?;
//! let config = RegionalConfig::default();
//! let prompt = "a <dog1> dog and a <cat1> cat";
//! let step = RegionalStep::from_prompts(unet, ewa, encoder, prompt, "", &specs, [64, 64], &config)?;
//! let settings = SamplingSettings {
//!     scheduler: &sd.scheduler,
//!     kind: Sampler::DpmPlusPlus.kind(),
//!     steps: 50,
//!     guidance_scale: 7.5,
//! };
//! let latents = gaussian_latents([1, 4, 64, 64], 0, &Default::default());
//! let latents = sample_regional(unet, latents, &step, &settings, &mut |_, _| {})?;
//! # Ok(()) }
//! ```
//!
//! docs/regions.md gives the formulas, defaults, deviations from the paper and tolerances.

#![warn(missing_docs)]

mod composition;
mod config;
mod error;
mod masks;
mod spec;
mod step;

pub use composition::compose_noise;
pub use config::RegionalConfig;
pub use error::{RegionError, Result};
pub use masks::{box_cells, box_mask, box_masks, box_positions};
pub use spec::{parse_regions, BoundingBox, RegionSpec, MAX_REGIONS};
pub use step::{sample_regional, RegionalStep};
