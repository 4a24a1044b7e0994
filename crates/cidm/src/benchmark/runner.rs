//! The benchmark protocol of the paper (METHOD.md section 6): every method learns every task
//! in order, each in its own store; after the last task (and, with `forgetting`, after every
//! task) every concept learned so far is generated from its prompts and scored.
//!
//! Stores live in `out/stores/<method>/`. A task already in a store (same words) is not
//! trained again, and an interrupted task resumes from its checkpoint, so running the same
//! plan again after a crash continues where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cidm_continual::{train_task, Method, TaskStore, TaskWords, TrainEvent, TrainTaskRequest};
use cidm_diffusion::pipeline::GenerationRequest;
use cidm_diffusion::vae::Rgb8Image;
use cidm_regions::{parse_regions, RegionalConfig};
use cidm_shapes::eval::{ConceptScores, MethodScores, RegionScore};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::error::{BenchmarkError, Result};
use super::evaluator::ConceptEvaluator;
use super::plan::{BenchmarkPlan, TaskSpec};
use crate::backend::{self, Selected, Training};
use crate::concept_model::{Aggregation, ConceptModel};
use crate::images::save_png;

/// What the runner reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum BenchmarkEvent {
    /// A training step of `method` on task `task` (1-based) of `tasks`.
    Training {
        /// The method.
        method: Method,
        /// The task's number.
        task: usize,
        /// Tasks in the plan.
        tasks: usize,
        /// Steps done.
        step: usize,
        /// Steps in all.
        steps: usize,
    },
    /// A denoising step of an evaluation pass.
    Generating {
        /// The method.
        method: Method,
        /// Steps done in this pass.
        done: usize,
        /// Steps in this pass.
        total: usize,
    },
    /// Scores of every concept learned so far, after task `after_task`.
    Evaluated {
        /// The method.
        method: Method,
        /// The task just learned (1-based).
        after_task: usize,
        /// Mean image alignment over the concepts learned so far, if scored.
        mean_image_alignment: Option<f32>,
    },
}

/// Everything a run produced, as written to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResults {
    /// The evaluator's name, if generations were scored.
    pub evaluator: Option<String>,
    /// The backend that ran it.
    pub backend: String,
    /// Task names in order.
    pub tasks: Vec<String>,
    /// One entry per method, in the plan's order.
    pub methods: Vec<MethodRun>,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
}

/// One method's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodRun {
    /// The method.
    pub method: Method,
    /// Scores after the last task (every concept), if scored.
    pub final_scores: Option<MethodScores>,
    /// Scores after each task `g` of the concepts 1..=g (the forgetting matrix's rows), if
    /// the plan asked for them; `(g, scores)`.
    pub history: Vec<(usize, MethodScores)>,
    /// The generated images after the last task: per task, per prompt, the files.
    pub images: Vec<Vec<Vec<PathBuf>>>,
    /// Multi-concept layouts after the last task.
    pub layouts: Vec<LayoutRun>,
    /// Each task's denoising loss at its last training step, from the store's manifests.
    pub final_losses: Vec<Option<f32>>,
    /// Seconds spent training (tasks trained in this run only).
    pub train_seconds: f64,
    /// Seconds spent generating and scoring.
    pub eval_seconds: f64,
}

/// One multi-concept image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutRun {
    /// The global prompt.
    pub prompt: String,
    /// The image file.
    pub image: PathBuf,
    /// Box-by-box scores, if the evaluator judges regions.
    pub regions: Option<Vec<RegionScore>>,
}

