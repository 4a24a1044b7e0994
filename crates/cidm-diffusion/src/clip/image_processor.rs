//! transformers' CLIP image processor (`preprocessor_config.json`): resize the shortest side
//! with Pillow's bicubic filter, center crop, rescale by 1/255, normalise with the channel
//! mean and standard deviation, giving the `pixel_values` the vision model takes.
//!
//! The reference is the PIL backend (`CLIPImageProcessorPil` in transformers 5, the
//! `CLIPImageProcessor` of transformers 4), whose resize is OpenAI CLIP's own; transformers 5's
//! default torchvision backend resizes in floating point, so its bytes can differ from these.
//! Transparency is the caller's: [`composite_on_white`] does what transformers'
//! `convert_to_rgb` does before processing.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use super::resample::resize_bicubic;
use super::vision_config::MAX_IMAGE_SIZE;
use crate::error::{Error, Result};
use crate::loading::json::read_json;
use crate::vae::Rgb8Image;

/// The file name of the processor config in a transformers model directory.
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";

/// PIL's resampling code for bicubic, the only filter implemented.
const BICUBIC: u32 = 3;

/// OpenAI CLIP's channel means (transformers' `OPENAI_CLIP_MEAN`).
const CLIP_MEAN: [f64; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's channel standard deviations (`OPENAI_CLIP_STD`).
const CLIP_STD: [f64; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// How the image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// The shorter side becomes this many pixels; the longer keeps the aspect ratio,
    /// truncated (transformers' `get_resize_output_image_size` without a square default).
    ShortestEdge(usize),
    /// Exactly this size.
    Exact {
        /// Output width.
        width: usize,
        /// Output height.
        height: usize,
    },
}

/// The processing steps of a CLIP image processor; [`Default`] is OpenAI CLIP's
/// (shortest edge 224, 224x224 crop).
#[derive(Debug, Clone, PartialEq)]
pub struct CLIPImageProcessor {
    /// The bicubic resize, if `do_resize`.
    pub resize: Option<Resize>,
    /// The center crop `(width, height)`, if `do_center_crop`; zero-padded where the image is
    /// smaller, as transformers pads.
    pub crop: Option<(usize, usize)>,
    /// The factor bytes are multiplied by, if `do_rescale` (1/255).
    pub rescale_factor: Option<f64>,
    /// Per-channel `(mean, std)`, if `do_normalize`.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

impl Default for CLIPImageProcessor {
    fn default() -> Self {
        Self {
            resize: Some(Resize::ShortestEdge(224)),
            crop: Some((224, 224)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((CLIP_MEAN, CLIP_STD)),
        }
    }
}

/// A size as the JSON writes it: a number (older configs), or a dict (newer ones).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeJson {
    Side(usize),
    Dict {
        shortest_edge: Option<usize>,
        longest_edge: Option<usize>,
        height: Option<usize>,
        width: Option<usize>,
    },
}

/// The fields of `preprocessor_config.json` that matter, with transformers' CLIP defaults.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct ProcessorJson {
    do_resize: bool,
    size: SizeJson,
    resample: u32,
    do_center_crop: bool,
    crop_size: SizeJson,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    image_mean: Vec<f64>,
    image_std: Vec<f64>,
}

impl Default for ProcessorJson {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: SizeJson::Side(224),
            resample: BICUBIC,
            do_center_crop: true,
            crop_size: SizeJson::Side(224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN.to_vec(),
            image_std: CLIP_STD.to_vec(),
        }
    }
}

/// A side length within `1..=MAX_IMAGE_SIZE`.
fn side(path: &Path, field: &str, value: usize) -> Result<usize> {
    if value == 0 || value > MAX_IMAGE_SIZE {
        return Err(Error::config(
            path,
            format!("{field} = {value} is outside 1..={MAX_IMAGE_SIZE}"),
        ));
    }
    Ok(value)
}

/// Three finite channel values, each accepted by `ok`.
fn channels(path: &Path, field: &str, values: &[f64], ok: fn(f64) -> bool) -> Result<[f64; 3]> {
    match values {
        [r, g, b] if [*r, *g, *b].into_iter().all(|v| v.is_finite() && ok(v)) => Ok([*r, *g, *b]),
        _ => Err(Error::config(
            path,
            format!("{field} must be three finite values (nonzero for a std), got {values:?}"),
        )),
    }
}

