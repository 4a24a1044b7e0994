//! The base world: one or two solid-coloured shapes on a light background, each named in the
//! caption with its colour and position ("a red star on the left and a blue ring on the
//! right"). This is what a tiny base model is pretrained on, so it is kept learnable: six
//! colours, six bold shapes, five position words, no overlap.
//!
//! Every image has its own random stream (ChaCha8 seeded with the dataset seed, stream = image
//! index), so image `i` is the same however many images are drawn and in whatever order.

use crate::colour::Colour;
use crate::error::{Result, ShapesError};
use crate::pattern::Pattern;
use crate::scene::{
    Background, Object, Pose, Position, Scene, MAX_SIZE, MAX_SUPERSAMPLE, MIN_SIZE,
};
use crate::shape::Shape;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A lone object's centre is at most this far (in image sides) from the left edge when it is
/// "on the left" (mirrored for the other sides), which keeps it clear of the center rule.
const SIDE_LIMIT: f32 = 0.38;
/// A lone "center" object's centre lies within this distance of the middle on both axes.
const CENTER_SPREAD: f32 = 0.06;
/// In a pair, each centre lies at most this far from its own edge, so the two centres are at
/// least `1 - 2 * PAIR_LIMIT` apart.
const PAIR_LIMIT: f32 = 0.28;
/// Off-axis spread of a side object's centre, as a fraction of its on-axis offset from the
/// middle; below 1, so the position rule names the chosen side.
const OFF_AXIS: f32 = 0.6;
/// Light neutral tones the backgrounds are drawn around.
const BACKGROUND_TONES: [[u8; 3]; 4] = [
    [226, 222, 214],
    [214, 220, 226],
    [222, 222, 222],
    [228, 218, 206],
];
/// Per-channel jitter of the background tone, in RGB units.
const BACKGROUND_JITTER: i32 = 6;

/// How the base world and the concept images are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorldConfig {
    /// Image side in pixels. Default 32.
    pub size: u32,
    /// Supersampling factor per axis for anti-aliasing. Default 4.
    pub supersample: u32,
    /// Probability that a base image holds two objects instead of one. Default 0.25.
    pub pair_probability: f32,
    /// Circumscribed radius range of a lone object, in image sides. Default [0.22, 0.33].
    pub single_radius: [f32; 2],
    /// Radius range of each object of a pair. Default [0.15, 0.185].
    pub pair_radius: [f32; 2],
    /// Radius range of a concept's object in its own images. Default [0.26, 0.36].
    pub concept_radius: [f32; 2],
    /// Largest rotation of a concept's object, in degrees either way. Default 30.
    pub concept_rotation_deg: f32,
    /// Largest rotation of a base-world object, in degrees either way. Default 0 (upright).
    pub base_rotation_deg: f32,
    /// Largest background gradient, in RGB units from the middle to an edge. Default 8.
    pub background_gradient: f32,
    /// Background grain amplitude, in RGB units. Default 4.
    pub background_noise: f32,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            size: 32,
            supersample: 4,
            pair_probability: 0.25,
            single_radius: [0.22, 0.33],
            pair_radius: [0.15, 0.185],
            concept_radius: [0.26, 0.36],
            concept_rotation_deg: 30.0,
            base_rotation_deg: 0.0,
            background_gradient: 8.0,
            background_noise: 4.0,
        }
    }
}

impl WorldConfig {
    /// One pixel, in image sides: the margin kept between objects and the image border.
    fn margin(&self) -> f32 {
        1.0 / self.size as f32
    }

