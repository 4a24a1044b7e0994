//! A task's training images: a folder of pictures, each with its caption, resized and cropped
//! to the model's resolution.
//!
//! Captions come from a `.txt` file beside each image (same stem), or from one prompt
//! template for the whole folder, as DreamBooth-style scripts do.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How an image is cut to a square of the training resolution after its shorter side has been
/// resized to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Crop {
    /// The centre square, as diffusers' training scripts do by default.
    #[default]
    Center,
    /// A square at a random offset per step (the offset moves in whole latent cells, because
    /// the crop is taken from the cached latents of the whole resized image).
    Random,
}

/// One training image after resizing: `[3, height, width]` values in `[-1, 1]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingImage {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its caption.
    pub caption: String,
    /// Width after resizing.
    pub width: usize,
    /// Height after resizing.
    pub height: usize,
    /// Channel-major pixels in `[-1, 1]`.
    pub pixels: Vec<f32>,
}

/// Reads every image of `dir` (sorted by file name, so the order is the same everywhere),
/// takes its caption from `<stem>.txt` or else from `template`, resizes its shorter side to
/// `resolution` (bilinear) and, for [`Crop::Center`], cuts the centre square.
///
/// Errors: a missing or empty folder, an unreadable image, an image without a caption when
/// no template is given, an empty caption, a resolution of zero.
pub fn read_image_folder(
    dir: &Path,
    template: Option<&str>,
    resolution: usize,
    crop: Crop,
) -> Result<Vec<TrainingImage>> {
    if resolution == 0 {
        return Err(Error::InvalidInput(
            "the training resolution must be > 0".into(),
        ));
    }
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()).map_err(io))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} holds no images ({})",
            dir.display(),
            IMAGE_EXTENSIONS.join(", ")
        )));
    }
    paths
        .into_iter()
        .map(|path| {
            let caption = caption_of(&path, template)?;
            read_image(&path, caption, resolution, crop)
        })
        .collect()
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn caption_of(image: &Path, template: Option<&str>) -> Result<String> {
    let text = image.with_extension("txt");
    let caption = if text.is_file() {
        std::fs::read_to_string(&text).map_err(|source| Error::Io {
            path: text.clone(),
            source,
        })?
    } else if let Some(template) = template {
        template.to_string()
    } else {
        return Err(Error::InvalidInput(format!(
            "{} has no caption file {} and no prompt template was given",
            image.display(),
            text.display()
        )));
    };
    let caption = caption.trim().to_string();
    if caption.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the caption of {} is empty",
            image.display()
        )));
    }
    Ok(caption)
}

fn read_image(
    path: &Path,
    caption: String,
    resolution: usize,
    crop: Crop,
) -> Result<TrainingImage> {
    let decoded = image::open(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read image {}: {e}", path.display())))?
        .to_rgb8();
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::InvalidInput(format!("{} is empty", path.display())));
    }
    // Shorter side to `resolution`, the longer one in proportion (rounded, at least it).
    let scale = resolution as f64 / w.min(h) as f64;
    let (rw, rh) = (
        ((w as f64 * scale).round() as usize).max(resolution),
        ((h as f64 * scale).round() as usize).max(resolution),
    );
    let resized = image::imageops::resize(&decoded, rw as u32, rh as u32, FilterType::Triangle);
    let (x0, y0, cw, ch) = match crop {
        Crop::Center => (
            (rw - resolution) / 2,
            (rh - resolution) / 2,
            resolution,
            resolution,
        ),
        Crop::Random => (0, 0, rw, rh),
    };
    let mut pixels = vec![0f32; 3 * cw * ch];
    for y in 0..ch {
        for x in 0..cw {
            let p = resized.get_pixel((x0 + x) as u32, (y0 + y) as u32);
            for c in 0..3 {
                pixels[(c * ch + y) * cw + x] = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(TrainingImage {
        path: path.to_path_buf(),
        caption,
        width: cw,
        height: ch,
        pixels,
    })
}
