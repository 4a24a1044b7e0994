//! Writing the world to disk in the format the trainers read: a folder of PNG images with a
//! `.txt` caption beside each (same stem), plus a JSON manifest that records the config and
//! seed, so any folder can be regenerated bit for bit and the evaluator can rebuild its
//! references.

use crate::concepts::ConceptStream;
use crate::error::{Result, ShapesError};
use crate::world::{base_sample, WorldConfig};
use image::RgbImage;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// File name of the base dataset's manifest.
pub const BASE_MANIFEST: &str = "world.json";
/// File name of the concept stream's manifest.
pub const STREAM_MANIFEST: &str = "stream.json";

/// What a base dataset folder holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseManifest {
    /// The world config the images were drawn with.
    pub world: WorldConfig,
    /// The dataset seed.
    pub seed: u64,
    /// Number of images.
    pub count: usize,
}

/// What a concept stream folder holds: one sub-folder per concept, named after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamManifest {
    /// The world config the images were drawn with.
    pub world: WorldConfig,
    /// The stream seed.
    pub seed: u64,
    /// The concepts, their order, similar pairs and region layouts.
    pub stream: ConceptStream,
}

impl StreamManifest {
    /// Reads `stream.json` from a stream folder.
    pub fn read(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(STREAM_MANIFEST);
        let text = fs::read_to_string(&path).map_err(|source| ShapesError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Self = serde_json::from_str(&text)?;
        manifest.world.validate()?;
        manifest.stream.validate()?;
        Ok(manifest)
    }
}

/// Creates `dir` (and parents).
fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| ShapesError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `value` as pretty JSON to `path`.
fn write_json(path: PathBuf, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    fs::write(&path, text).map_err(|source| ShapesError::Io { path, source })
}

/// Writes `<stem>.png` and `<stem>.txt` (the caption) into `dir`.
pub fn write_sample(dir: &Path, stem: &str, image: &RgbImage, caption: &str) -> Result<()> {
    let png = dir.join(format!("{stem}.png"));
    image
        .save(&png)
        .map_err(|source| ShapesError::Image { path: png, source })?;
    let txt = dir.join(format!("{stem}.txt"));
    fs::write(&txt, caption).map_err(|source| ShapesError::Io { path: txt, source })
}

/// Writes the first `count` base-world images for `seed` into `dir` (`00000.png` +
/// `00000.txt`, ...) and `world.json`, ticking `progress` once per image.
pub fn write_base_dataset(
    dir: impl AsRef<Path>,
    config: &WorldConfig,
    seed: u64,
    count: usize,
    progress: &ProgressBar,
) -> Result<BaseManifest> {
    let dir = dir.as_ref();
    config.validate()?;
    create_dir(dir)?;
    let width = count.saturating_sub(1).to_string().len().max(5);
    progress.set_length(count as u64);
    for i in 0..count {
        let sample = base_sample(config, seed, i as u64)?;
        let image = sample.render(config)?;
        write_sample(dir, &format!("{i:0width$}"), &image, &sample.caption)?;
        progress.inc(1);
    }
    let manifest = BaseManifest {
        world: config.clone(),
        seed,
        count,
    };
    write_json(dir.join(BASE_MANIFEST), &manifest)?;
    tracing::info!(dir = %dir.display(), count, seed, "wrote base dataset");
    Ok(manifest)
}

/// Writes each concept's training images into `dir/<name>/` (`00.png` + `00.txt`, ...) and the
/// stream manifest `dir/stream.json`, ticking `progress` once per image.
pub fn write_concept_stream(
    dir: impl AsRef<Path>,
    stream: &ConceptStream,
    config: &WorldConfig,
    seed: u64,
    progress: &ProgressBar,
) -> Result<StreamManifest> {
    let dir = dir.as_ref();
    stream.validate()?;
    config.validate()?;
    create_dir(dir)?;
    progress.set_length((stream.concepts.len() * stream.images_per_concept) as u64);
    let width = stream
        .images_per_concept
        .saturating_sub(1)
        .to_string()
        .len()
        .max(2);
    for concept in &stream.concepts {
        let folder = dir.join(&concept.name);
        create_dir(&folder)?;
        for (i, sample) in stream
            .samples(&concept.name, config, seed)?
            .iter()
            .enumerate()
        {
            let image = sample.render(config)?;
            write_sample(&folder, &format!("{i:0width$}"), &image, &sample.caption)?;
            progress.inc(1);
        }
    }
    let manifest = StreamManifest {
        world: config.clone(),
        seed,
        stream: stream.clone(),
    };
    write_json(dir.join(STREAM_MANIFEST), &manifest)?;
    tracing::info!(dir = %dir.display(), concepts = stream.concepts.len(), seed, "wrote concept stream");
    Ok(manifest)
}
