//! How well a base model draws what it is asked for: generate base-world captions ("a red
//! star on the left") and read the images back with the shapes world's deterministic detector
//! (`cidm_shapes::eval::text_alignment`).

use burn::tensor::backend::Backend;
use cidm_diffusion::{GenerationRequest, Sampler, StableDiffusion};
use cidm_shapes::eval::{text_alignment, Target};
use cidm_shapes::{Colour, Item, Position, Shape};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{PretrainError, Result};

/// Sampling settings of a quality measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualitySettings {
    /// Number of prompts, one image each (default 48).
    pub prompts: usize,
    /// Denoising steps (default 25).
    pub steps: usize,
    /// Guidance scale (default 7.5).
    pub guidance_scale: f64,
    /// The sampler (default DPM-Solver++ 2M).
    pub sampler: Sampler,
    /// Seed of the first batch's initial noise; batch `k` uses `seed + k` (default 0).
    pub seed: u64,
    /// Images generated per pipeline call (default 16).
    pub batch: usize,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            prompts: 48,
            steps: 25,
            guidance_scale: 7.5,
            sampler: Sampler::DpmPlusPlus,
            seed: 0,
            batch: 16,
        }
    }
}

/// Rates over the generated images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Images generated.
    pub images: usize,
    /// Share with one object of the asked shape and colour (the text-alignment verdict).
    pub aligned: f32,
    /// Share with some object of the asked shape.
    pub shape: f32,
    /// Share with some object of the asked colour.
    pub colour: f32,
    /// Share whose aligned object sits at the asked position.
    pub position: f32,
}

/// Prompt `k` of the quality set: shapes cycle fastest, then colours, positions cycle on
/// their own, so every 36 prompts cover each shape-colour pair once.
pub fn quality_prompt(k: usize) -> (String, Target) {
    let item = Item {
        shape: Shape::ALL[k % Shape::ALL.len()],
        colour: Colour::BASE[(k / Shape::ALL.len()) % Colour::BASE.len()],
        position: Position::ALL[k % Position::ALL.len()],
    };
    let target = Target {
        shape: item.shape,
        colour: Some(item.colour),
        position: Some(item.position),
    };
    (item.phrase(), target)
}

/// Generates the first `settings.prompts` quality prompts with `model` and scores them;
/// returns the report and the images in prompt order.
pub fn measure_quality<B: Backend>(
    model: &StableDiffusion<B>,
    settings: &QualitySettings,
) -> Result<(QualityReport, Vec<RgbImage>)> {
    if settings.prompts == 0 || settings.batch == 0 {
        return Err(PretrainError::InvalidConfig(
            "quality: prompts and batch must be at least 1".into(),
        ));
    }
    let size = model.vae.config().sample_size.as_u64().unwrap_or(32) as usize;
    let prompts: Vec<(String, Target)> = (0..settings.prompts).map(quality_prompt).collect();
    let mut images = Vec::with_capacity(prompts.len());
    for (k, chunk) in prompts.chunks(settings.batch).enumerate() {
        let request = GenerationRequest {
            prompts: chunk.iter().map(|(p, _)| p.clone()).collect(),
            width: size,
            height: size,
            steps: settings.steps,
            guidance_scale: settings.guidance_scale,
            seed: settings.seed + k as u64,
            sampler: settings.sampler,
            ..GenerationRequest::default()
        };
        let latents = model.generate_latents(&request, None, &mut |_, _| {})?;
        for decoded in model.decode(latents)? {
            let image =
                RgbImage::from_raw(decoded.width as u32, decoded.height as u32, decoded.pixels)
                    .ok_or_else(|| {
                        PretrainError::InvalidConfig("decoded image has a wrong size".into())
                    })?;
            images.push(image);
        }
    }
    let (mut aligned, mut shape, mut colour, mut position) = (0, 0, 0, 0);
    for ((_, target), image) in prompts.iter().zip(&images) {
        let ta = text_alignment(image, target);
        aligned += usize::from(ta.aligned);
        shape += usize::from(ta.shape_present);
        colour += usize::from(ta.colour_present == Some(true));
        position += usize::from(ta.position_correct == Some(true));
    }
    let rate = |n: usize| n as f32 / images.len() as f32;
    Ok((
        QualityReport {
            images: images.len(),
            aligned: rate(aligned),
            shape: rate(shape),
            colour: rate(colour),
            position: rate(position),
        },
        images,
    ))
}

/// The images side by side in rows of `columns`, with a one-pixel white gap.
pub fn grid(images: &[RgbImage], columns: usize) -> RgbImage {
    let (w, h) = images.first().map_or((1, 1), |i| (i.width(), i.height()));
    let columns = columns.max(1) as u32;
    let rows = (images.len() as u32).div_ceil(columns).max(1);
    let mut out = RgbImage::from_pixel(
        columns * (w + 1) + 1,
        rows * (h + 1) + 1,
        image::Rgb([255, 255, 255]),
    );
    for (k, img) in images.iter().enumerate() {
        let (x, y) = (k as u32 % columns, k as u32 / columns);
        image::imageops::replace(
            &mut out,
            img,
            i64::from(1 + x * (w + 1)),
            i64::from(1 + y * (h + 1)),
        );
    }
    out
}
