//! Region specs: a prompt and a normalised box, parsed from the command-line form
//! `"a <dog1> dog@0.0,0.0,0.5,1.0"` (`PROMPT@x0,y0,x1,y1`, x to the right, y down, the image
//! spanning `[0, 1]` on both axes).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{RegionError, Result};

/// The most regions a generation accepts by default: each adds one UNet evaluation per step.
pub const MAX_REGIONS: usize = 8;

/// A box `[x0, y0, x1, y1]` in normalised image coordinates, `0 <= x0 < x1 <= 1` and
/// `0 <= y0 < y1 <= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "[f64; 4]", into = "[f64; 4]")]
pub struct BoundingBox {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl BoundingBox {
    /// The whole image.
    pub const FULL: BoundingBox = BoundingBox {
        x0: 0.0,
        y0: 0.0,
        x1: 1.0,
        y1: 1.0,
    };

    /// A box; errors when a coordinate is outside `[0, 1]` or not finite, or the box is
    /// inverted or empty.
    pub fn new(x0: f64, y0: f64, x1: f64, y1: f64) -> Result<Self> {
        for (name, value) in [("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(RegionError::OutOfRange { name, value });
            }
        }
        for (axis, start, end) in [('x', x0, x1), ('y', y0, y1)] {
            if end < start {
                return Err(RegionError::Inverted { axis, start, end });
            }
            if end == start {
                return Err(RegionError::EmptyBox { axis, value: start });
            }
        }
        Ok(Self { x0, y0, x1, y1 })
    }

    /// `[x0, y0, x1, y1]`.
    pub fn coords(&self) -> [f64; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }
}

impl TryFrom<[f64; 4]> for BoundingBox {
    type Error = RegionError;

    fn try_from([x0, y0, x1, y1]: [f64; 4]) -> Result<Self> {
        Self::new(x0, y0, x1, y1)
    }
}

impl From<BoundingBox> for [f64; 4] {
    fn from(b: BoundingBox) -> Self {
        b.coords()
    }
}

impl FromStr for BoundingBox {
    type Err = RegionError;

    /// `x0,y0,x1,y1`, spaces around the numbers allowed.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [x0, y0, x1, y1] = parts[..] else {
            return Err(RegionError::BoxArity {
                text: s.to_string(),
                found: parts.len(),
            });
        };
        let number = |t: &str| {
            t.parse::<f64>()
                .map_err(|_| RegionError::Number(t.to_string()))
        };
        Self::new(number(x0)?, number(y0)?, number(x1)?, number(y1)?)
    }
}

impl fmt::Display for BoundingBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x0, self.y0, self.x1, self.y1)
    }
}

/// One region: the prompt that describes it and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionSpec {
    /// The region's prompt, e.g. `a <dog1> dog`.
    pub prompt: String,
    /// The region's box.
    pub bbox: BoundingBox,
}

impl FromStr for RegionSpec {
    type Err = RegionError;

    /// `PROMPT@x0,y0,x1,y1`; the last `@` separates the box, so prompts may contain `@`.
    fn from_str(s: &str) -> Result<Self> {
        let (prompt, bbox) = s
            .rsplit_once('@')
            .ok_or_else(|| RegionError::MissingBox(s.to_string()))?;
        let prompt = prompt.trim();
        if prompt.is_empty() {
            return Err(RegionError::EmptyPrompt(s.to_string()));
        }
        Ok(Self {
            prompt: prompt.to_string(),
            bbox: bbox.parse()?,
        })
    }
}

impl fmt::Display for RegionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.prompt, self.bbox)
    }
}

/// Parses command-line region specs; errors on the first malformed one or when there are
/// more than `limit` (e.g. [`MAX_REGIONS`]).
pub fn parse_regions<S: AsRef<str>>(specs: &[S], limit: usize) -> Result<Vec<RegionSpec>> {
    if specs.len() > limit {
        return Err(RegionError::TooManyRegions {
            found: specs.len(),
            limit,
        });
    }
    specs.iter().map(|s| s.as_ref().parse()).collect()
}
