//! A scene is plain data (image size, background, objects with poses) and rendering is a pure
//! function of it: the same scene always gives the same pixels, on every machine, because the
//! background's texture comes from a hash of the pixel coordinates rather than from a random
//! generator's state. Edges are anti-aliased by supersampling.

use crate::colour::Colour;
use crate::error::{Result, ShapesError};
use crate::pattern::Pattern;
use crate::shape::Shape;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Smallest image side the renderer accepts.
pub const MIN_SIZE: u32 = 8;
/// Largest image side the renderer accepts.
pub const MAX_SIZE: u32 = 1024;
/// Largest supersampling factor (per axis) the renderer accepts.
pub const MAX_SUPERSAMPLE: u32 = 8;

/// Where an object sits, in the words captions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// Centre left of the middle of the image.
    Left,
    /// Centre right of the middle.
    Right,
    /// Centre above the middle.
    Top,
    /// Centre below the middle.
    Bottom,
    /// Centre within 0.1 image sides of the middle on both axes.
    Center,
}

/// Distance from the middle (in image sides) below which a point counts as the center.
pub(crate) const CENTER_RADIUS: f32 = 0.1;

impl Position {
    /// Every position.
    pub const ALL: [Position; 5] = [
        Position::Left,
        Position::Right,
        Position::Top,
        Position::Bottom,
        Position::Center,
    ];

    /// The single word, e.g. "left".
    pub fn word(self) -> &'static str {
        match self {
            Position::Left => "left",
            Position::Right => "right",
            Position::Top => "top",
            Position::Bottom => "bottom",
            Position::Center => "center",
        }
    }

    /// The phrase used in captions, e.g. "on the left", "in the center".
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
            Position::Center => "in the center",
        }
    }

    /// The position word for a point given as fractions of the image side: the center when
    /// both offsets from the middle are below 0.1, otherwise the side of the larger offset.
    /// The samplers place objects so that this rule names the position they chose.
    pub fn of_point(x: f32, y: f32) -> Position {
        let (dx, dy) = (x - 0.5, y - 0.5);
        if dx.abs().max(dy.abs()) < CENTER_RADIUS {
            Position::Center
        } else if dx.abs() >= dy.abs() {
            if dx < 0.0 {
                Position::Left
            } else {
                Position::Right
            }
        } else if dy < 0.0 {
            Position::Top
        } else {
            Position::Bottom
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Placement of one object, in fractions of the image side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Centre, from the left edge.
    pub x: f32,
    /// Centre, from the top edge.
    pub y: f32,
    /// Circumscribed radius: every shape lies inside this circle.
    pub radius: f32,
    /// Clockwise rotation of the object frame, in radians.
    pub rotation: f32,
}

impl Pose {
    /// Whether the circumscribed circle lies inside the image.
    pub fn is_inside(&self) -> bool {
        self.x - self.radius >= 0.0
            && self.y - self.radius >= 0.0
            && self.x + self.radius <= 1.0
            && self.y + self.radius <= 1.0
    }

    /// The position word of the centre (see [`Position::of_point`]).
    pub fn position(&self) -> Position {
        Position::of_point(self.x, self.y)
    }
}

/// One painted shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// The silhouette.
    pub shape: Shape,
    /// The paint.
    pub pattern: Pattern,
    /// Where it sits.
    pub pose: Pose,
}

impl Object {
    /// The palette colour at image point `(px, py)` (in pixels of an image `size` wide), or
    /// `None` when the point is outside the object.
    fn colour_at(&self, px: f32, py: f32, size: f32) -> Option<Colour> {
        let scale = self.pose.radius * size;
        let dx = (px - self.pose.x * size) / scale;
        let dy = (py - self.pose.y * size) / scale;
        if dx * dx + dy * dy > 1.0 {
            return None;
        }
        let (sin, cos) = self.pose.rotation.sin_cos();
        // Undo the clockwise rotation (y points down) to reach the object frame.
        let u = dx * cos + dy * sin;
        let v = -dx * sin + dy * cos;
        self.shape
            .contains(u, v)
            .then(|| self.pattern.colour_at(u, v))
    }
}

