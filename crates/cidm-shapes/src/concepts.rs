//! The concept stream: personal objects learned one task at a time, each a distinctive shape,
//! palette and texture with its own concept word (`<star1>`) and a one-token class word
//! ("star"). Two concepts are deliberately similar (same shape and texture, different palette),
//! like the two dogs of the paper's benchmark, to test whether a method keeps them apart.
//!
//! The stream is data: it serialises to the `stream.json` manifest written beside the concept
//! folders, with evaluation prompts and multi-concept region layouts, so a benchmark can read
//! it back without this crate's defaults.

use crate::colour::Colour;
use crate::error::{Result, ShapesError};
use crate::pattern::Pattern;
use crate::scene::{Object, Pose, Position, Scene};
use crate::shape::Shape;
use crate::world::{image_rng, WorldConfig};
use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Concept images use random streams above this offset, so they never share a stream with
/// base-world image `i` drawn from the same seed.
const CONCEPT_STREAM_OFFSET: u64 = 1 << 40;

/// One personal concept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Concept {
    /// Name without brackets, e.g. "star1"; the concept word is `<star1>`.
    pub name: String,
    /// The silhouette; its word is the class word.
    pub shape: Shape,
    /// The texture and palette that make it personal.
    pub pattern: Pattern,
    /// A plain description, e.g. "a checkered red and yellow star".
    pub description: String,
}

impl Concept {
    /// The concept word, e.g. `<star1>`.
    pub fn token(&self) -> String {
        format!("<{}>", self.name)
    }

    /// The class word (the shape's word, one CLIP token), e.g. "star".
    pub fn class_word(&self) -> &'static str {
        self.shape.word()
    }

    /// The training caption, e.g. `a photo of a <star1> star`.
    pub fn caption(&self) -> String {
        format!("a photo of a {} {}", self.token(), self.class_word())
    }

    /// A generation prompt, e.g. `a <star1> star on the left`, or `a <star1> star` without a
    /// position.
    pub fn prompt(&self, position: Option<Position>) -> String {
        let base = format!("a {} {}", self.token(), self.class_word());
        match position {
            Some(p) => format!("{base} {}", p.phrase()),
            None => base,
        }
    }

    /// The evaluation prompts: the concept alone, then at each of the five positions.
    pub fn eval_prompts(&self) -> Vec<EvalPrompt> {
        std::iter::once(None)
            .chain(Position::ALL.into_iter().map(Some))
            .map(|position| EvalPrompt {
                concept: self.name.clone(),
                shape: self.shape,
                position,
                text: self.prompt(position),
            })
            .collect()
    }
}

/// A prompt to generate a concept with, and what the evaluator should look for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPrompt {
    /// The concept's name.
    pub concept: String,
    /// The shape that must appear (the class word's shape).
    pub shape: Shape,
    /// Where it is asked to appear, if anywhere.
    pub position: Option<Position>,
    /// The prompt text.
    pub text: String,
}

/// A box in fractions of the image side: `x0 <= x < x1`, `y0 <= y < y1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormBox {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

impl NormBox {
    /// The left half of the image.
    pub const LEFT: NormBox = NormBox {
        x0: 0.0,
        y0: 0.0,
        x1: 0.5,
        y1: 1.0,
    };
    /// The right half.
    pub const RIGHT: NormBox = NormBox {
        x0: 0.5,
        y0: 0.0,
        x1: 1.0,
        y1: 1.0,
    };
    /// The top half.
    pub const TOP: NormBox = NormBox {
        x0: 0.0,
        y0: 0.0,
        x1: 1.0,
        y1: 0.5,
    };
    /// The bottom half.
    pub const BOTTOM: NormBox = NormBox {
        x0: 0.0,
        y0: 0.5,
        x1: 1.0,
        y1: 1.0,
    };

    /// Checks `0 <= x0 < x1 <= 1` and the same for y.
    pub fn validate(&self) -> Result<()> {
        let ok = |a: f32, b: f32| a.is_finite() && b.is_finite() && 0.0 <= a && a < b && b <= 1.0;
        if ok(self.x0, self.x1) && ok(self.y0, self.y1) {
            Ok(())
        } else {
            Err(ShapesError::invalid(
                "box",
                format!("{self:?} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"),
            ))
        }
    }

