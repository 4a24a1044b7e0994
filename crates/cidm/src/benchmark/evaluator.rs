//! How a benchmark scores generations: a trait, so the shapes world's deterministic
//! evaluator and the paper's CLIP metrics plug into the same runner.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use cidm_diffusion::vae::Rgb8Image;
use cidm_eval::{image_files, load_image, replace_class_words, ClassWord, ClipScorer};
use cidm_shapes::eval::{ConceptScores, RegionScore, ShapesEvaluator};
use cidm_shapes::{ConceptStream, EvalPrompt, RegionLayout};
use image::RgbImage;

use super::error::{BenchmarkError, Result};
use super::plan::{LayoutSpec, TaskSpec};

/// Scores one task's generations and, optionally, multi-concept layouts.
pub trait ConceptEvaluator {
    /// A short name for the report, e.g. "shapes evaluator".
    fn name(&self) -> String;

    /// Scores `generated`: pairs of an index into `task.prompts` and an image generated from
    /// that prompt. Image alignment and text alignment are in [0, 1].
    fn score(&self, task: &TaskSpec, generated: &[(usize, RgbImage)]) -> Result<ConceptScores>;

    /// Scores a layout's image box by box; `None` if this evaluator cannot judge regions.
    fn score_layout(
        &self,
        layout: &LayoutSpec,
        image: &RgbImage,
    ) -> Option<Result<Vec<RegionScore>>>;
}

/// The shapes world's evaluator (docs/shapes-world.md) over a concept stream: image alignment
/// in its fixed feature space against the concept's own images, text alignment as "the
/// asked shape is detected (at the asked position)", and region checks.
pub struct ShapesConceptEvaluator {
    evaluator: ShapesEvaluator,
    prompts: BTreeMap<String, Vec<EvalPrompt>>,
    layouts: Vec<RegionLayout>,
}

impl ShapesConceptEvaluator {
    /// The evaluator of `stream`, with reference images rendered from `seed` (the training
    /// images' seed, so the references are the concept's own images).
    pub fn new(
        stream: &ConceptStream,
        world: &cidm_shapes::WorldConfig,
        seed: u64,
    ) -> Result<Self> {
        let evaluator = ShapesEvaluator::from_stream(stream, world, seed).map_err(shapes_error)?;
        let prompts = stream
            .concepts
            .iter()
            .map(|c| (c.name.clone(), c.eval_prompts()))
            .collect();
        Ok(Self {
            evaluator,
            prompts,
            layouts: stream.layouts.clone(),
        })
    }

    /// The evaluation prompts of a concept, in the order the plan lists them.
    pub fn prompts(&self, concept: &str) -> Option<&[EvalPrompt]> {
        self.prompts.get(concept).map(Vec::as_slice)
    }
}

impl ConceptEvaluator for ShapesConceptEvaluator {
    fn name(&self) -> String {
        "shapes evaluator (fixed features, shape detector)".into()
    }

