//! The text-alignment (TA) detector: finds the objects of an image and says which base shape
//! and palette colour each one is, with simple features that survive blur and small sizes.
//!
//! - Objects: 8-connected components of the foreground (pixels at least 60 RGB units from the
//!   border's median colour), ignoring specks smaller than 6 pixels or 0.4% of the image.
//! - Colour: the most frequent palette colour among the component's pixels that lie within 70
//!   RGB units of a palette colour (anti-aliased edge pixels are mixtures and are skipped).
//! - Shape: measured on a 4x finer mask interpolated from the anti-aliased coverage. A
//!   component with a hole (an enclosed background region of at least 2 pixels and 5% of its
//!   area) is a ring; any other is the shape whose ideal outline has the nearest 3-, 4- and
//!   5-fold lobe strengths (harmonics of the outline's distance from the centroid against
//!   angle), which do not change with position, size or rotation and survive blur: a star has
//!   five lobes, a cross and a square four (the cross twice as deep), a triangle three, a
//!   circle none.

use super::mask::{bounds, components, estimate_background, holes, Mask, FOREGROUND_DISTANCE};
use crate::colour::rgb_distance;
use crate::colour::Colour;
use crate::scene::Position;
use crate::shape::Shape;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::f32::consts::PI;
use std::sync::OnceLock;

/// Components smaller than this many pixels are noise.
const MIN_OBJECT_PIXELS: usize = 6;
/// ... or smaller than this share of the image.
const MIN_OBJECT_SHARE: f32 = 0.004;
/// A pixel within this distance (RGB units) of a palette colour votes for it.
const CONFIDENT_DISTANCE: f32 = 70.0;
/// A hole must hold at least this share of its component's area (and at least 2 pixels).
const MIN_HOLE_SHARE: f32 = 0.05;
/// Silhouettes are measured on a mask this many times finer than the image, per axis.
const UPSAMPLE: i64 = 4;

/// The silhouette features of one detected object.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShapeFeatures {
    /// Pixels in the object.
    pub area: u32,
    /// Enclosed holes.
    pub holes: u32,
    /// Strength of 3-, 4- and 5-fold lobes: the magnitudes of harmonics 3, 4 and 5 of the
    /// outline's distance from the centroid as a function of angle, over its mean.
    pub lobes: [f32; 3],
}

/// One object found in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    /// The recognised shape.
    pub shape: Shape,
    /// The most frequent palette colour.
    pub colour: Colour,
    /// Share of the object's pixels voting for that colour.
    pub colour_share: f32,
    /// Centroid, in fractions of the image width and height.
    pub centroid: [f32; 2],
    /// The position word of the centroid.
    pub position: Position,
    /// The features the shape was recognised from.
    pub features: ShapeFeatures,
}

/// Every object found in an image, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The estimated background colour.
    pub background: [u8; 3],
    /// The objects.
    pub objects: Vec<DetectedObject>,
}

/// Finds and recognises the objects of `image`.
pub fn detect(image: &RgbImage) -> Detection {
    let background = estimate_background(image);
    let mask = Mask::foreground(image, background);
    let (w, h) = image.dimensions();
    let min_pixels = MIN_OBJECT_PIXELS.max((MIN_OBJECT_SHARE * (w * h) as f32).ceil() as usize);
    let objects = components(&mask)
        .into_iter()
        .take_while(|c| c.len() >= min_pixels)
        .map(|pixels| recognise(image, background, &mask, &pixels))
        .collect();
    Detection {
        background,
        objects,
    }
}