    /// Checks that every range is ordered and that the placement rules can be met: a lone
    /// object fits beside the middle, two objects of a pair keep at least two pixels apart, a
    /// concept object fits in the image.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(ShapesError::invalid(
                "image size",
                format!("{} is outside {MIN_SIZE}..={MAX_SIZE}", self.size),
            ));
        }
        if !(1..=MAX_SUPERSAMPLE).contains(&self.supersample) {
            return Err(ShapesError::invalid(
                "supersampling factor",
                format!("{} is outside 1..={MAX_SUPERSAMPLE}", self.supersample),
            ));
        }
        if !(0.0..=1.0).contains(&self.pair_probability) {
            return Err(ShapesError::invalid(
                "pair probability",
                "must be in [0, 1]",
            ));
        }
        let m = self.margin();
        let ranges = [
            ("single radius", self.single_radius, SIDE_LIMIT - m),
            ("pair radius", self.pair_radius, (0.5 - PAIR_LIMIT) - m),
            ("concept radius", self.concept_radius, 0.5 - m),
        ];
        for (what, [lo, hi], max) in ranges {
            if !(lo > 0.0 && lo <= hi && hi <= max) {
                return Err(ShapesError::invalid(
                    what,
                    format!(
                        "[{lo}, {hi}] must satisfy 0 < lo <= hi <= {max:.4} at size {}",
                        self.size
                    ),
                ));
            }
        }
        if 2.0 * self.pair_radius[1] + 2.0 * m > 1.0 - 2.0 * PAIR_LIMIT {
            return Err(ShapesError::invalid(
                "pair radius",
                format!(
                    "two objects of radius {} would come closer than two pixels at size {}",
                    self.pair_radius[1], self.size
                ),
            ));
        }
        let finite = [
            self.concept_rotation_deg,
            self.base_rotation_deg,
            self.background_gradient,
            self.background_noise,
        ];
        if !finite.iter().all(|v| v.is_finite() && *v >= 0.0) {
            return Err(ShapesError::invalid(
                "rotation, gradient or noise",
                "must be finite and non-negative",
            ));
        }
        Ok(())
    }

    /// A light neutral background with a random tone, gradient and grain seed.
    pub(crate) fn sample_background(&self, rng: &mut impl Rng) -> Background {
        let tone = BACKGROUND_TONES[rng.random_range(0..BACKGROUND_TONES.len())];
        let rgb = tone.map(|c| {
            (c as i32 + rng.random_range(-BACKGROUND_JITTER..=BACKGROUND_JITTER)).clamp(0, 255)
                as u8
        });
        let g = self.background_gradient;
        Background {
            rgb,
            gradient: [rng.random_range(-g..=g), rng.random_range(-g..=g)],
            noise: self.background_noise,
            seed: rng.random(),
        }
    }

    /// A uniformly random rotation within `±max_deg` degrees.
    pub(crate) fn sample_rotation(rng: &mut impl Rng, max_deg: f32) -> f32 {
        if max_deg == 0.0 {
            0.0
        } else {
            rng.random_range(-max_deg..=max_deg).to_radians()
        }
    }
}

/// What one base-world object is, in caption words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The shape.
    pub shape: Shape,
    /// The colour.
    pub colour: Colour,
    /// Where its centre is.
    pub position: Position,
}

impl Item {
    /// "a red star on the left" ("an" before a vowel).
    pub fn phrase(&self) -> String {
        format!(
            "{} {} {} {}",
            article(self.colour.word()),
            self.colour,
            self.shape,
            self.position.phrase()
        )
    }
}

/// "a" or "an" for the word that follows.
pub(crate) fn article(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// One base-world image before rendering: the scene, what it shows, and its caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldSample {
    /// The scene to render.
    pub scene: Scene,
    /// The objects, in caption order (same order as `scene.objects`).
    pub items: Vec<Item>,
    /// The caption, e.g. "a red star on the left and a blue ring on the right".
    pub caption: String,
}

impl WorldSample {
    /// Draws the sample with the config's supersampling.
    pub fn render(&self, config: &WorldConfig) -> Result<RgbImage> {
        self.scene.render(config.supersample)
    }
}