    /// The pixel rectangle `(x, y, width, height)` this box covers in an image of `width` x
    /// `height`; at least one pixel each way.
    pub fn to_pixels(&self, width: u32, height: u32) -> Result<(u32, u32, u32, u32)> {
        self.validate()?;
        let px = |f: f32, n: u32| ((f * n as f32).round() as u32).min(n);
        let (x0, x1) = (px(self.x0, width), px(self.x1, width));
        let (y0, y1) = (px(self.y0, height), px(self.y1, height));
        let x0 = x0.min(width.saturating_sub(1));
        let y0 = y0.min(height.saturating_sub(1));
        Ok((x0, y0, (x1.max(x0 + 1)) - x0, (y1.max(y0 + 1)) - y0))
    }
}

/// One concept's box in a multi-concept layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// The concept's name.
    pub concept: String,
    /// Where it should appear.
    pub bbox: NormBox,
    /// The prompt for this region alone, e.g. `a <star1> star`.
    pub prompt: String,
}

/// A multi-concept image to generate with region control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionLayout {
    /// The global prompt, e.g. `a <star1> star and a <ring1> ring`.
    pub prompt: String,
    /// One box per concept.
    pub regions: Vec<Region>,
}

/// A concept's training image before rendering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptSample {
    /// The concept's name.
    pub concept: String,
    /// The scene (one object).
    pub scene: Scene,
    /// The caption, e.g. `a photo of a <star1> star`.
    pub caption: String,
}

impl ConceptSample {
    /// Draws the sample with the config's supersampling.
    pub fn render(&self, config: &WorldConfig) -> Result<RgbImage> {
        self.scene.render(config.supersample)
    }
}

/// The ordered stream of concepts (task `i` learns `concepts[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptStream {
    /// The concepts, in task order.
    pub concepts: Vec<Concept>,
    /// Pairs of concept names that are deliberately similar.
    pub similar: Vec<[String; 2]>,
    /// Multi-concept layouts for region-controlled generation.
    pub layouts: Vec<RegionLayout>,
    /// Training images per concept.
    pub images_per_concept: usize,
}

impl Default for ConceptStream {
    /// Six concepts: a checkered red-and-yellow star, a striped blue-and-orange ring, a dotted
    /// green square, a striped yellow-and-black triangle, a purple-and-teal target circle, and
    /// a checkered orange-and-brown star (the similar twin of the first), five images each.
    fn default() -> Self {
        let concept = |name: &str, shape, pattern, description: &str| Concept {
            name: name.into(),
            shape,
            pattern,
            description: description.into(),
        };
        use Colour::*;
        let concepts = vec![
            concept(
                "star1",
                Shape::Star,
                Pattern::Checkered {
                    a: Red,
                    b: Yellow,
                    cells: 4,
                },
                "a checkered red and yellow star",
            ),
            concept(
                "ring1",
                Shape::Ring,
                Pattern::Striped {
                    a: Blue,
                    b: Pink,
                    stripes: 6,
                    angle_deg: 0.0,
                },
                "a ring with blue and pink stripes",
            ),
            concept(
                "square1",
                Shape::Square,
                Pattern::Dotted {
                    base: Green,
                    dot: Black,
                    grid: 3,
                },
                "a green square with black dots",
            ),
            concept(
                "triangle1",
                Shape::Triangle,
                Pattern::Striped {
                    a: Purple,
                    b: Teal,
                    stripes: 5,
                    angle_deg: 90.0,
                },
                "a triangle with purple and teal bands",
            ),
            concept(
                "circle1",
                Shape::Circle,
                Pattern::Concentric {
                    a: Brown,
                    b: Teal,
                    bands: 3,
                },
                "a brown and teal target",
            ),
            concept(
                "star2",
                Shape::Star,
                Pattern::Checkered {
                    a: Orange,
                    b: Yellow,
                    cells: 4,
                },
                "a checkered orange and yellow star",
            ),
        ];
        let pairs = [
            ("star1", "ring1", NormBox::LEFT, NormBox::RIGHT),
            ("square1", "circle1", NormBox::TOP, NormBox::BOTTOM),
            ("triangle1", "star2", NormBox::LEFT, NormBox::RIGHT),
            ("star1", "star2", NormBox::LEFT, NormBox::RIGHT),
        ];
        let find = |name: &str| concepts.iter().find(|c| c.name == name);
        let layouts = pairs
            .iter()
            .filter_map(|&(a, b, box_a, box_b)| {
                let (a, b) = (find(a)?, find(b)?);
                Some(RegionLayout {
                    prompt: format!("{} and {}", a.prompt(None), b.prompt(None)),
                    regions: vec![
                        Region {
                            concept: a.name.clone(),
                            bbox: box_a,
                            prompt: a.prompt(None),
                        },
                        Region {
                            concept: b.name.clone(),
                            bbox: box_b,
                            prompt: b.prompt(None),
                        },
                    ],
                })
            })
            .collect();
        Self {
            concepts,
            similar: vec![["star1".into(), "star2".into()]],
            layouts,
            images_per_concept: 5,
        }
    }
}

