//! Pillow's bicubic resize of 8-bit RGB images, reproduced to the byte.
//!
//! CLIP's preprocessing (OpenAI's and transformers' PIL backend) resizes with
//! `PIL.Image.resize(..., BICUBIC)`, and its embeddings move visibly when the resized bytes
//! differ by one, so the metrics only match the reference if the resize does. Pillow's
//! algorithm (`libImaging/Resample.c`): a separable convolution with the Keys cubic
//! (`a = -0.5`), widened by the scale factor when shrinking (antialiasing), coefficients
//! normalised to sum 1 and rounded to 22-bit fixed point, a horizontal pass then a vertical
//! pass, each rounding to bytes; a dimension that keeps its size is not resampled.

use crate::error::{Error, Result};
use crate::vae::Rgb8Image;

/// Fractional bits of Pillow's fixed-point coefficients (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Half-width of the bicubic kernel at scale 1.
const SUPPORT: f64 = 2.0;

/// Pillow's `bicubic_filter` (Keys' cubic convolution kernel with `a = -0.5`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The taps of one output sample: the first input index and the fixed-point weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resampling `input` samples
/// to `output`.
fn taps(input: usize, output: usize) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = SUPPORT * filter_scale;
    // Pillow multiplies by the reciprocal; dividing could differ in the last bit.
    let inverse = 1.0 / filter_scale;
    (0..output)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; both bounds are then clamped to the input.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let raw: Vec<f64> = (first..end)
                .map(|x| bicubic((x as f64 - center + 0.5) * inverse))
                .collect();
            let total: f64 = raw.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            Taps { first, weights }
        })
        .collect()
}

/// Pillow's `clip8`: the rounded fixed-point sum as a byte, saturating.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass over the axis of `len` samples spaced `stride` bytes apart, for every `line`
/// (start offset) of the image: writes `out_len` samples per line into a buffer laid out
/// the same way with `out_stride`.
fn pass(
    pixels: &[u8],
    lines: &[(usize, usize)],
    stride: usize,
    out_stride: usize,
    taps: &[Taps],
    out: &mut [u8],
) {
    let rounding = 1i64 << (PRECISION_BITS - 1);
    for &(start, out_start) in lines {
        for (i, tap) in taps.iter().enumerate() {
            for channel in 0..3 {
                let sum = tap
                    .weights
                    .iter()
                    .enumerate()
                    .fold(rounding, |sum, (k, &w)| {
                        let sample = pixels[start + (tap.first + k) * stride + channel];
                        sum + i64::from(sample) * i64::from(w)
                    });
                out[out_start + i * out_stride + channel] = clip8(sum);
            }
        }
    }
}

/// Resizes `image` to `width x height` exactly as Pillow's `Image.resize(..., BICUBIC)` does
/// for an RGB image. A zero target size or a buffer that does not match the stated size is an
/// [`Error::InvalidInput`].
pub fn resize_bicubic(image: &Rgb8Image, width: usize, height: usize) -> Result<Rgb8Image> {
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 || width == 0 || height == 0 || image.pixels.len() != w * h * 3 {
        return Err(Error::InvalidInput(format!(
            "cannot resize a {w}x{h} image of {} bytes to {width}x{height}",
            image.pixels.len()
        )));
    }
    let mut current = image.clone();
    if width != w {
        let mut out = vec![0u8; width * h * 3];
        let rows: Vec<_> = (0..h).map(|y| (y * w * 3, y * width * 3)).collect();
        pass(&current.pixels, &rows, 3, 3, &taps(w, width), &mut out);
        current = Rgb8Image {
            width,
            height: h,
            pixels: out,
        };
    }
    if height != h {
        let mut out = vec![0u8; width * height * 3];
        let columns: Vec<_> = (0..width).map(|x| (x * 3, x * 3)).collect();
        let (stride, out_stride) = (width * 3, width * 3);
        pass(
            &current.pixels,
            &columns,
            stride,
            out_stride,
            &taps(h, height),
            &mut out,
        );
        current = Rgb8Image {
            width,
            height,
            pixels: out,
        };
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys' kernel interpolates: 1 at 0, 0 at the other integers, and its taps sum to 1.
    #[test]
    fn kernel_interpolates() {
        assert_eq!(bicubic(0.0), 1.0);
        for x in [1.0, 2.0, -1.0, 3.5] {
            assert_eq!(bicubic(x), 0.0);
        }
        let sum: f64 = (-2..2).map(|k| bicubic(k as f64 + 0.3)).sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    /// A constant image stays constant at any size: the fixed-point weights of every output
    /// sample sum to one within rounding, which the final shift removes.
    #[test]
    fn constant_image_is_preserved() {
        let image = Rgb8Image {
            width: 13,
            height: 7,
            pixels: [200u8, 3, 77].repeat(13 * 7),
        };
        for (w, h) in [(5, 3), (29, 11), (13, 20), (1, 1)] {
            let out = resize_bicubic(&image, w, h).unwrap();
            assert_eq!(out.pixels, [200u8, 3, 77].repeat(w * h), "{w}x{h}");
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let image = Rgb8Image {
            width: 2,
            height: 2,
            pixels: vec![0; 11],
        };
        assert!(matches!(
            resize_bicubic(&image, 4, 4),
            Err(Error::InvalidInput(_))
        ));
    }
}
