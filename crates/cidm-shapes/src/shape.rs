//! The six base shapes, each defined in its own object frame: the unit disc around the object's
//! centre, with `v` pointing down as in image rows. Every shape lies inside the unit circle, so a
//! pose's radius is the circumscribed radius and two objects whose circles do not meet cannot
//! touch. The shapes are bold (thick arms, a fat star) so they stay readable at 32x32.

use serde::{Deserialize, Serialize};
use std::f32::consts::{FRAC_1_SQRT_2, PI};
use std::fmt;

/// Half side of the square: its corners lie on the unit circle.
const SQUARE_HALF: f32 = FRAC_1_SQRT_2;
/// Inner radius of the five-pointed star (outer radius 1); 0.5 keeps the points thick.
const STAR_INNER: f32 = 0.5;
/// Inner radius of the ring (outer radius 1): the hole is a quarter of the disc's area.
const RING_INNER: f32 = 0.5;
/// Half width of each arm of the cross.
const CROSS_HALF_WIDTH: f32 = 0.32;
/// Half length of each arm of the cross; its corners (0.94, 0.32) lie just inside the unit circle.
const CROSS_HALF_LENGTH: f32 = 0.94;

/// A base shape; its [`Shape::word`] is a single CLIP token, so it can serve as a class word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A disc of radius 1.
    Circle,
    /// An axis-aligned square inscribed in the unit circle.
    Square,
    /// An equilateral triangle pointing up, inscribed in the unit circle.
    Triangle,
    /// A five-pointed star pointing up, outer radius 1, inner radius 0.5.
    Star,
    /// An annulus between radii 0.5 and 1.
    Ring,
    /// A plus sign with arms 0.64 wide reaching 0.94 from the centre.
    Cross,
}

impl Shape {
    /// Every shape, in the order of the detector's confusion matrix.
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Ring,
        Shape::Cross,
    ];

    /// The word used in captions and as a concept's class word.
    pub fn word(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
        }
    }

    /// Position of this shape in [`Shape::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the object-frame point `(u, v)` lies inside the shape.
    pub fn contains(self, u: f32, v: f32) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            Shape::Square => u.abs() <= SQUARE_HALF && v.abs() <= SQUARE_HALF,
            Shape::Triangle => triangle_contains(u, v),
            Shape::Star => star_contains(u, v),
            Shape::Ring => {
                let r2 = u * u + v * v;
                (RING_INNER * RING_INNER..=1.0).contains(&r2)
            }
            Shape::Cross => {
                let (a, b) = (u.abs(), v.abs());
                (a <= CROSS_HALF_WIDTH && b <= CROSS_HALF_LENGTH)
                    || (b <= CROSS_HALF_WIDTH && a <= CROSS_HALF_LENGTH)
            }
        }
    }

    /// Distance from the centre to the shape's outer boundary along the ray at `angle`
    /// (radians, clockwise from the `u` axis since `v` points down), found by bisection to
    /// 1e-5. Every shape is star-shaped around its centre, so the ray leaves it once.
    pub fn outline_radius(self, angle: f32) -> f32 {
        let (sin, cos) = angle.sin_cos();
        let (mut inside, mut outside) = (
            match self {
                Shape::Ring => RING_INNER,
                _ => 0.0,
            },
            1.0001f32,
        );
        while outside - inside > 1e-5 {
            let mid = 0.5 * (inside + outside);
            if self.contains(mid * cos, mid * sin) {
                inside = mid;
            } else {
                outside = mid;
            }
        }
        inside
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Equilateral triangle with vertices at angles -90, 30 and 150 degrees on the unit circle.
fn triangle_contains(u: f32, v: f32) -> bool {
    // Bottom edge at v = 0.5; the two slanted edges pass through the apex (0, -1).
    let slope = 3f32.sqrt();
    v <= 0.5 && v >= -1.0 + slope * u.abs()
}

/// Even-odd point-in-polygon test against the ten-vertex star outline.
fn star_contains(u: f32, v: f32) -> bool {
    if u * u + v * v > 1.0 {
        return false;
    }
    let vertex = |k: usize| {
        let angle = -PI / 2.0 + k as f32 * PI / 5.0;
        let radius = if k.is_multiple_of(2) { 1.0 } else { STAR_INNER };
        (radius * angle.cos(), radius * angle.sin())
    };
    let mut inside = false;
    for k in 0..10 {
        let (x0, y0) = vertex(k);
        let (x1, y1) = vertex((k + 1) % 10);
        if (y0 > v) != (y1 > v) && u < x0 + (v - y0) * (x1 - x0) / (y1 - y0) {
            inside = !inside;
        }
    }
    inside
}