/// A light neutral background with a gentle linear gradient and per-pixel grain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Background {
    /// Colour at the middle of the image.
    pub rgb: [u8; 3],
    /// Change in RGB units from the middle to the right edge (`[0]`) and to the bottom edge (`[1]`).
    pub gradient: [f32; 2],
    /// Amplitude of the grain, in RGB units (uniform in `-noise..=noise`).
    pub noise: f32,
    /// Seed of the grain's hash.
    pub seed: u64,
}

impl Background {
    /// The background colour at pixel `(x, y)` of an image `size` wide.
    fn colour_at(&self, x: u32, y: u32, size: u32) -> [f32; 3] {
        let fx = ((x as f32 + 0.5) / size as f32 - 0.5) * 2.0;
        let fy = ((y as f32 + 0.5) / size as f32 - 0.5) * 2.0;
        let shade = self.gradient[0] * fx + self.gradient[1] * fy;
        let mut out = [0.0; 3];
        for (c, value) in out.iter_mut().enumerate() {
            let hash =
                splitmix64(self.seed ^ ((x as u64) << 40) ^ ((y as u64) << 20) ^ (c as u64 + 1));
            let grain = ((hash >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0) * self.noise;
            *value = self.rgb[c] as f32 + shade + grain;
        }
        out
    }
}

/// SplitMix64: a small, well-mixed hash, so the grain needs no generator state.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything needed to draw one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Image side in pixels (images are square).
    pub size: u32,
    /// The background.
    pub background: Background,
    /// Objects, drawn in order (later ones on top).
    pub objects: Vec<Object>,
}

impl Scene {
    /// Checks sizes, finiteness and pattern counts.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(ShapesError::invalid(
                "image size",
                format!("{} is outside {MIN_SIZE}..={MAX_SIZE}", self.size),
            ));
        }
        let bg = &self.background;
        if !(bg.noise.is_finite() && bg.noise >= 0.0 && bg.gradient.iter().all(|g| g.is_finite())) {
            return Err(ShapesError::invalid(
                "background",
                "gradient and noise must be finite, noise non-negative",
            ));
        }
        for (i, object) in self.objects.iter().enumerate() {
            let p = &object.pose;
            let finite = [p.x, p.y, p.radius, p.rotation]
                .iter()
                .all(|v| v.is_finite());
            if !finite || p.radius <= 0.0 || p.radius > 1.0 {
                return Err(ShapesError::invalid(
                    format!("pose of object {i}"),
                    "values must be finite and the radius in (0, 1]",
                ));
            }
            object.pattern.validate()?;
        }
        Ok(())
    }

    /// Draws the scene, averaging `supersample` x `supersample` points per pixel.
    pub fn render(&self, supersample: u32) -> Result<RgbImage> {
        self.validate()?;
        if !(1..=MAX_SUPERSAMPLE).contains(&supersample) {
            return Err(ShapesError::invalid(
                "supersampling factor",
                format!("{supersample} is outside 1..={MAX_SUPERSAMPLE}"),
            ));
        }
        let size = self.size;
        let n = supersample as f32;
        let samples = (supersample * supersample) as f32;
        let mut image = RgbImage::new(size, size);
        for y in 0..size {
            for x in 0..size {
                let bg = self.background.colour_at(x, y, size);
                let mut sum = [0.0f32; 3];
                for sy in 0..supersample {
                    for sx in 0..supersample {
                        let px = x as f32 + (sx as f32 + 0.5) / n;
                        let py = y as f32 + (sy as f32 + 0.5) / n;
                        let colour = self
                            .objects
                            .iter()
                            .rev()
                            .find_map(|o| o.colour_at(px, py, size as f32))
                            .map(|c| c.rgb().map(|v| v as f32))
                            .unwrap_or(bg);
                        for c in 0..3 {
                            sum[c] += colour[c];
                        }
                    }
                }
                let pixel = sum.map(|s| (s / samples).round().clamp(0.0, 255.0) as u8);
                image.put_pixel(x, y, Rgb(pixel));
            }
        }
        Ok(image)
    }
}
