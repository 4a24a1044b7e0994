//! The embedded default: the shapes world's six-concept stream on the tiny base model that
//! ships with the repository, learned by CIDM and the baselines, scored by the shapes
//! evaluator. `cidm demo` runs it; nothing needs downloading.

use std::path::{Path, PathBuf};

use cidm_continual::{Method, TaskTrainingConfig};
use cidm_shapes::{write_concept_stream, ConceptStream, WorldConfig};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::error::{BenchmarkError, Result};
use super::evaluator::ShapesConceptEvaluator;
use super::plan::{BenchmarkPlan, LayoutSpec, SamplingPlan, TaskSpec};

/// The demo's settings; the defaults are what the README's first command runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// The base model (default `assets/shapes-base`, the tiny model pretrained on the shapes
    /// world).
    pub model: PathBuf,
    /// Methods compared (default cidm, finetune, lora-m).
    pub methods: Vec<Method>,
    /// Training steps per task.
    pub steps: usize,
    /// Learning rate of the LoRA factors.
    pub learning_rate: f64,
    /// Learning rate of the concept tokens.
    pub token_learning_rate: f64,
    /// LoRA rank.
    pub rank: usize,
    /// Evaluation prompts per concept: the concept alone, then at positions (at most 6).
    pub prompts_per_concept: usize,
    /// Images per evaluation prompt.
    pub images_per_prompt: usize,
    /// Denoising steps of every generation.
    pub sampling_steps: usize,
    /// Evaluate after every task (the forgetting plot), not only after the last.
    pub forgetting: bool,
    /// Seed of the images, the training and the sampling.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("assets/shapes-base"),
            methods: vec![Method::Cidm, Method::Finetune, Method::LoraM],
            steps: 60,
            learning_rate: 1e-3,
            token_learning_rate: 1e-2,
            rank: 4,
            prompts_per_concept: 2,
            images_per_prompt: 2,
            sampling_steps: 20,
            forgetting: true,
            seed: 0,
        }
    }
}

/// Writes the concept stream's training images under `data` and returns the plan that learns
/// them and the evaluator that scores them.
pub fn shapes_demo(
    config: &DemoConfig,
    data: &Path,
    progress: &ProgressBar,
) -> Result<(BenchmarkPlan, ShapesConceptEvaluator)> {
    let stream = ConceptStream::default();
    let world = WorldConfig::default();
    if config.prompts_per_concept == 0 || config.prompts_per_concept > 6 {
        return Err(BenchmarkError::InvalidPlan(format!(
            "prompts per concept must be 1 to 6, got {}",
            config.prompts_per_concept
        )));
    }
    write_concept_stream(data, &stream, &world, config.seed, progress)
        .map_err(|e| BenchmarkError::Evaluation(e.to_string()))?;
    let evaluator = ShapesConceptEvaluator::new(&stream, &world, config.seed)?;
    let tasks = stream
        .concepts
        .iter()
        .map(|c| TaskSpec {
            name: c.name.clone(),
            images: data.join(&c.name),
            words: vec![c.token()],
            classes: vec![c.class_word().to_string()],
            prompts: c
                .eval_prompts()
                .into_iter()
                .take(config.prompts_per_concept)
                .map(|p| p.text)
                .collect(),
            caption: None,
        })
        .collect();
    let layouts = stream
        .layouts
        .iter()
        .map(|l| LayoutSpec {
            prompt: l.prompt.clone(),
            regions: l
                .regions
                .iter()
                .map(|r| {
                    let b = r.bbox;
                    format!("{}@{},{},{},{}", r.prompt, b.x0, b.y0, b.x1, b.y1)
                })
                .collect(),
        })
        .collect();
    let mut training = TaskTrainingConfig {
        steps: config.steps,
        seed: config.seed,
        token_learning_rate: config.token_learning_rate,
        // Short tasks: a checkpoint at the end of each is enough to resume the demo.
        checkpoint_every: config.steps,
        ..TaskTrainingConfig::default()
    };
    training.lora.rank = config.rank;
    training.lora.alpha = config.rank as f64;
    training.optimizer.learning_rate = config.learning_rate;
    let plan = BenchmarkPlan {
        model: config.model.clone(),
        variant: None,
        methods: config.methods.clone(),
        training,
        sampling: SamplingPlan {
            steps: config.sampling_steps,
            images_per_prompt: config.images_per_prompt,
            seed: config.seed,
            ..SamplingPlan::default()
        },
        forgetting: config.forgetting,
        tasks,
        layouts,
    };
    plan.validate()?;
    Ok((plan, evaluator))
}
