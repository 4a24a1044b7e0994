//! How an object is painted: one colour for base-world objects, or a two-tone texture for
//! personal concepts. Patterns are defined in the object frame (the unit disc), so they turn and
//! scale with the object, as a real object's texture does.

use crate::colour::Colour;
use serde::{Deserialize, Serialize};

/// The paint of an object, as a function of the object-frame point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Pattern {
    /// One colour.
    Solid {
        /// The colour.
        colour: Colour,
    },
    /// A checkerboard of `cells` x `cells` squares over the unit disc's bounding box.
    Checkered {
        /// Colour of the cell holding the top-left corner.
        a: Colour,
        /// The other colour.
        b: Colour,
        /// Cells across the object's diameter.
        cells: u32,
    },
    /// Parallel stripes of equal width.
    Striped {
        /// Colour of the first stripe.
        a: Colour,
        /// The other colour.
        b: Colour,
        /// Stripes across the object's diameter.
        stripes: u32,
        /// Direction across the stripes, in degrees from the object's `u` axis.
        angle_deg: f32,
    },
    /// A grid of round dots on a base colour.
    Dotted {
        /// The base colour.
        base: Colour,
        /// The colour of the dots.
        dot: Colour,
        /// Dots across the object's diameter.
        grid: u32,
    },
    /// Concentric bands of equal width, like a target.
    Concentric {
        /// Colour of the central band.
        a: Colour,
        /// The other colour.
        b: Colour,
        /// Bands from the centre to the rim.
        bands: u32,
    },
}

/// Dot radius as a fraction of the dot grid's cell side.
const DOT_RADIUS: f32 = 0.3;

impl Pattern {
    /// The colour at the object-frame point `(u, v)`.
    pub fn colour_at(&self, u: f32, v: f32) -> Colour {
        let pick = |a: Colour, b: Colour, index: i64| if index.rem_euclid(2) == 0 { a } else { b };
        match *self {
            Pattern::Solid { colour } => colour,
            Pattern::Checkered { a, b, cells } => {
                let n = cells as f32 / 2.0;
                let i = ((u + 1.0) * n).floor() as i64;
                let j = ((v + 1.0) * n).floor() as i64;
                pick(a, b, i + j)
            }
            Pattern::Striped {
                a,
                b,
                stripes,
                angle_deg,
            } => {
                let (sin, cos) = angle_deg.to_radians().sin_cos();
                let t = u * cos + v * sin;
                pick(a, b, ((t + 1.0) * stripes as f32 / 2.0).floor() as i64)
            }
            Pattern::Dotted { base, dot, grid } => {
                let n = grid as f32 / 2.0;
                let fu = ((u + 1.0) * n).fract() - 0.5;
                let fv = ((v + 1.0) * n).fract() - 0.5;
                if fu * fu + fv * fv <= DOT_RADIUS * DOT_RADIUS {
                    dot
                } else {
                    base
                }
            }
            Pattern::Concentric { a, b, bands } => {
                let r = (u * u + v * v).sqrt();
                pick(a, b, (r * bands as f32).floor() as i64)
            }
        }
    }

    /// The colours this pattern paints with (one for solid, two otherwise).
    pub fn colours(&self) -> Vec<Colour> {
        match *self {
            Pattern::Solid { colour } => vec![colour],
            Pattern::Checkered { a, b, .. }
            | Pattern::Striped { a, b, .. }
            | Pattern::Concentric { a, b, .. } => vec![a, b],
            Pattern::Dotted { base, dot, .. } => vec![base, dot],
        }
    }

    /// Checks that the pattern's counts are positive and its angle finite.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let count = match *self {
            Pattern::Solid { .. } => 1,
            Pattern::Checkered { cells, .. } => cells,
            Pattern::Striped {
                stripes, angle_deg, ..
            } => {
                if !angle_deg.is_finite() {
                    return Err(crate::ShapesError::invalid(
                        "stripe angle",
                        "must be finite",
                    ));
                }
                stripes
            }
            Pattern::Dotted { grid, .. } => grid,
            Pattern::Concentric { bands, .. } => bands,
        };
        if count == 0 || count > 64 {
            return Err(crate::ShapesError::invalid(
                "pattern count",
                format!("{count} is outside 1..=64"),
            ));
        }
        Ok(())
    }
}
