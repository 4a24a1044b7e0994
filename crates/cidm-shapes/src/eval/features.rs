//! The fixed feature space of image alignment (IA). An image becomes five histograms of its
//! foreground (pixels away from the estimated background), each scaled to unit length and
//! weighted:
//!
//! | block        | bins | weight | what it sees                                               |
//! |--------------|------|--------|------------------------------------------------------------|
//! | colour       | 10   | 1.0    | share of each palette colour (nearest-colour quantisation) |
//! | adjacency    | 55   | 1.0    | which palette colours touch (unordered 4-neighbour pairs)  |
//! | runs         | 6    | 0.6    | lengths of same-colour runs along rows and columns, relative to the object's size (texture scale) |
//! | orientation  | 12   | 0.6    | silhouette edge directions (Sobel on the coverage), rotated so the strongest bin is first |
//! | radial       | 8    | 0.6    | distances of foreground pixels from their centroid, relative to the farthest |
//!
//! Because every block has unit length, the cosine of two feature vectors is the
//! weight-squared mean of the five block cosines. Every block is invariant to position and
//! scale, and all but runs to rotation, so a concept's poses land close together, while
//! palettes (colour, adjacency), textures (adjacency, runs) and silhouettes (orientation,
//! radial) set concepts apart.

use super::mask::{estimate_background, Mask};
use crate::colour::{rgb_distance, Colour};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::f32::consts::PI;

const COLOURS: usize = Colour::ALL.len();
const PAIRS: usize = COLOURS * (COLOURS + 1) / 2;
/// Upper edges of the relative run-length bins (the last bin is open).
const RUN_EDGES: [f32; 5] = [0.1, 0.2, 0.3, 0.45, 0.65];
const ORIENTATION_BINS: usize = 12;
const RADIAL_BINS: usize = 8;
/// Distance from the background (RGB units) at which the coverage reaches 1; every palette
/// colour is farther than this, so the coverage is the silhouette and not the texture.
const COVERAGE_FULL: f32 = 120.0;

/// Block sizes and weights, in feature order.
const BLOCKS: [(usize, f32); 5] = [
    (COLOURS, 1.0),
    (PAIRS, 1.0),
    (RUN_EDGES.len() + 1, 0.6),
    (ORIENTATION_BINS, 0.6),
    (RADIAL_BINS, 0.6),
];

/// A point in the image-alignment feature space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// The weighted, concatenated blocks (see the module docs).
    pub values: Vec<f32>,
}

impl Features {
    /// Cosine similarity, in [0, 1] since every entry is non-negative; 0 when either image has
    /// no foreground.
    pub fn cosine(&self, other: &Features) -> f32 {
        let dot: f32 = self
            .values
            .iter()
            .zip(&other.values)
            .map(|(a, b)| a * b)
            .sum();
        let na: f32 = self.values.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nb: f32 = other.values.iter().map(|b| b * b).sum::<f32>().sqrt();
        if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            (dot / (na * nb)).clamp(0.0, 1.0)
        }
    }
}