/// The random stream of image `index` of a dataset drawn with `seed`.
pub(crate) fn image_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// Base-world image `index` of the dataset with this `seed`.
pub fn base_sample(config: &WorldConfig, seed: u64, index: u64) -> Result<WorldSample> {
    config.validate()?;
    let mut rng = image_rng(seed, index);
    let background = config.sample_background(&mut rng);
    let placements = if rng.random_bool(config.pair_probability as f64) {
        sample_pair(config, &mut rng)
    } else {
        let position = Position::ALL[rng.random_range(0..Position::ALL.len())];
        vec![(position, sample_lone(config, &mut rng, position))]
    };
    let mut items = Vec::with_capacity(placements.len());
    let mut objects = Vec::with_capacity(placements.len());
    for (position, pose) in placements {
        let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
        let colour = Colour::BASE[rng.random_range(0..Colour::BASE.len())];
        items.push(Item {
            shape,
            colour,
            position,
        });
        objects.push(Object {
            shape,
            pattern: Pattern::Solid { colour },
            pose,
        });
    }
    let caption = items
        .iter()
        .map(Item::phrase)
        .collect::<Vec<_>>()
        .join(" and ");
    Ok(WorldSample {
        scene: Scene {
            size: config.size,
            background,
            objects,
        },
        items,
        caption,
    })
}

/// The first `count` images of the base dataset with this `seed`.
pub fn base_dataset(config: &WorldConfig, seed: u64, count: usize) -> Result<Vec<WorldSample>> {
    (0..count as u64)
        .map(|i| base_sample(config, seed, i))
        .collect()
}

/// A uniform draw from `[lo, hi]`, or `lo` when the interval is empty or a point.
fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    }
}

/// A lone object at `position`: the centre's on-axis offset keeps the object beside the middle
/// and inside the image; the off-axis offset stays below the on-axis one.
fn sample_lone(config: &WorldConfig, rng: &mut impl Rng, position: Position) -> Pose {
    let m = config.margin();
    let radius = uniform(rng, config.single_radius[0], config.single_radius[1]);
    let rotation = WorldConfig::sample_rotation(rng, config.base_rotation_deg);
    let lo = radius + m;
    let (x, y) = match position {
        Position::Center => (
            0.5 + uniform(rng, -CENTER_SPREAD, CENTER_SPREAD),
            0.5 + uniform(rng, -CENTER_SPREAD, CENTER_SPREAD),
        ),
        side => {
            let near = uniform(rng, lo, SIDE_LIMIT);
            let offset = 0.5 - near;
            let spread = (OFF_AXIS * offset).min(0.5 - lo);
            let across = 0.5 + uniform(rng, -spread, spread);
            side_point(side, near, across)
        }
    };
    Pose {
        x,
        y,
        radius,
        rotation,
    }
}

/// Two objects on opposite sides (left and right, or top and bottom).
fn sample_pair(config: &WorldConfig, rng: &mut impl Rng) -> Vec<(Position, Pose)> {
    let m = config.margin();
    let sides = if rng.random_bool(0.5) {
        [Position::Left, Position::Right]
    } else {
        [Position::Top, Position::Bottom]
    };
    sides
        .into_iter()
        .map(|side| {
            let radius = uniform(rng, config.pair_radius[0], config.pair_radius[1]);
            let rotation = WorldConfig::sample_rotation(rng, config.base_rotation_deg);
            let lo = radius + m;
            let near = uniform(rng, lo, PAIR_LIMIT);
            let spread = (OFF_AXIS * (0.5 - near)).min(0.5 - lo);
            let across = 0.5 + uniform(rng, -spread, spread);
            let (x, y) = side_point(side, near, across);
            (
                side,
                Pose {
                    x,
                    y,
                    radius,
                    rotation,
                },
            )
        })
        .collect()
}

/// The centre for a side position, from its distance to that side's edge and its coordinate
/// along the side. Callers place center objects themselves, so `side` is never the center.
fn side_point(side: Position, near: f32, across: f32) -> (f32, f32) {
    match side {
        Position::Left => (near, across),
        Position::Right => (1.0 - near, across),
        Position::Top => (across, near),
        _ => (across, 1.0 - near),
    }
}
