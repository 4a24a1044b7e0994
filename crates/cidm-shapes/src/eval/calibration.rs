//! How well the detector reads the renderer's own clean images: per-class confusion of shapes
//! and colours over random base-world renders. A report of a generative model's text alignment
//! is only as good as this, so the benchmark states it beside its results.

use super::detector::{detect, DetectedObject};
use crate::colour::Colour;
use crate::error::Result;
use crate::shape::Shape;
use crate::world::{base_sample, WorldConfig};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Detector accuracy on base-world renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorReport {
    /// Images rendered.
    pub images: usize,
    /// Objects drawn in them.
    pub objects: usize,
    /// `shape_confusion[true][predicted]`, rows and the first six columns in [`Shape::ALL`]
    /// order; the last column counts objects the detector missed.
    pub shape_confusion: Vec<Vec<u32>>,
    /// `colour_confusion[true][predicted]`, rows in [`Colour::BASE`] order, columns in
    /// [`Colour::ALL`] order plus a last "missed" column.
    pub colour_confusion: Vec<Vec<u32>>,
    /// Share of objects whose shape was recognised.
    pub shape_accuracy: f32,
    /// Share of objects whose colour was recognised.
    pub colour_accuracy: f32,
    /// Share of objects with both right: the rate at which text alignment is correct.
    pub accuracy: f32,
}

/// Renders base-world images `0..images` for `seed` and matches each drawn object with the
/// detected object whose centroid is nearest its centre (within its radius).
pub fn detector_report(config: &WorldConfig, seed: u64, images: usize) -> Result<DetectorReport> {
    let mut shape_confusion = vec![vec![0u32; Shape::ALL.len() + 1]; Shape::ALL.len()];
    let mut colour_confusion = vec![vec![0u32; Colour::ALL.len() + 1]; Colour::BASE.len()];
    let (mut objects, mut shapes_ok, mut colours_ok, mut both_ok) = (0usize, 0, 0, 0);
    for i in 0..images {
        let sample = base_sample(config, seed, i as u64)?;
        let detection = detect(&sample.render(config)?);
        for (item, object) in sample.items.iter().zip(&sample.scene.objects) {
            objects += 1;
            let pose = object.pose;
            let found: Option<&DetectedObject> = detection
                .objects
                .iter()
                .map(|d| (d, (d.centroid[0] - pose.x).hypot(d.centroid[1] - pose.y)))
                .filter(|(_, dist)| *dist <= pose.radius)
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(d, _)| d);
            let colour_row = Colour::BASE
                .iter()
                .position(|&c| c == item.colour)
                .unwrap_or_default();
            let (shape_col, colour_col) = found
                .map_or((Shape::ALL.len(), Colour::ALL.len()), |d| {
                    (d.shape.index(), d.colour.index())
                });
            shape_confusion[item.shape.index()][shape_col] += 1;
            colour_confusion[colour_row][colour_col] += 1;
            let shape_ok = found.is_some_and(|d| d.shape == item.shape);
            let colour_ok = found.is_some_and(|d| d.colour == item.colour);
            shapes_ok += usize::from(shape_ok);
            colours_ok += usize::from(colour_ok);
            both_ok += usize::from(shape_ok && colour_ok);
        }
    }
    let rate = |n: usize| {
        if objects == 0 {
            0.0
        } else {
            n as f32 / objects as f32
        }
    };
    Ok(DetectorReport {
        images,
        objects,
        shape_confusion,
        colour_confusion,
        shape_accuracy: rate(shapes_ok),
        colour_accuracy: rate(colours_ok),
        accuracy: rate(both_ok),
    })
}

impl DetectorReport {
    /// The accuracies and the shape confusion matrix as markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "{} objects in {} images: shape {:.1}%, colour {:.1}%, both {:.1}%\n\n| true \\ detected |",
            self.objects,
            self.images,
            100.0 * self.shape_accuracy,
            100.0 * self.colour_accuracy,
            100.0 * self.accuracy
        );
        for s in Shape::ALL {
            let _ = write!(out, " {s} |");
        }
        out.push_str(" missed |\n|---|");
        out.push_str(&"---:|".repeat(Shape::ALL.len() + 1));
        out.push('\n');
        for (shape, row) in Shape::ALL.iter().zip(&self.shape_confusion) {
            let _ = write!(out, "| {shape} |");
            for v in row {
                let _ = write!(out, " {v} |");
            }
            out.push('\n');
        }
        out
    }
}
