//! Decoded images to 8-bit RGB, bit for bit as diffusers' `VaeImageProcessor.postprocess`
//! with `output_type="pil"`: `(x * 0.5 + 0.5).clamp(0, 1)`, times 255, rounded half to even
//! (numpy's `round`), in f32. Raw bytes, so that the core needs no image crate.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// An 8-bit RGB image: `height` rows of `width` pixels, top row first, each pixel `[r, g, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8Image {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width * 3` bytes, interleaved.
    pub pixels: Vec<u8>,
}

/// One image value in `[-1, 1]` to a byte; out-of-range values saturate, NaN gives 0.
fn to_byte(x: f32) -> u8 {
    // `as` saturates and maps NaN to 0; the clamp keeps the product within 0..=255.
    ((x * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

/// Converts a batch of decoded images to RGB bytes.
///
/// # Shapes
/// - images: `[batch, 3, h, w]`, nominally in `[-1, 1]`; another channel count is
///   [`Error::InvalidInput`]
/// - output: `batch` images of `h x w` pixels
pub fn to_rgb8<B: Backend>(images: Tensor<B, 4>) -> Result<Vec<Rgb8Image>> {
    let [batch, channels, height, width] = images.dims();
    if channels != 3 {
        return Err(Error::InvalidInput(format!(
            "RGB conversion needs 3 channels, got {channels}"
        )));
    }
    let values = images
        .permute([0, 2, 3, 1])
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("images are not readable as f32: {e:?}")))?;
    let per_image = height * width * 3;
    Ok((0..batch)
        .map(|i| Rgb8Image {
            width,
            height,
            pixels: values[i * per_image..(i + 1) * per_image]
                .iter()
                .map(|&x| to_byte(x))
                .collect(),
        })
        .collect())
}