/// Runs `plan`, writing stores and images under `out`. `evaluator` scores the generations;
/// without one, images are generated and nothing is scored.
pub fn run_benchmark(
    plan: &BenchmarkPlan,
    out: &Path,
    evaluator: Option<&dyn ConceptEvaluator>,
    on_event: &mut dyn FnMut(BenchmarkEvent),
) -> Result<BenchmarkResults> {
    plan.validate()?;
    let start = Instant::now();
    let methods = plan
        .methods
        .iter()
        .map(|&method| run_method(plan, method, out, evaluator, on_event))
        .collect::<Result<Vec<_>>>()?;
    Ok(BenchmarkResults {
        evaluator: evaluator.map(|e| e.name()),
        backend: backend::NAME.to_string(),
        tasks: plan.tasks.iter().map(|t| t.name.clone()).collect(),
        methods,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn run_method(
    plan: &BenchmarkPlan,
    method: Method,
    out: &Path,
    evaluator: Option<&dyn ConceptEvaluator>,
    on_event: &mut dyn FnMut(BenchmarkEvent),
) -> Result<MethodRun> {
    let store_dir = out.join("stores").join(method.to_string());
    let device = backend::device();
    let mut run = MethodRun {
        method,
        final_scores: None,
        history: Vec::new(),
        images: Vec::new(),
        layouts: Vec::new(),
        final_losses: Vec::new(),
        train_seconds: 0.0,
        eval_seconds: 0.0,
    };
    let last = plan.tasks.len();
    for (g, task) in plan.tasks.iter().enumerate() {
        let number = g + 1;
        let started = Instant::now();
        if !already_learned(&store_dir, task)? {
            let mut config = plan.training.clone();
            config.method = method;
            let request = TrainTaskRequest {
                model: plan.model.clone(),
                variant: plan.variant.clone(),
                store: store_dir.clone(),
                images: task.images.clone(),
                prompt: task.caption.clone(),
                words: TaskWords {
                    words: task.words.clone(),
                    classes: task.classes.clone(),
                },
                config,
                resume: true,
            };
            train_task::<Training>(&request, &device, &mut |event| {
                let (step, steps) = match event {
                    TrainEvent::Started { done, total, .. } => (done, total),
                    TrainEvent::Step(report) => (report.step, plan.training.steps),
                };
                on_event(BenchmarkEvent::Training {
                    method,
                    task: number,
                    tasks: last,
                    step,
                    steps,
                });
            })?;
            run.train_seconds += started.elapsed().as_secs_f64();
        }
        if plan.forgetting || number == last {
            let started = Instant::now();
            let final_pass = number == last;
            let store = TaskStore::open(&store_dir)?;
            let model = ConceptModel::<Selected>::from_store(
                &plan.model,
                plan.variant.as_deref(),
                &store,
                Aggregation::for_method(method, None)?,
                &device,
            )?;
            let image_dir = final_pass.then(|| out.join("images").join(method.to_string()));
            let mut scores = Vec::new();
            for (t, learned) in plan.tasks[..number].iter().enumerate() {
                let (files, generated) = generate_task(
                    plan,
                    &model,
                    t,
                    learned,
                    image_dir.as_deref(),
                    &mut |d, n| {
                        on_event(BenchmarkEvent::Generating {
                            method,
                            done: d,
                            total: n,
                        })
                    },
                )?;
                if final_pass {
                    run.images.push(files);
                }
                if let Some(evaluator) = evaluator {
                    scores.push(evaluator.score(learned, &generated)?);
                }
            }
            let scored = evaluator.map(|_| method_scores(method, scores));
            on_event(BenchmarkEvent::Evaluated {
                method,
                after_task: number,
                mean_image_alignment: scored.as_ref().and_then(|s| s.mean_image_alignment()),
            });
            if let Some(scored) = scored {
                if plan.forgetting {
                    run.history.push((number, scored.clone()));
                }
                if final_pass {
                    run.final_scores = Some(scored);
                }
            }
            if final_pass {
                run.layouts = generate_layouts(plan, &model, out, method, evaluator, on_event)?;
            }
            run.eval_seconds += started.elapsed().as_secs_f64();
        }
    }
    let store = TaskStore::open(&store_dir)?;
    run.final_losses = store
        .tasks()
        .iter()
        .map(|t| Ok(store.task_manifest(t.index)?.final_loss))
        .collect::<Result<_>>()?;
    Ok(run)
}

/// Whether the store at `dir` already holds `task` (its words), from an earlier run.
fn already_learned(dir: &Path, task: &TaskSpec) -> Result<bool> {
    if !dir.join("store.json").is_file() {
        return Ok(false);
    }
    let store = TaskStore::open(dir)?;
    Ok(store.tasks().iter().any(|t| t.words == task.words))
}

/// The request of one prompt: `images_per_prompt` images with their own seed, at the plan's
/// size or the UNet's nominal one.
fn request(
    plan: &BenchmarkPlan,
    model: &ConceptModel<Selected>,
    prompt: &str,
    seed: u64,
) -> Result<GenerationRequest> {
    let nominal = model
        .sd
        .unet
        .config()
        .sample_size
        .map(|s| s * model.sd.vae_scale_factor());
    let size = plan.sampling.size.or(nominal).ok_or_else(|| {
        BenchmarkError::InvalidPlan("the UNet config has no sample_size: give sampling.size".into())
    })?;
    Ok(GenerationRequest {
        prompts: vec![prompt.to_string(); plan.sampling.images_per_prompt],
        negative_prompts: vec![],
        width: size,
        height: size,
        steps: plan.sampling.steps,
        guidance_scale: plan.sampling.guidance,
        seed,
        sampler: plan.sampling.sampler,
        clip_skip: model.clip_skip,
    })
}

/// Every prompt of task `t`: the images (written under `dir` when given) and, for scoring,
/// `(prompt index, image)` pairs. Seeds depend on the task and prompt only, so every method
/// starts from the same noise.
#[allow(clippy::type_complexity)]
fn generate_task(
    plan: &BenchmarkPlan,
    model: &ConceptModel<Selected>,
    t: usize,
    task: &TaskSpec,
    dir: Option<&Path>,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Vec<PathBuf>>, Vec<(usize, RgbImage)>)> {
    let mut files = Vec::new();
    let mut generated = Vec::new();
    for (p, prompt) in task.prompts.iter().enumerate() {
        let seed = plan.sampling.seed + (t as u64) * 1000 + p as u64;
        let request = request(plan, model, prompt, seed)?;
        let (latents, _) = model.generate_latents(&request, None, on_step)?;
        let mut prompt_files = Vec::new();
        for (k, image) in model.decode(latents)?.into_iter().enumerate() {
            if let Some(dir) = dir {
                let path = dir.join(&task.name).join(format!("p{p:02}-{k}.png"));
                create_parent(&path)?;
                save_png(&image, &path)?;
                prompt_files.push(path);
            }
            generated.push((p, to_rgb_image(image)?));
        }
        files.push(prompt_files);
    }
    Ok((files, generated))
}

fn generate_layouts(
    plan: &BenchmarkPlan,
    model: &ConceptModel<Selected>,
    out: &Path,
    method: Method,
    evaluator: Option<&dyn ConceptEvaluator>,
    on_event: &mut dyn FnMut(BenchmarkEvent),
) -> Result<Vec<LayoutRun>> {
    let config = RegionalConfig::default();
    plan.layouts
        .iter()
        .enumerate()
        .map(|(i, layout)| {
            let specs = parse_regions(&layout.regions, config.max_regions)?;
            let seed = plan.sampling.seed + 900_000 + i as u64;
            let mut request = request(plan, model, &layout.prompt, seed)?;
            request.prompts.truncate(1);
            let latents = model.generate_regional_latents(
                &request,
                &specs,
                &config,
                None,
                &mut |done, total| {
                    on_event(BenchmarkEvent::Generating {
                        method,
                        done,
                        total,
                    })
                },
            )?;
            let image = model
                .decode(latents)?
                .into_iter()
                .next()
                .ok_or_else(|| BenchmarkError::Evaluation("no image decoded".into()))?;
            let path = out
                .join("images")
                .join(method.to_string())
                .join(format!("layout-{i:02}.png"));
            create_parent(&path)?;
            save_png(&image, &path)?;
            let regions = match evaluator {
                Some(e) => e.score_layout(layout, &to_rgb_image(image)?).transpose()?,
                None => None,
            };
            Ok(LayoutRun {
                prompt: layout.prompt.clone(),
                image: path,
                regions,
            })
        })
        .collect()
}

fn method_scores(method: Method, concepts: Vec<ConceptScores>) -> MethodScores {
    MethodScores {
        method: method_label(method).to_string(),
        concepts,
    }
}

/// The name a method has in the paper's tables.
pub fn method_label(method: Method) -> &'static str {
    match method {
        Method::Cidm => "CIDM",
        Method::R1Only => "CIDM (R1 only)",
        Method::R2Only => "CIDM (R2 only)",
        Method::Finetune => "Finetune",
        Method::LoraM => "LoRA-M",
    }
}

/// The core's decoded image as an `image` crate buffer.
pub fn to_rgb_image(image: Rgb8Image) -> Result<RgbImage> {
    let (w, h) = (image.width as u32, image.height as u32);
    RgbImage::from_raw(w, h, image.pixels)
        .ok_or_else(|| BenchmarkError::Evaluation("decoded image has the wrong size".into()))
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| BenchmarkError::Report {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}
