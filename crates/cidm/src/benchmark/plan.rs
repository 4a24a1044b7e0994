//! What a benchmark run does, as a serde type read from TOML: the base model, the methods to
//! compare, the training and sampling settings, and the task list in order.
//!
//! ```toml
//! model = "stable-diffusion-v1-5"
//! methods = ["cidm", "finetune", "lora-m"]
//! forgetting = true
//!
//! [training]
//! steps = 800
//!
//! [sampling]
//! steps = 50
//! images_per_prompt = 4
//!
//! [[tasks]]
//! name = "dog1"
//! images = "cifc/dog1"
//! words = ["<dog1>"]
//! classes = ["dog"]
//! prompts = ["a photo of a <dog1> dog", "a <dog1> dog on the beach"]
//!
//! [[layouts]]
//! prompt = "a <dog1> dog and a <cat1> cat"
//! regions = ["a <dog1> dog@0,0,0.5,1", "a <cat1> cat@0.5,0,1,1"]
//! ```
//!
//! Relative paths are resolved against the TOML file's folder.

use std::path::{Path, PathBuf};

use cidm_continual::{Method, TaskTrainingConfig};
use cidm_diffusion::Sampler;
use serde::{Deserialize, Serialize};

use super::error::{BenchmarkError, Result};

/// A whole benchmark: every method trains every task in order, then is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkPlan {
    /// The base model (diffusers directory).
    pub model: PathBuf,
    /// Weight variant of the base model (e.g. `fp16`), if any.
    #[serde(default)]
    pub variant: Option<String>,
    /// The methods compared, each in its own store (default cidm, finetune, lora-m: the
    /// paper's table).
    #[serde(default = "default_methods")]
    pub methods: Vec<Method>,
    /// Training settings shared by every task; `method` is set per run.
    #[serde(default)]
    pub training: TaskTrainingConfig,
    /// Sampling settings of the evaluation.
    #[serde(default)]
    pub sampling: SamplingPlan,
    /// Evaluate every learned concept after every task (the forgetting matrix), not only
    /// after the last (default false).
    #[serde(default)]
    pub forgetting: bool,
    /// The tasks, in learning order.
    pub tasks: Vec<TaskSpec>,
    /// Multi-concept layouts generated with regions after the last task.
    #[serde(default)]
    pub layouts: Vec<LayoutSpec>,
}

fn default_methods() -> Vec<Method> {
    vec![Method::Cidm, Method::Finetune, Method::LoraM]
}

/// One task: a folder of images of its concepts and the prompts it is evaluated with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// A short name for reports, e.g. `dog1`.
    pub name: String,
    /// The training images (with optional `.txt` captions).
    pub images: PathBuf,
    /// Concept words, e.g. `<dog1>`.
    pub words: Vec<String>,
    /// One class word per concept word, e.g. `dog`.
    pub classes: Vec<String>,
    /// Evaluation prompts naming the concept words.
    pub prompts: Vec<String>,
    /// Caption template for images without a `.txt` file (`{concept}`, `{class}`).
    #[serde(default)]
    pub caption: Option<String>,
}

/// A multi-concept layout: a global prompt and its regions, `PROMPT@x0,y0,x1,y1` each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// The global prompt.
    pub prompt: String,
    /// The regions in the command line's form.
    pub regions: Vec<String>,
}

/// How evaluation images are generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingPlan {
    /// Denoising steps (default 50, the released code's).
    pub steps: usize,
    /// Guidance scale (default 7.5).
    pub guidance: f64,
    /// Images per prompt (default 1).
    pub images_per_prompt: usize,
    /// Sampler (default `dpm++`).
    pub sampler: Sampler,
    /// Seed of the first image's noise; each prompt gets its own (default 0).
    pub seed: u64,
    /// Image side in pixels; `None` (default) takes the UNet's sample size times the VAE's
    /// factor.
    pub size: Option<usize>,
}

impl Default for SamplingPlan {
    fn default() -> Self {
        Self {
            steps: 50,
            guidance: 7.5,
            images_per_prompt: 1,
            sampler: Sampler::DpmPlusPlus,
            seed: 0,
            size: None,
        }
    }
}

impl BenchmarkPlan {
    /// Reads a plan from a TOML file, resolving relative paths against its folder.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = cidm_diffusion::loading::read_text(path)?;
        let mut plan: Self = toml::from_str(&text).map_err(|e| BenchmarkError::Plan {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        plan.model = base.join(&plan.model);
        for task in &mut plan.tasks {
            task.images = base.join(&task.images);
        }
        plan.validate()?;
        Ok(plan)
    }

    /// Checks the plan before anything is trained: at least one task and method, no method
    /// twice, every task with words, one class per word and prompts, unique task names, and
    /// the training and sampling settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(BenchmarkError::InvalidPlan(reason));
        if self.tasks.is_empty() {
            return bad("the plan has no task".into());
        }
        if self.methods.is_empty() {
            return bad("the plan has no method".into());
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return bad(format!("method {m} is listed twice"));
            }
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if self.tasks[..i].iter().any(|t| t.name == task.name) {
                return bad(format!("task name {:?} is used twice", task.name));
            }
            if task.words.is_empty() || task.words.len() != task.classes.len() {
                return bad(format!(
                    "task {:?}: {} words and {} classes, need one class per word, at least one",
                    task.name,
                    task.words.len(),
                    task.classes.len()
                ));
            }
            if task.prompts.is_empty() {
                return bad(format!("task {:?} has no evaluation prompt", task.name));
            }
            cidm_continual::store::check_name(&task.name)?;
        }
        for layout in &self.layouts {
            if layout.regions.is_empty() {
                return bad(format!("layout {:?} has no region", layout.prompt));
            }
        }
        let s = &self.sampling;
        if s.steps == 0 || s.images_per_prompt == 0 || !s.guidance.is_finite() {
            return bad(format!(
                "sampling needs steps and images per prompt above 0 and a finite guidance, got \
                 {} steps, {} images, guidance {}",
                s.steps, s.images_per_prompt, s.guidance
            ));
        }
        self.training.validate()?;
        Ok(())
    }
}
