//! Writing generated images as PNG files, atomically (a crash never leaves a torn file).

use std::path::{Path, PathBuf};

use cidm_diffusion::io::write_atomic;
use cidm_diffusion::vae::Rgb8Image;

/// Errors of image output.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The pixel buffer does not match the stated size.
    #[error("image is {width}x{height} but holds {len} bytes")]
    BadBuffer {
        /// Stated width.
        width: usize,
        /// Stated height.
        height: usize,
        /// Bytes held.
        len: usize,
    },
    /// PNG encoding failed.
    #[error("{path}: PNG encoding failed: {reason}")]
    Encode {
        /// The target file.
        path: PathBuf,
        /// The encoder's message.
        reason: String,
    },
    /// Writing failed (full disk, permissions, missing folder).
    #[error(transparent)]
    Write(#[from] cidm_diffusion::Error),
}

/// Encodes `image` as PNG and writes it to `path` atomically.
pub fn save_png(image: &Rgb8Image, path: &Path) -> Result<(), ImageError> {
    let bad = || ImageError::BadBuffer {
        width: image.width,
        height: image.height,
        len: image.pixels.len(),
    };
    let (width, height) = (
        u32::try_from(image.width).map_err(|_| bad())?,
        u32::try_from(image.height).map_err(|_| bad())?,
    );
    let buffer = image::RgbImage::from_raw(width, height, image.pixels.clone()).ok_or_else(bad)?;
    save_rgb_png(&buffer, path)
}

/// Encodes an `image::RgbImage` (e.g. a figure) as PNG and writes it to `path` atomically.
pub fn save_rgb_png(image: &image::RgbImage, path: &Path) -> Result<(), ImageError> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| ImageError::Encode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// The file for image `index` of `count`: `path` itself for a single image, else
/// `stem-{index}.ext` beside it.
pub fn numbered(path: &Path, index: usize, count: usize) -> PathBuf {
    if count == 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    path.with_file_name(format!("{stem}-{index}.{ext}"))
}
