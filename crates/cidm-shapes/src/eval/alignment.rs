//! The evaluator of generated images against the concept stream: image alignment to each
//! concept's own training images, text alignment of the shape asked for, and per-box checks of
//! multi-concept layouts.

use super::detector::{text_alignment, Target};
use super::features::{image_features, Features};
use super::report::{ConceptScores, RegionScore};
use crate::concepts::{ConceptStream, EvalPrompt, RegionLayout};
use crate::dataset::StreamManifest;
use crate::error::{Result, ShapesError};
use crate::shape::Shape;
use crate::world::WorldConfig;
use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};

/// One concept's reference images, as features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptReference {
    /// The concept's name.
    pub concept: String,
    /// Its class shape.
    pub shape: Shape,
    /// Features of its training images.
    pub features: Vec<Features>,
}

impl ConceptReference {
    /// References from the concept's images.
    pub fn from_images(concept: impl Into<String>, shape: Shape, images: &[RgbImage]) -> Self {
        Self {
            concept: concept.into(),
            shape,
            features: images.iter().map(image_features).collect(),
        }
    }

    /// Mean cosine similarity of `features` to the reference images.
    fn alignment(&self, features: &Features) -> f32 {
        self.features
            .iter()
            .map(|r| r.cosine(features))
            .sum::<f32>()
            / self.features.len() as f32
    }
}

/// Scores generated images against a set of concepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapesEvaluator {
    references: Vec<ConceptReference>,
}

impl ShapesEvaluator {
    /// An evaluator over these references (uniquely named, each with at least one image).
    pub fn new(references: Vec<ConceptReference>) -> Result<Self> {
        if references.is_empty() {
            return Err(ShapesError::invalid(
                "evaluator",
                "needs at least one concept",
            ));
        }
        for (i, r) in references.iter().enumerate() {
            if r.features.is_empty() {
                return Err(ShapesError::invalid(
                    format!("references of {:?}", r.concept),
                    "need at least one image",
                ));
            }
            if references[..i].iter().any(|o| o.concept == r.concept) {
                return Err(ShapesError::invalid(
                    "evaluator",
                    format!("concept {:?} appears twice", r.concept),
                ));
            }
        }
        Ok(Self { references })
    }

    /// References rendered from the stream: the same images the stream writer saves.
    pub fn from_stream(stream: &ConceptStream, config: &WorldConfig, seed: u64) -> Result<Self> {
        stream.validate()?;
        let references = stream
            .concepts
            .iter()
            .map(|c| {
                let images = stream.render(&c.name, config, seed)?;
                Ok(ConceptReference::from_images(&c.name, c.shape, &images))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(references)
    }

    /// References rebuilt from a written stream's manifest.
    pub fn from_manifest(manifest: &StreamManifest) -> Result<Self> {
        Self::from_stream(&manifest.stream, &manifest.world, manifest.seed)
    }

    /// The references, in stream order.
    pub fn references(&self) -> &[ConceptReference] {
        &self.references
    }

    fn reference(&self, concept: &str) -> Result<&ConceptReference> {
        self.references
            .iter()
            .find(|r| r.concept == concept)
            .ok_or_else(|| ShapesError::UnknownConcept(concept.to_string()))
    }

    /// Image alignment of `image` to `concept`: the mean cosine similarity, in the fixed
    /// feature space, to the concept's reference images.
    pub fn image_alignment(&self, concept: &str, image: &RgbImage) -> Result<f32> {
        Ok(self.reference(concept)?.alignment(&image_features(image)))
    }

    /// Image alignment of `image` to every concept, in stream order.
    pub fn alignments(&self, image: &RgbImage) -> Vec<(String, f32)> {
        let features = image_features(image);
        self.references
            .iter()
            .map(|r| (r.concept.clone(), r.alignment(&features)))
            .collect()
    }

    /// Scores one concept's generations: mean image alignment, the share of images where the
    /// concept's class shape is detected (text alignment), and the share of positioned prompts
    /// whose shape appears at the asked position. Every prompt must belong to `concept`.
    pub fn score_concept(
        &self,
        concept: &str,
        generated: &[(EvalPrompt, RgbImage)],
    ) -> Result<ConceptScores> {
        let reference = self.reference(concept)?;
        if generated.is_empty() {
            return Err(ShapesError::invalid(
                format!("generations of {concept:?}"),
                "at least one image is needed",
            ));
        }
        let (mut ia, mut aligned, mut positioned, mut placed) = (0.0, 0usize, 0usize, 0usize);
        for (prompt, image) in generated {
            if prompt.concept != concept {
                return Err(ShapesError::invalid(
                    "generated image",
                    format!(
                        "prompt {:?} is for {:?}, not {concept:?}",
                        prompt.text, prompt.concept
                    ),
                ));
            }
            ia += reference.alignment(&image_features(image));
            let ta = text_alignment(
                image,
                &Target {
                    shape: prompt.shape,
                    colour: None,
                    position: prompt.position,
                },
            );
            aligned += usize::from(ta.aligned);
            if let Some(ok) = ta.position_correct {
                positioned += 1;
                placed += usize::from(ok);
            }
        }
        let n = generated.len();
        Ok(ConceptScores {
            concept: concept.to_string(),
            image_alignment: ia / n as f32,
            text_alignment: aligned as f32 / n as f32,
            position_accuracy: (positioned > 0).then(|| placed as f32 / positioned as f32),
            samples: n,
        })
    }

    /// For each box of `layout`: the image alignment of the crop to the box's concept and to
    /// the best other concept; the box shows its concept when its own alignment is higher.
    pub fn region_alignment(
        &self,
        image: &RgbImage,
        layout: &RegionLayout,
    ) -> Result<Vec<RegionScore>> {
        layout
            .regions
            .iter()
            .map(|region| {
                self.reference(&region.concept)?;
                let (x, y, w, h) = region.bbox.to_pixels(image.width(), image.height())?;
                let crop = imageops::crop_imm(image, x, y, w, h).to_image();
                let scores = self.alignments(&crop);
                let own = scores
                    .iter()
                    .find(|(c, _)| *c == region.concept)
                    .map_or(0.0, |s| s.1);
                let best_other = scores
                    .into_iter()
                    .filter(|(c, _)| *c != region.concept)
                    .fold(None::<(String, f32)>, |b, s| match b {
                        Some(b) if b.1 >= s.1 => Some(b),
                        _ => Some(s),
                    });
                Ok(RegionScore {
                    concept: region.concept.clone(),
                    image_alignment: own,
                    shows_concept: best_other.as_ref().is_none_or(|b| own > b.1),
                    best_other_alignment: best_other.as_ref().map(|b| b.1),
                    best_other: best_other.map(|b| b.0),
                })
            })
            .collect()
    }
}
