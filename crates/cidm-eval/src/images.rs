//! Reading evaluation images and their captions from folders.
//!
//! An image folder holds PNG or JPEG files, taken in file-name order; a caption is a `.txt`
//! file with the image's stem beside it (`dog-03.png` and `dog-03.txt`), the layout
//! DreamBooth-style datasets and `cidm generate` runs use. Images become RGB the way
//! transformers' CLIP processor converts them: transparency is composited onto white.

use std::io::Read;
use std::path::{Path, PathBuf};

use cidm_diffusion::clip::composite_on_white;
use cidm_diffusion::vae::Rgb8Image;
use image::DynamicImage;

use crate::error::{EvalError, Result};

/// File extensions read as images (case-insensitive).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The longest caption read, in bytes: far beyond CLIP's 77 tokens, and a bound on what a
/// stray large `.txt` file can make the loader allocate.
const MAX_CAPTION_BYTES: u64 = 1 << 16;

/// Decodes an image file to RGB (alpha composited onto white, grey replicated, 16-bit
/// samples scaled to 8 bits). A missing file is [`EvalError::Io`]; a file that does not
/// decode is [`EvalError::UnreadableImage`].
pub fn load_image(path: &Path) -> Result<Rgb8Image> {
    let unreadable = |reason: String| EvalError::UnreadableImage {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decoded = reader
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?
        .decode()
        .map_err(|e| unreadable(e.to_string()))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    if decoded.color().has_alpha() {
        let rgba = DynamicImage::to_rgba8(&decoded);
        Ok(composite_on_white(width, height, rgba.as_raw())?)
    } else {
        Ok(Rgb8Image {
            width,
            height,
            pixels: decoded.to_rgb8().into_raw(),
        })
    }
}

/// The image files of `folder` (PNG and JPEG by extension), sorted by name. A folder that
/// cannot be listed is [`EvalError::Io`]; one without images is [`EvalError::EmptyFolder`].
pub fn image_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| EvalError::Io {
        path: folder.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(EvalError::EmptyFolder {
            path: folder.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

/// The caption file of an image: the same stem with extension `.txt`.
pub fn caption_path(image: &Path) -> PathBuf {
    image.with_extension("txt")
}

/// The caption beside `image`, trimmed, or `None` if there is no caption file. A caption that
/// cannot be read (not UTF-8, larger than 64 KiB) is [`EvalError::Io`].
pub fn read_caption(image: &Path) -> Result<Option<String>> {
    let path = caption_path(image);
    if !path.is_file() {
        return Ok(None);
    }
    let io = |source| EvalError::Io {
        path: path.clone(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(&path)
        .map_err(io)?
        .take(MAX_CAPTION_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CAPTION_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("a caption longer than {MAX_CAPTION_BYTES} bytes"),
        )));
    }
    Ok(Some(text.trim().to_string()))
}

/// The captions of every image, all or none: `Ok(None)` when no image has one, an
/// [`EvalError::MissingCaption`] naming the first image without one when only some do.
pub fn read_captions(images: &[PathBuf]) -> Result<Option<Vec<String>>> {
    let captions = images
        .iter()
        .map(|image| read_caption(image))
        .collect::<Result<Vec<_>>>()?;
    if captions.iter().all(Option::is_none) {
        return Ok(None);
    }
    images
        .iter()
        .zip(captions)
        .map(|(image, caption)| {
            caption.ok_or_else(|| EvalError::MissingCaption {
                image: image.clone(),
                caption: caption_path(image),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