/// The image-alignment features of an image.
pub fn image_features(image: &RgbImage) -> Features {
    let background = estimate_background(image);
    let mask = Mask::foreground(image, background);
    let (w, h) = (image.width() as i64, image.height() as i64);
    let quantised: Vec<Option<usize>> = image
        .pixels()
        .zip(&mask.on)
        .map(|(p, &on)| on.then(|| Colour::nearest(p.0).0.index()))
        .collect();
    let at = |x: i64, y: i64| quantised[(y * w + x) as usize];

    let mut colour = vec![0.0f32; COLOURS];
    for c in quantised.iter().flatten() {
        colour[*c] += 1.0;
    }
    let area: f32 = colour.iter().sum();
    let total = BLOCKS.iter().map(|b| b.0).sum();
    if area == 0.0 {
        return Features {
            values: vec![0.0; total],
        };
    }

    let mut adjacency = vec![0.0f32; PAIRS];
    for y in 0..h {
        for x in 0..w {
            let Some(a) = at(x, y) else { continue };
            for (nx, ny) in [(x + 1, y), (x, y + 1)] {
                if nx < w && ny < h {
                    if let Some(b) = at(nx, ny) {
                        let (i, j) = (a.min(b), a.max(b));
                        adjacency[i * (2 * COLOURS - i + 1) / 2 + (j - i)] += 1.0;
                    }
                }
            }
        }
    }

    let mut runs = vec![0.0f32; RUN_EDGES.len() + 1];
    let size = area.sqrt().max(1.0);
    let mut add_run = |len: usize| {
        if len > 0 {
            let rel = len as f32 / size;
            let bin = RUN_EDGES
                .iter()
                .position(|&e| rel < e)
                .unwrap_or(RUN_EDGES.len());
            runs[bin] += len as f32;
        }
    };
    for (outer, inner, transpose) in [(h, w, false), (w, h, true)] {
        for o in 0..outer {
            let (mut current, mut len) = (None, 0);
            for i in 0..inner {
                let c = if transpose { at(o, i) } else { at(i, o) };
                if c.is_some() && c == current {
                    len += 1;
                } else {
                    add_run(len);
                    (current, len) = (c, usize::from(c.is_some()));
                }
            }
            add_run(len);
        }
    }

    let coverage: Vec<f32> = image
        .pixels()
        .map(|p| (rgb_distance(p.0, background) / COVERAGE_FULL).min(1.0))
        .collect();
    let cov = |x: i64, y: i64| coverage[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize];
    let mut orientation = vec![0.0f32; ORIENTATION_BINS];
    for y in 0..h {
        for x in 0..w {
            let gx = cov(x + 1, y - 1) + 2.0 * cov(x + 1, y) + cov(x + 1, y + 1)
                - cov(x - 1, y - 1)
                - 2.0 * cov(x - 1, y)
                - cov(x - 1, y + 1);
            let gy = cov(x - 1, y + 1) + 2.0 * cov(x, y + 1) + cov(x + 1, y + 1)
                - cov(x - 1, y - 1)
                - 2.0 * cov(x, y - 1)
                - cov(x + 1, y - 1);
            let magnitude = (gx * gx + gy * gy).sqrt();
            if magnitude > 0.0 {
                let angle = gy.atan2(gx).rem_euclid(PI);
                let bin =
                    ((angle / PI * ORIENTATION_BINS as f32) as usize).min(ORIENTATION_BINS - 1);
                orientation[bin] += magnitude;
            }
        }
    }
    let strongest = orientation
        .iter()
        .enumerate()
        .fold(
            (0, 0.0),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0;
    orientation.rotate_left(strongest);

    let radial = radial_histogram(&quantised, w, area);

    let mut values = Vec::with_capacity(total);
    for (block, (len, weight)) in [colour, adjacency, runs, orientation, radial]
        .into_iter()
        .zip(BLOCKS)
    {
        debug_assert_eq!(block.len(), len);
        let norm = block.iter().map(|v| v * v).sum::<f32>().sqrt();
        let scale = if norm > 0.0 { weight / norm } else { 0.0 };
        values.extend(block.iter().map(|v| v * scale));
    }
    Features { values }
}

/// Histogram of foreground pixels' distances from their centroid, relative to the farthest.
fn radial_histogram(quantised: &[Option<usize>], width: i64, area: f32) -> Vec<f32> {
    let points: Vec<(f32, f32)> = quantised
        .iter()
        .enumerate()
        .filter(|(_, q)| q.is_some())
        .map(|(i, _)| ((i as i64 % width) as f32, (i as i64 / width) as f32))
        .collect();
    let cx = points.iter().map(|p| p.0).sum::<f32>() / area;
    let cy = points.iter().map(|p| p.1).sum::<f32>() / area;
    let distances: Vec<f32> = points
        .iter()
        .map(|(x, y)| ((x - cx).powi(2) + (y - cy).powi(2)).sqrt())
        .collect();
    let far = distances.iter().cloned().fold(0.0f32, f32::max).max(1.0);
    let mut radial = vec![0.0f32; RADIAL_BINS];
    for d in distances {
        radial[((d / far * RADIAL_BINS as f32) as usize).min(RADIAL_BINS - 1)] += 1.0;
    }
    radial
}