/// Measures one component and names its shape and colour.
fn recognise(
    image: &RgbImage,
    background: [u8; 3],
    foreground: &Mask,
    pixels: &[(u32, u32)],
) -> DetectedObject {
    let area = pixels.len() as f32;
    let mut votes = [0usize; Colour::ALL.len()];
    let mut all = [0usize; Colour::ALL.len()];
    for &(x, y) in pixels {
        let (colour, distance) = Colour::nearest(image.get_pixel(x, y).0);
        all[colour.index()] += 1;
        if distance <= CONFIDENT_DISTANCE {
            votes[colour.index()] += 1;
        }
    }
    // With no confident pixel at all (a washed-out object), every pixel votes.
    let ballot = if votes.iter().any(|&v| v > 0) {
        votes
    } else {
        all
    };
    let (best, count) = ballot
        .iter()
        .enumerate()
        .fold((0, 0), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    let colour = Colour::ALL[best];

    let features = silhouette(image, background, foreground, colour, pixels);
    let cx = pixels.iter().map(|p| p.0 as f32).sum::<f32>() / area;
    let cy = pixels.iter().map(|p| p.1 as f32).sum::<f32>() / area;
    let (w, h) = image.dimensions();
    let centroid = [(cx + 0.5) / w as f32, (cy + 0.5) / h as f32];
    DetectedObject {
        shape: classify_shape(&features),
        colour,
        colour_share: count as f32 / area,
        centroid,
        position: Position::of_point(centroid[0], centroid[1]),
        features,
    }
}

/// Silhouette features measured on a 4x finer mask: each pixel's coverage is its distance from
/// the background over the object colour's distance (exact for an anti-aliased edge between
/// the two), the coverage is interpolated bilinearly and cut at one half. At 32x32 a small star
/// is only ten pixels across, and whole pixels would fill its notches; the finer mask recovers
/// the sub-pixel edge that supersampling left in the grey levels.
fn silhouette(
    image: &RgbImage,
    background: [u8; 3],
    foreground: &Mask,
    colour: Colour,
    pixels: &[(u32, u32)],
) -> ShapeFeatures {
    let full = rgb_distance(colour.rgb(), background).max(FOREGROUND_DISTANCE);
    let (bx0, by0, bx1, by1) = bounds(pixels);
    // The box with a one-pixel frame, where edge pixels below the foreground cut still carry
    // coverage.
    let (x0, y0) = (bx0 as i64 - 1, by0 as i64 - 1);
    let (gw, gh) = ((bx1 - bx0 + 3) as i64, (by1 - by0 + 3) as i64);
    let member: std::collections::HashSet<(u32, u32)> = pixels.iter().copied().collect();
    let coverage = |gx: i64, gy: i64| -> f32 {
        let (x, y) = (x0 + gx, y0 + gy);
        if gx < 0 || gy < 0 || gx >= gw || gy >= gh || x < 0 || y < 0 {
            return 0.0;
        }
        let (x, y) = (x as u32, y as u32);
        if x >= image.width() || y >= image.height() {
            return 0.0;
        }
        // Pixels of other objects do not belong to this silhouette.
        if foreground.get(x as i64, y as i64) && !member.contains(&(x, y)) {
            return 0.0;
        }
        (rgb_distance(image.get_pixel(x, y).0, background) / full).min(1.0)
    };
    let mut fine = Vec::new();
    for j in 0..gh * UPSAMPLE {
        for i in 0..gw * UPSAMPLE {
            // Fine sample centre in grid-pixel index coordinates (pixel centres at integers).
            let fx = (i as f32 + 0.5) / UPSAMPLE as f32 - 0.5;
            let fy = (j as f32 + 0.5) / UPSAMPLE as f32 - 0.5;
            let (ix, iy) = (fx.floor() as i64, fy.floor() as i64);
            let (tx, ty) = (fx - ix as f32, fy - iy as f32);
            let value = coverage(ix, iy) * (1.0 - tx) * (1.0 - ty)
                + coverage(ix + 1, iy) * tx * (1.0 - ty)
                + coverage(ix, iy + 1) * (1.0 - tx) * ty
                + coverage(ix + 1, iy + 1) * tx * ty;
            if value >= 0.5 {
                fine.push((i as u32, j as u32));
            }
        }
    }
    if fine.is_empty() {
        // Too faint to have a half-covered sample: measure the whole pixels instead.
        fine = pixels.to_vec();
    }
    let area = fine.len() as f32;
    let cx = fine.iter().map(|p| p.0 as f32).sum::<f32>() / area;
    let cy = fine.iter().map(|p| p.1 as f32).sum::<f32>() / area;
    let min_hole = ((2.0f32).max(MIN_HOLE_SHARE * pixels.len() as f32)
        * (UPSAMPLE * UPSAMPLE) as f32)
        .ceil() as usize;
    let mut profile = [0.0f32; SECTORS];
    for &(x, y) in &fine {
        // Sample centres, plus half a sample to reach the outer edge.
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let sector = sector_of(dy.atan2(dx));
        profile[sector] = profile[sector].max(dx.hypot(dy) + 0.5);
    }
    ShapeFeatures {
        area: pixels.len() as u32,
        holes: holes(&fine, min_hole),
        lobes: harmonics(&profile),
    }
}

/// Angular sectors of the outline profile.
const SECTORS: usize = 36;

/// The sector holding `angle` (radians).
fn sector_of(angle: f32) -> usize {
    ((angle.rem_euclid(2.0 * PI) / (2.0 * PI) * SECTORS as f32) as usize).min(SECTORS - 1)
}

/// Harmonics 3, 4 and 5 of an outline profile (the farthest outline point in each of 36
/// sectors, as a function of the sector's angle), over the profile's sum. Rotating the shape
/// shifts the profile, which leaves these magnitudes unchanged.
fn harmonics(profile: &[f32; SECTORS]) -> [f32; 3] {
    let total: f32 = profile.iter().sum();
    [3.0f32, 4.0, 5.0].map(|k| {
        let (mut re, mut im) = (0.0, 0.0);
        for (b, r) in profile.iter().enumerate() {
            let theta = (b as f32 + 0.5) / SECTORS as f32 * 2.0 * PI;
            re += r * (k * theta).cos();
            im += r * (k * theta).sin();
        }
        if total > 0.0 {
            re.hypot(im) / total
        } else {
            0.0
        }
    })
}

/// The lobe harmonics of a shape's ideal outline, measured like an image's: the farthest
/// outline point in each sector (of 32 rays per sector, from [`Shape::outline_radius`]).
pub fn lobe_prototype(shape: Shape) -> [f32; 3] {
    const RAYS: usize = 32;
    let mut profile = [0.0f32; SECTORS];
    for (s, value) in profile.iter_mut().enumerate() {
        *value = (0..RAYS)
            .map(|r| {
                let angle = (s as f32 + (r as f32 + 0.5) / RAYS as f32) / SECTORS as f32 * 2.0 * PI;
                shape.outline_radius(angle)
            })
            .fold(0.0, f32::max);
    }
    harmonics(&profile)
}

/// Prototypes of the hole-free shapes, computed once.
fn prototypes() -> &'static [(Shape, [f32; 3])] {
    static PROTOTYPES: OnceLock<Vec<(Shape, [f32; 3])>> = OnceLock::new();
    PROTOTYPES.get_or_init(|| {
        Shape::ALL
            .iter()
            .filter(|&&s| s != Shape::Ring)
            .map(|&s| (s, lobe_prototype(s)))
            .collect()
    })
}