impl CLIPImageProcessor {
    /// Reads and validates a `preprocessor_config.json`. A filter other than bicubic, a
    /// `longest_edge` limit or a size outside `1..=MAX_IMAGE_SIZE` is a typed config error.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let raw: ProcessorJson = read_json(path)?;
        let resize = if raw.do_resize {
            if raw.resample != BICUBIC {
                return Err(Error::unsupported(
                    path,
                    "resample",
                    raw.resample,
                    "3 (bicubic)",
                ));
            }
            Some(match raw.size {
                SizeJson::Side(n) => Resize::ShortestEdge(side(path, "size", n)?),
                SizeJson::Dict {
                    shortest_edge: Some(n),
                    longest_edge: None,
                    ..
                } => Resize::ShortestEdge(side(path, "size.shortest_edge", n)?),
                SizeJson::Dict {
                    shortest_edge: None,
                    longest_edge: None,
                    height: Some(h),
                    width: Some(w),
                } => Resize::Exact {
                    width: side(path, "size.width", w)?,
                    height: side(path, "size.height", h)?,
                },
                other => {
                    return Err(Error::unsupported(
                        path,
                        "size",
                        other,
                        "a number, {\"shortest_edge\"} or {\"height\", \"width\"}",
                    ))
                }
            })
        } else {
            None
        };
        let crop = if raw.do_center_crop {
            Some(match raw.crop_size {
                SizeJson::Side(n) => {
                    let n = side(path, "crop_size", n)?;
                    (n, n)
                }
                SizeJson::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                } => (
                    side(path, "crop_size.width", w)?,
                    side(path, "crop_size.height", h)?,
                ),
                other => {
                    return Err(Error::unsupported(
                        path,
                        "crop_size",
                        other,
                        "a number or {\"height\", \"width\"}",
                    ))
                }
            })
        } else {
            None
        };
        let rescale_factor = if raw.do_rescale {
            if !(raw.rescale_factor.is_finite() && raw.rescale_factor > 0.0) {
                return Err(Error::config(path, "rescale_factor must be positive"));
            }
            Some(raw.rescale_factor)
        } else {
            None
        };
        let normalize = if raw.do_normalize {
            Some((
                channels(path, "image_mean", &raw.image_mean, |_| true)?,
                channels(path, "image_std", &raw.image_std, |v| v != 0.0)?,
            ))
        } else {
            None
        };
        Ok(Self {
            resize,
            crop,
            rescale_factor,
            normalize,
        })
    }

    /// Reads `preprocessor_config.json` from a transformers model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join(PREPROCESSOR_CONFIG))
    }

    /// The `(width, height)` the resize step gives an image of `width x height`.
    pub fn resized_size(&self, width: usize, height: usize) -> (usize, usize) {
        match self.resize {
            None => (width, height),
            Some(Resize::Exact { width, height }) => (width, height),
            Some(Resize::ShortestEdge(edge)) => {
                let (short, long) = (width.min(height), width.max(height));
                // Python's `int(edge * long / short)`: true division, then truncation.
                let long = ((edge * long) as f64 / short as f64) as usize;
                if width <= height {
                    (edge, long)
                } else {
                    (long, edge)
                }
            }
        }
    }

    /// The `pixel_values` of one RGB image: `[3, height, width]` in row-major order, with
    /// the output size after resize and crop.
    pub fn process(&self, image: &Rgb8Image) -> Result<(Vec<f32>, usize, usize)> {
        let (w, h) = (image.width, image.height);
        if w == 0 || h == 0 || image.pixels.len() != w * h * 3 {
            return Err(Error::InvalidInput(format!(
                "an RGB image of {w}x{h} pixels cannot hold {} bytes",
                image.pixels.len()
            )));
        }
        let (new_w, new_h) = self.resized_size(w, h);
        let resized;
        let image = if (new_w, new_h) == (w, h) {
            image
        } else {
            resized = resize_bicubic(image, new_w, new_h)?;
            &resized
        };
        let (out_w, out_h) = self.crop.unwrap_or((new_w, new_h));
        // transformers' `center_crop`: floor division, then zero padding where the window
        // leaves the image.
        let top = (new_h as i64 - out_h as i64).div_euclid(2);
        let left = (new_w as i64 - out_w as i64).div_euclid(2);
        let mut values = vec![0f32; 3 * out_h * out_w];
        for y in 0..out_h {
            for x in 0..out_w {
                let (sy, sx) = (y as i64 + top, x as i64 + left);
                let inside = (0..new_h as i64).contains(&sy) && (0..new_w as i64).contains(&sx);
                for c in 0..3 {
                    let byte = if inside {
                        image.pixels[(sy as usize * new_w + sx as usize) * 3 + c]
                    } else {
                        0
                    };
                    values[(c * out_h + y) * out_w + x] = self.value(byte, c);
                }
            }
        }
        Ok((values, out_h, out_w))
    }

    /// One byte of channel `c` after rescale and normalisation, in transformers' precision:
    /// the rescale in f64 then cast to f32, the normalisation in f32.
    fn value(&self, byte: u8, c: usize) -> f32 {
        let x = match self.rescale_factor {
            Some(factor) => (f64::from(byte) * factor) as f32,
            None => f32::from(byte),
        };
        match self.normalize {
            Some((mean, std)) => (x - mean[c] as f32) / std[c] as f32,
            None => x,
        }
    }

    /// The `pixel_values` of a batch. Every image must come out the same size (a crop
    /// ensures it), and the batch must not be empty; otherwise [`Error::InvalidInput`].
    ///
    /// # Shapes
    /// - output: `[images, 3, height, width]`
    pub fn batch<B: Backend>(
        &self,
        images: &[Rgb8Image],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        let mut all = Vec::new();
        let mut size = None;
        for (i, image) in images.iter().enumerate() {
            let (values, h, w) = self.process(image)?;
            if size.is_some_and(|s| s != (h, w)) {
                return Err(Error::InvalidInput(format!(
                    "image {i} processes to {w}x{h}, the first to another size: set a crop"
                )));
            }
            size = Some((h, w));
            all.extend(values);
        }
        let (h, w) = size.ok_or_else(|| Error::InvalidInput("no images to process".into()))?;
        Ok(Tensor::from_data(
            TensorData::new(all, [images.len(), 3, h, w]),
            device,
        ))
    }
}