    fn score(&self, task: &TaskSpec, generated: &[(usize, RgbImage)]) -> Result<ConceptScores> {
        let prompts = self.prompts.get(&task.name).ok_or_else(|| {
            BenchmarkError::Evaluation(format!("no shapes concept named {:?}", task.name))
        })?;
        let pairs = generated
            .iter()
            .map(|(i, image)| {
                let text = task.prompts.get(*i).ok_or_else(|| {
                    BenchmarkError::Evaluation(format!("prompt {i} of task {:?}", task.name))
                })?;
                let prompt = prompts.iter().find(|p| &p.text == text).ok_or_else(|| {
                    BenchmarkError::Evaluation(format!(
                        "{text:?} is not an evaluation prompt of {:?}",
                        task.name
                    ))
                })?;
                Ok((prompt.clone(), image.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.evaluator
            .score_concept(&task.name, &pairs)
            .map_err(shapes_error)
    }

    fn score_layout(
        &self,
        layout: &LayoutSpec,
        image: &RgbImage,
    ) -> Option<Result<Vec<RegionScore>>> {
        let known = self.layouts.iter().find(|l| l.prompt == layout.prompt)?;
        Some(
            self.evaluator
                .region_alignment(image, known)
                .map_err(shapes_error),
        )
    }
}

fn shapes_error(e: cidm_shapes::ShapesError) -> BenchmarkError {
    BenchmarkError::Evaluation(e.to_string())
}

/// The paper's metrics with a CLIP model (METHOD.md section 6): IA, the mean CLIP
/// image-embedding cosine between generations and the task's own training images; TA,
/// CLIPScore `2.5 * max(cos, 0)` between each image and its prompt with the concept words
/// replaced by their class words. Both are reported as fractions (x100 gives the paper's
/// numbers). No region check: CLIP does not judge boxes.
pub struct ClipConceptEvaluator<B: Backend> {
    scorer: ClipScorer<B>,
}

impl<B: Backend> ClipConceptEvaluator<B> {
    /// Loads a transformers `CLIPModel` directory (the paper uses ViT-B/32).
    pub fn from_dir(dir: &Path, device: &B::Device) -> Result<Self> {
        Ok(Self {
            scorer: ClipScorer::from_dir(dir, device).map_err(eval_error)?,
        })
    }
}

impl<B: Backend> ConceptEvaluator for ClipConceptEvaluator<B> {
    fn name(&self) -> String {
        "CLIP metrics (IA: image-embedding cosine to the training images; TA: CLIPScore)".into()
    }

    fn score(&self, task: &TaskSpec, generated: &[(usize, RgbImage)]) -> Result<ConceptScores> {
        let references = image_files(&task.images)
            .and_then(|files| {
                files
                    .iter()
                    .map(|f| load_image(f))
                    .collect::<cidm_eval::Result<Vec<_>>>()
            })
            .map_err(eval_error)?;
        let images: Vec<Rgb8Image> = generated
            .iter()
            .map(|(_, image)| Rgb8Image {
                width: image.width() as usize,
                height: image.height() as usize,
                pixels: image.as_raw().clone(),
            })
            .collect();
        let prompts = generated
            .iter()
            .map(|(i, _)| {
                task.prompts
                    .get(*i)
                    .map(|p| class_prompt(p, task))
                    .ok_or_else(|| {
                        BenchmarkError::Evaluation(format!("prompt {i} of task {:?}", task.name))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let ia = self
            .scorer
            .image_alignment(&images, &references)
            .map_err(eval_error)?;
        let ta = self
            .scorer
            .text_alignment(&images, &prompts)
            .map_err(eval_error)?;
        Ok(ConceptScores {
            concept: task.name.clone(),
            image_alignment: (ia.mean / 100.0) as f32,
            text_alignment: (ta.mean / 100.0) as f32,
            position_accuracy: None,
            samples: images.len(),
        })
    }

    fn score_layout(
        &self,
        _layout: &LayoutSpec,
        _image: &RgbImage,
    ) -> Option<Result<Vec<RegionScore>>> {
        None
    }
}

/// The prompt with each concept word replaced by its class word, as the paper scores TA:
/// `a <dog1> dog` becomes `a dog` (a word followed by its own class word is dropped), and a
/// concept word on its own becomes its class word.
pub fn class_prompt(prompt: &str, task: &TaskSpec) -> String {
    let dropped: Vec<ClassWord> = task
        .words
        .iter()
        .zip(&task.classes)
        .map(|(w, c)| ClassWord {
            word: format!("{w} {c}"),
            class: c.clone(),
        })
        .collect();
    let replaced: Vec<ClassWord> = task
        .words
        .iter()
        .zip(&task.classes)
        .map(|(w, c)| ClassWord {
            word: w.clone(),
            class: c.clone(),
        })
        .collect();
    replace_class_words(&replace_class_words(prompt, &dropped), &replaced)
}

fn eval_error(e: cidm_eval::EvalError) -> BenchmarkError {
    BenchmarkError::Evaluation(e.to_string())
}