/// The shape for a set of silhouette features: a ring if it has a hole, otherwise the shape
/// whose ideal outline has the nearest lobe harmonics ([`lobe_prototype`]).
pub fn classify_shape(features: &ShapeFeatures) -> Shape {
    if features.holes > 0 {
        return Shape::Ring;
    }
    prototypes()
        .iter()
        .map(|(s, p)| {
            let d: f32 = p
                .iter()
                .zip(&features.lobes)
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            (*s, d)
        })
        .fold((Shape::Circle, f32::INFINITY), |b, c| {
            if c.1 < b.1 {
                c
            } else {
                b
            }
        })
        .0
}

/// What a prompt asks to see: a shape, optionally with a colour and a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The shape asked for.
    pub shape: Shape,
    /// The colour asked for, if any (concept prompts name none).
    pub colour: Option<Colour>,
    /// The position asked for, if any.
    pub position: Option<Position>,
}

/// Whether an image shows what a prompt asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextAlignment {
    /// Some object has the shape asked for.
    pub shape_present: bool,
    /// Some object has the colour asked for (`None` when no colour was asked for).
    pub colour_present: Option<bool>,
    /// One object has both the shape and the colour asked for: the TA verdict.
    pub aligned: bool,
    /// An aligned object sits at the position asked for (`None` when no position was asked
    /// for); reported apart from `aligned`.
    pub position_correct: Option<bool>,
}

/// Checks `image` against `target` with [`detect`].
pub fn text_alignment(image: &RgbImage, target: &Target) -> TextAlignment {
    let detection = detect(image);
    let colour_ok = |o: &DetectedObject| target.colour.is_none_or(|c| o.colour == c);
    let matching: Vec<&DetectedObject> = detection
        .objects
        .iter()
        .filter(|o| o.shape == target.shape && colour_ok(o))
        .collect();
    TextAlignment {
        shape_present: detection.objects.iter().any(|o| o.shape == target.shape),
        colour_present: target
            .colour
            .map(|c| detection.objects.iter().any(|o| o.colour == c)),
        aligned: !matching.is_empty(),
        position_correct: target
            .position
            .map(|p| matching.iter().any(|o| o.position == p)),
    }
}
