//! The shapes world: a small, fully procedural stand-in for a personalisation benchmark, so
//! the whole continual method can be trained and measured without downloaded data or weights.
//!
//! - [`world`]: captioned base images of coloured shapes ("a red star on the left"), the
//!   pretraining data of a tiny base model.
//! - [`concepts`]: a stream of personal concepts (`<star1>`: a checkered red and yellow star,
//!   ...) with a few images each, evaluation prompts and multi-concept region layouts.
//! - [`dataset`]: writers for the image-folder format the trainers read (PNG + `.txt`).
//! - [`eval`]: a deterministic evaluator: image alignment, text alignment, regions.
//!
//! Everything is seeded and rendering is a pure function of a [`Scene`], so a seed names a
//! dataset exactly.

pub mod colour;
pub mod concepts;
pub mod dataset;
mod error;
pub mod eval;
pub mod pattern;
pub mod scene;
pub mod shape;
pub mod world;

pub use colour::Colour;
pub use concepts::{Concept, ConceptStream, EvalPrompt, NormBox, Region, RegionLayout};
pub use dataset::{write_base_dataset, write_concept_stream, StreamManifest};
pub use error::{Result, ShapesError};
pub use pattern::Pattern;
pub use scene::{Background, Object, Pose, Position, Scene};
pub use shape::Shape;
pub use world::{base_dataset, base_sample, Item, WorldConfig, WorldSample};