impl ConceptStream {
    /// Checks names (unique, non-empty, letters and digits), image counts, patterns, and that
    /// similar pairs and layouts name concepts of the stream with valid boxes.
    pub fn validate(&self) -> Result<()> {
        if self.concepts.is_empty() {
            return Err(ShapesError::invalid("concept stream", "holds no concepts"));
        }
        if !(1..=64).contains(&self.images_per_concept) {
            return Err(ShapesError::invalid(
                "images per concept",
                format!("{} is outside 1..=64", self.images_per_concept),
            ));
        }
        for (i, c) in self.concepts.iter().enumerate() {
            if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                return Err(ShapesError::invalid(
                    "concept name",
                    format!("{:?} must be non-empty ASCII letters and digits", c.name),
                ));
            }
            if self.concepts[..i].iter().any(|d| d.name == c.name) {
                return Err(ShapesError::invalid(
                    "concept name",
                    format!("{:?} appears twice", c.name),
                ));
            }
            c.pattern.validate()?;
        }
        for pair in &self.similar {
            for name in pair {
                self.concept(name)?;
            }
        }
        for layout in &self.layouts {
            for region in &layout.regions {
                self.concept(&region.concept)?;
                region.bbox.validate()?;
            }
        }
        Ok(())
    }

    /// The concept with this name.
    pub fn concept(&self, name: &str) -> Result<&Concept> {
        self.concepts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ShapesError::UnknownConcept(name.to_string()))
    }

    /// The training images of concept `name` for this `seed`: one object at a varied pose
    /// (uniform radius in the config's concept range, centre anywhere it fits, rotation within
    /// the config's limit) on a base-world background.
    pub fn samples(
        &self,
        name: &str,
        config: &WorldConfig,
        seed: u64,
    ) -> Result<Vec<ConceptSample>> {
        config.validate()?;
        let index = self
            .concepts
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| ShapesError::UnknownConcept(name.to_string()))?;
        let concept = &self.concepts[index];
        let mut rng = image_rng(seed, CONCEPT_STREAM_OFFSET + index as u64);
        let margin = 1.0 / config.size as f32;
        (0..self.images_per_concept)
            .map(|_| {
                let background = config.sample_background(&mut rng);
                let [lo, hi] = config.concept_radius;
                let radius = if hi > lo {
                    rng.random_range(lo..=hi)
                } else {
                    lo
                };
                let (min, max) = (radius + margin, 1.0 - radius - margin);
                let mut centre = || {
                    if max > min {
                        rng.random_range(min..=max)
                    } else {
                        0.5
                    }
                };
                let (x, y) = (centre(), centre());
                let rotation = WorldConfig::sample_rotation(&mut rng, config.concept_rotation_deg);
                Ok(ConceptSample {
                    concept: concept.name.clone(),
                    scene: Scene {
                        size: config.size,
                        background,
                        objects: vec![Object {
                            shape: concept.shape,
                            pattern: concept.pattern,
                            pose: Pose {
                                x,
                                y,
                                radius,
                                rotation,
                            },
                        }],
                    },
                    caption: concept.caption(),
                })
            })
            .collect()
    }

    /// The rendered training images of concept `name`.
    pub fn render(&self, name: &str, config: &WorldConfig, seed: u64) -> Result<Vec<RgbImage>> {
        self.samples(name, config, seed)?
            .iter()
            .map(|s| s.render(config))
            .collect()
    }
}