/// RGBA bytes composited onto an opaque white background, as transformers'
/// `convert_to_rgb` does with Pillow's `alpha_composite` (whose integer arithmetic this
/// reproduces, so the bytes match). A buffer of other than `width * height * 4` bytes is an
/// [`Error::InvalidInput`].
pub fn composite_on_white(width: usize, height: usize, rgba: &[u8]) -> Result<Rgb8Image> {
    if width.checked_mul(height).and_then(|n| n.checked_mul(4)) != Some(rgba.len()) {
        return Err(Error::InvalidInput(format!(
            "an RGBA image of {width}x{height} pixels cannot hold {} bytes",
            rgba.len()
        )));
    }
    // Pillow's `AlphaComposite.c` with the destination white and opaque.
    const BITS: u32 = 7;
    let div255 = |a: u32| ((a >> 8) + a) >> 8;
    let pixels = rgba
        .chunks_exact(4)
        .flat_map(|p| {
            let alpha = u32::from(p[3]);
            let coef1 = alpha * 255 * 255 * (1 << BITS) / (alpha * 255 + 255 * (255 - alpha));
            let coef2 = 255 * (1 << BITS) - coef1;
            let blend = move |c: u8| {
                if alpha == 0 {
                    255
                } else {
                    let mixed = u32::from(c) * coef1 + 255 * coef2;
                    (div255(mixed + (0x80 << BITS)) >> BITS) as u8
                }
            };
            [blend(p[0]), blend(p[1]), blend(p[2])]
        })
        .collect();
    Ok(Rgb8Image {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's `int(224 * 70 / 45)` = 348; the shorter side may be either.
    #[test]
    fn shortest_edge_sizes() {
        let p = CLIPImageProcessor::default();
        assert_eq!(p.resized_size(45, 70), (224, 348));
        assert_eq!(p.resized_size(80, 50), (358, 224));
        assert_eq!(p.resized_size(224, 224), (224, 224));
    }

    /// Opaque pixels are kept, clear ones become white, and half-transparent black is the
    /// value of Pillow's formula: coef1 = 128 * 128, so (255 * 16256 + 16384) / 255 / 128 = 127.
    #[test]
    fn compositing_onto_white() {
        let out = composite_on_white(3, 1, &[10, 20, 30, 255, 10, 20, 30, 0, 0, 0, 0, 128]);
        assert_eq!(
            out.unwrap().pixels,
            vec![10, 20, 30, 255, 255, 255, 127, 127, 127]
        );
        assert!(composite_on_white(2, 2, &[0; 15]).is_err());
    }

    /// A crop larger than the image pads with zero bytes, which normalise to `-mean / std`.
    #[test]
    fn crop_pads_with_zero_bytes() {
        let p = CLIPImageProcessor {
            resize: None,
            crop: Some((4, 2)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: None,
        };
        let image = Rgb8Image {
            width: 2,
            height: 2,
            pixels: vec![255; 12],
        };
        let (values, h, w) = p.process(&image).unwrap();
        assert_eq!((h, w), (2, 4));
        assert_eq!(&values[..4], &[0.0, 1.0, 1.0, 0.0]);
    }
}
