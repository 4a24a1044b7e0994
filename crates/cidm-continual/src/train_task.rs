//! Training one task end to end, as `cidm train-task` does: open the store (locked), load the
//! base model and the store's earlier tasks, read and encode the images, train (or resume),
//! and add the learner to the store.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use cidm_diffusion::schedulers::{DdpmNoiser, SchedulerConfig};
use cidm_diffusion::{AutoencoderKL, CLIPTextModel, CLIPTokenizer, ModelDir, UNet2DConditionModel};

use crate::checkpoint::read_checkpoint;
use crate::data::{read_image_folder, LatentCache};
use crate::error::{Error, Result};
use crate::store::{BaseFingerprint, TaskManifest, TaskStore};
use crate::trainer::{TaskContext, TaskStepReport, TaskTrainer, TaskWords};
use crate::training_config::TaskTrainingConfig;

/// Everything `cidm train-task` is given.
#[derive(Debug, Clone)]
pub struct TrainTaskRequest {
    /// The base model (diffusers directory).
    pub model: PathBuf,
    /// Weight variant of the base model (e.g. `fp16`), if any.
    pub variant: Option<String>,
    /// The task store (created if missing).
    pub store: PathBuf,
    /// The folder of training images.
    pub images: PathBuf,
    /// Caption for images without a `.txt` file; `{concept}` and `{class}` are replaced by
    /// the first concept and class word. `None` uses `"a photo of a {concept} {class}"`.
    pub prompt: Option<String>,
    /// The task's concept and class words.
    pub words: TaskWords,
    /// The training settings.
    pub config: TaskTrainingConfig,
    /// Continue from the task's checkpoint if there is one.
    pub resume: bool,
}

/// What [`train_task`] reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// Training begins: the task's number, the steps already done (after a resume) and the
    /// total.
    Started {
        /// The task's number in the store.
        task: usize,
        /// Steps restored from the checkpoint.
        done: usize,
        /// Steps in all.
        total: usize,
    },
    /// One step finished.
    Step(TaskStepReport),
}

/// The default caption template.
pub const DEFAULT_PROMPT: &str = "a photo of a {concept} {class}";

/// Trains the task of `request` on `device` and adds it to the store; returns its manifest.
/// The store stays locked throughout, so a second training on the same store fails at once
/// with [`Error::StoreLocked`]. Checkpoints go to the store's `training/` folder and are
/// removed once the task is stored.
pub fn train_task<B: AutodiffBackend>(
    request: &TrainTaskRequest,
    device: &B::Device,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<TaskManifest> {
    let config = &request.config;
    config.validate()?;
    let words = &request.words;
    words.validate()?;
    let base = BaseFingerprint::of_model_dir(&request.model, request.variant.as_deref())?;
    let mut store = TaskStore::open_for_writing(&request.store, &base, config.method)?;
    for word in &words.words {
        if let Some(task) = store.tasks().iter().find(|t| t.words.contains(word)) {
            return Err(Error::WordTaken {
                word: word.clone(),
                task: task.index,
            });
        }
    }

    let dir = ModelDir::open(&request.model)?;
    let variant = request.variant.as_deref();
    let unet = UNet2DConditionModel::<B>::from_model_dir(&dir, variant, device)?;
    let vae = AutoencoderKL::<B::InnerBackend>::from_model_dir(&dir, variant, device)?;
    let resolution = match config.resolution {
        Some(r) => r,
        None => {
            let sample = unet.config().sample_size.ok_or_else(|| {
                Error::InvalidInput(
                    "the UNet config has no sample_size: give the training resolution".into(),
                )
            })?;
            sample * vae.config().downsample_factor()
        }
    };
    let template = request
        .prompt
        .as_deref()
        .unwrap_or(DEFAULT_PROMPT)
        .replace("{concept}", &words.words[0])
        .replace("{class}", &words.classes[0]);
    let images = read_image_folder(&request.images, Some(&template), resolution, config.crop)?;
    for image in &images {
        if !words
            .words
            .iter()
            .any(|w| image.caption.contains(w.as_str()))
        {
            tracing::warn!(
                "the caption of {} names none of the concept words: {:?}",
                image.path.display(),
                image.caption
            );
        }
    }
    let data = LatentCache::encode(&vae, &images, resolution, device)?;
    drop(vae);
    let old_tasks = store
        .load_learners::<B>(device)?
        .into_iter()
        .map(|l| l.adapter)
        .collect();
    let context = TaskContext {
        tokenizer: CLIPTokenizer::from_model_dir(&dir)?,
        text_encoder: CLIPTextModel::<B>::from_model_dir(&dir, variant, device)?,
        unet,
        noiser: DdpmNoiser::new(&SchedulerConfig::from_file(
            dir.root().join("scheduler").join("scheduler_config.json"),
        )?)?,
        data,
        old_tasks,
        subspace: store.load_subspace::<B>(device)?,
    };

    let checkpoint = store.checkpoint_path(&words.words);
    let mut trainer = if checkpoint.is_file() {
        if !request.resume {
            return Err(Error::CheckpointExists(checkpoint));
        }
        let (header, state) = read_checkpoint::<B>(&checkpoint, device)?;
        let same_run = TaskTrainingConfig {
            steps: config.steps,
            ..header.config.clone()
        };
        if &same_run != config || header.words != words.words || header.classes != words.classes {
            return Err(Error::InvalidInput(format!(
                "{} was written by a training with other words or settings; resume with the \
                 same ones (only --steps may change) or delete it",
                checkpoint.display()
            )));
        }
        tracing::info!(
            "resuming from step {} of {}",
            state.step,
            checkpoint.display()
        );
        TaskTrainer::resume(context, words.clone(), config.clone(), state)?
    } else {
        TaskTrainer::new(context, words.clone(), config.clone())?
    };

    let task = store.manifest().next_index();
    on_event(TrainEvent::Started {
        task,
        done: trainer.steps_done(),
        total: config.steps,
    });
    let mut recent = Vec::new();
    trainer.train(Some(&checkpoint), |report| {
        recent.push(report.loss);
        on_event(TrainEvent::Step(*report));
    })?;
    let tail = &recent[recent.len().saturating_sub(10)..];
    let final_loss = (!tail.is_empty()).then(|| tail.iter().sum::<f32>() / tail.len() as f32);

    let (learner, subspace) = trainer.finish()?;
    let [_, layers, hidden] = learner.tokens.dims();
    let manifest = TaskManifest {
        index: task,
        words: learner.words.clone(),
        classes: learner.classes.clone(),
        method: config.method,
        lora: learner.adapter.config().clone(),
        layers,
        hidden,
        base,
        training: config.clone(),
        steps: config.steps,
        final_loss,
    };
    let manifest = store.add_task(&learner, subspace.as_ref(), manifest)?;
    if checkpoint.is_file() {
        std::fs::remove_file(&checkpoint).map_err(|source| Error::Io {
            path: checkpoint.clone(),
            source,
        })?;
    }
    Ok(manifest)
}
