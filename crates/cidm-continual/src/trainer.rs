//! The task trainer: one task of the concept stream, trained on the frozen base with its own
//! LoRA and layer-wise concept tokens, with CIDM's two-step update (METHOD.md section 3) or a
//! baseline's plain loss ([`Method`](crate::Method)).
//!
//! Each step:
//! 1. draws a batch from the step's own random stream (images with replacement, posterior
//!    samples of their cached latents, crops, DDPM noise with noise offset, timesteps);
//! 2. encodes the captions with the layer-wise concept tokens and takes one AdamW step on
//!    `denoise + gamma1 R1 + gamma2 R2_g` for the LoRA factors (`R2_g` = the new task's share of
//!    R2; the other tasks' shares carry no gradient) and one for the tokens with their own
//!    learning rate, unless the tokens' mean norm has reached the threshold;
//! 3. for methods with R2, one gradient-descent step on every `H_i` and `W*` with the LoRA
//!    learning rate, the deltas held fixed. This also runs during task 1, whose loss has no
//!    regularizer, so that `W*` and `H_1` already describe task 1 when task 2 starts
//!    (starting task 2 from `W* = 0` would make R2 a plain weight decay).
//!
//! Randomness of step `s` comes from ChaCha8 seeded by the config's seed on stream `s`, so a
//! run resumed from a checkpoint draws exactly what the uninterrupted run drew.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use cidm_diffusion::pipeline::gaussian;
use cidm_diffusion::schedulers::DdpmNoiser;
use cidm_diffusion::totals::mean_all;
use cidm_diffusion::{CLIPTextModel, CLIPTokenizer, UNet2DConditionModel};
use cidm_lora::{
    adam_moments, load_adam_moments, DenoisingBatch, LoraAdapter, LoraConfig, LoraError,
    LoraTrainer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{write_checkpoint, TrainingState};
use crate::common_subspace::CommonSubspace;
use crate::concept_tokens::{keep_updating_tokens, ConceptTokens, ConceptWord, TokenInit};
use crate::data::{Crop, LatentCache};
use crate::delta::LowRankDelta;
use crate::error::{Error, Result};
use crate::learner::{adapter_deltas, attached_deltas, TaskLearner};
use crate::orthogonal::orthogonal_regularizer;
use crate::training_config::TaskTrainingConfig;

/// Name of the token parameter in optimizer states and checkpoints.
const TOKENS: &str = "tokens";

/// What a task is trained from besides its config: the model parts, its data and the store's
/// earlier tasks.
pub struct TaskContext<B: AutodiffBackend> {
    /// The base tokenizer (the task's words are added to it).
    pub tokenizer: CLIPTokenizer,
    /// The base text encoder (frozen; the task's words get rows).
    pub text_encoder: CLIPTextModel<B>,
    /// The base UNet (frozen; the task's LoRA is attached).
    pub unet: UNet2DConditionModel<B>,
    /// DDPM noising of the model's training schedule.
    pub noiser: DdpmNoiser,
    /// The task's cached latents and captions.
    pub data: LatentCache<B>,
    /// The LoRAs of the earlier tasks, in task order.
    pub old_tasks: Vec<LoraAdapter<B>>,
    /// R2's state after the earlier tasks (`None` before the first task with R2).
    pub subspace: Option<CommonSubspace<B>>,
}

/// The task's concept words and their class words (one class word per concept word).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskWords {
    /// Concept words, e.g. `<dog1>`.
    pub words: Vec<String>,
    /// Class words, e.g. `dog`; each must be one token (the second and later words copy
    /// their class word's row, METHOD.md section 2).
    pub classes: Vec<String>,
}

impl TaskWords {
    /// Checks the words before anything is changed: at least one concept word, one class
    /// word per concept word, and every word by the store's rules
    /// ([`crate::store::check_word`]: no whitespace or control characters, bounded length).
    pub fn validate(&self) -> Result<()> {
        if self.words.is_empty() || self.words.len() != self.classes.len() {
            return Err(Error::InvalidInput(format!(
                "a task needs one class word per concept word, got {} concept and {} class words",
                self.words.len(),
                self.classes.len()
            )));
        }
        self.words
            .iter()
            .chain(&self.classes)
            .try_for_each(|w| crate::store::check_word(w))
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskStepReport {
    /// The step just taken (1-based).
    pub step: usize,
    /// Denoising loss of the batch before the update.
    pub loss: f32,
    /// `gamma1 R1 + gamma2 R2_g` before the update (0 for task 1 and the baselines).
    pub regularizer: f32,
    /// Global gradient norm of the LoRA factors before clipping.
    pub grad_norm: f32,
    /// Mean norm of the token rows before the update.
    pub token_norm: f64,
    /// Whether the tokens were updated (false once the norm threshold is reached).
    pub tokens_updated: bool,
}

/// Trains one task; see the module documentation for what a step does.
pub struct TaskTrainer<B: AutodiffBackend> {
    lora: LoraTrainer<B>,
    tokens: ConceptTokens<B>,
    token_optimizer: OptimizerAdaptor<AdamW, ConceptTokens<B>, B>,
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel<B>,
    noiser: DdpmNoiser,
    data: LatentCache<B>,
    old: Vec<Vec<LowRankDelta<B>>>,
    subspace: Option<CommonSubspace<B>>,
    words: TaskWords,
    config: TaskTrainingConfig,
    step: usize,
}

impl<B: AutodiffBackend> TaskTrainer<B> {
    /// Starts task `old_tasks.len() + 1`: registers the concept words (the first from
    /// `N(0, sigma^2)`, the others from their class words), initialises the LoRA (fresh, or the
    /// previous task's for [`crate::Method::Finetune`]) and, for methods with R2, adds the
    /// task's transform to the common subspace.
    pub fn new(
        mut context: TaskContext<B>,
        words: TaskWords,
        config: TaskTrainingConfig,
    ) -> Result<Self> {
        config.validate()?;
        words.validate()?;
        let task_index = context.old_tasks.len();
        let layers = context.unet.cross_attention_layers();
        let concept_words: Vec<ConceptWord> = words
            .words
            .iter()
            .zip(&words.classes)
            .enumerate()
            .map(|(i, (word, class))| ConceptWord {
                word: word.clone(),
                init: if i == 0 {
                    TokenInit::Normal {
                        sigma: config.continual.token_init_sigma,
                        seed: config.seed.wrapping_add(task_index as u64),
                    }
                } else {
                    TokenInit::ClassWord(class.clone())
                },
            })
            .collect();
        let tokens = ConceptTokens::register(
            &concept_words,
            layers,
            &mut context.tokenizer,
            &mut context.text_encoder,
        )?;
        let adapter = match context.old_tasks.last() {
            Some(previous) if config.method.continues_previous_lora() => previous.clone(),
            _ => {
                let device = unet_device(&context.unet);
                LoraAdapter::init(&task_lora(&config.lora, task_index), &context.unet, &device)?
            }
        };
        let mut subspace = context.subspace.take();
        if config.method.uses_r2() {
            let mut state = match subspace {
                Some(state) => state,
                None if task_index == 0 => {
                    let shapes: Vec<[usize; 2]> =
                        adapter_deltas(&adapter).iter().map(|d| d.shape()).collect();
                    CommonSubspace::new(
                        config.continual.r2_variant,
                        &shapes,
                        &unet_device(&context.unet),
                    )?
                }
                None => {
                    return Err(Error::InvalidInput(format!(
                        "task {} uses R2 but no common-subspace state of the {task_index} earlier \
                         tasks was given",
                        task_index + 1
                    )))
                }
            };
            if state.tasks() != task_index {
                return Err(Error::InvalidInput(format!(
                    "the common subspace holds {} tasks, the store {task_index}",
                    state.tasks()
                )));
            }
            state.add_task(config.seed.wrapping_add(task_index as u64));
            subspace = Some(state);
        }
        Self::assemble(context, tokens, &adapter, subspace, words, config, 0)
    }

    /// Continues an interrupted task from `state` (written by [`Self::state`]): the factors,
    /// tokens, both optimizers' moments, R2's state and the step count are restored, so the
    /// remaining steps are those the uninterrupted run would have taken.
    pub fn resume(
        mut context: TaskContext<B>,
        words: TaskWords,
        config: TaskTrainingConfig,
        state: TrainingState<B>,
    ) -> Result<Self> {
        config.validate()?;
        words.validate()?;
        if state.step > config.steps {
            return Err(Error::InvalidInput(format!(
                "the checkpoint is at step {}, past the {} steps asked for",
                state.step, config.steps
            )));
        }
        let tokens = ConceptTokens::register_rows(
            &words.words,
            state.tokens.clone(),
            &mut context.tokenizer,
            &mut context.text_encoder,
        )?;
        let expected_tasks = context.old_tasks.len() + 1;
        if config.method.uses_r2()
            != state
                .subspace
                .as_ref()
                .is_some_and(|s| s.tasks() == expected_tasks)
        {
            return Err(Error::InvalidInput(format!(
                "the checkpoint's common-subspace state does not belong to a {} task {expected_tasks}",
                config.method
            )));
        }
        let mut trainer = Self::assemble(
            context,
            tokens,
            &state.adapter,
            state.subspace,
            words,
            config,
            state.step,
        )?;
        trainer.lora.load_optimizer_state(&state.lora_moments)?;
        let optimizer = std::mem::replace(&mut trainer.token_optimizer, AdamWConfig::new().init());
        let names = [(trainer.tokens.embeddings.id, TOKENS.to_string())];
        let shapes = [(
            TOKENS.to_string(),
            trainer.tokens.embeddings.dims().to_vec(),
        )]
        .into();
        let device = unet_device(trainer.lora.unet());
        let (optimizer, result) =
            load_adam_moments::<B, _, 3>(optimizer, &names, &shapes, &state.token_moments, &device);
        trainer.token_optimizer = optimizer;
        result?;
        Ok(trainer)
    }

    fn assemble(
        context: TaskContext<B>,
        tokens: ConceptTokens<B>,
        adapter: &LoraAdapter<B>,
        subspace: Option<CommonSubspace<B>>,
        words: TaskWords,
        config: TaskTrainingConfig,
        step: usize,
    ) -> Result<Self> {
        let old = context
            .old_tasks
            .iter()
            .map(|a| adapter_deltas(a).iter().map(LowRankDelta::detach).collect())
            .collect();
        let text_encoder = context.text_encoder.no_grad();
        let lora = LoraTrainer::new(context.unet, adapter, config.optimizer.clone())?;
        let o = &config.optimizer;
        let token_optimizer = AdamWConfig::new()
            .with_beta_1(o.beta_1)
            .with_beta_2(o.beta_2)
            .with_epsilon(o.epsilon)
            .with_weight_decay(o.weight_decay)
            .init();
        Ok(Self {
            lora,
            tokens,
            token_optimizer,
            tokenizer: context.tokenizer,
            text_encoder,
            noiser: context.noiser,
            data: context.data,
            old,
            subspace,
            words,
            config,
            step,
        })
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The config the task trains with.
    pub fn config(&self) -> &TaskTrainingConfig {
        &self.config
    }

    /// One training step (see the module documentation). A NaN or infinite loss or gradient
    /// norm is [`Error::NonFiniteLoss`] and changes nothing.
    pub fn step(&mut self) -> Result<TaskStepReport> {
        let step = self.step + 1;
        let batch = self.draw_batch(&mut step_rng(self.config.seed, step as u64))?;
        let token_norm = self.tokens.mean_norm()?;
        let tokens_updated =
            keep_updating_tokens(token_norm, self.config.continual.token_norm_threshold);
        let regularizer = Regularizer {
            old: &self.old,
            subspace: self.subspace.as_ref(),
            config: &self.config,
        };
        let (report, mut gradients) = self
            .lora
            .step_with(&batch, |unet| regularizer.term(unet).map_err(into_lora))
            .map_err(|e| match e {
                LoraError::NonFiniteLoss {
                    denoise,
                    regularizer,
                    grad_norm,
                } => Error::NonFiniteLoss {
                    step,
                    denoise,
                    regularizer,
                    grad_norm,
                    checkpoint: None,
                },
                other => other.into(),
            })?;
        let token_grads = GradientsParams::from_module(&mut gradients, &self.tokens);
        if tokens_updated {
            self.tokens = self.token_optimizer.step(
                self.config.token_learning_rate,
                self.tokens.clone(),
                token_grads,
            );
        }
        if let Some(subspace) = self.subspace.as_mut() {
            let mut deltas = self.old.clone();
            deltas.push(
                attached_deltas(self.lora.unet())
                    .iter()
                    .map(LowRankDelta::detach)
                    .collect(),
            );
            subspace.descend(&deltas, self.config.optimizer.learning_rate)?;
        }
        self.step = step;
        Ok(TaskStepReport {
            step,
            loss: report.loss,
            regularizer: report.regularizer,
            grad_norm: report.grad_norm,
            token_norm,
            tokens_updated,
        })
    }

    /// Runs the remaining steps, calling `on_step` after each, and writes a checkpoint to
    /// `checkpoint` (atomically) every `checkpoint_every` steps. A non-finite loss (or gradient
    /// norm) stops with [`Error::NonFiniteLoss`] naming the last good checkpoint, which is left
    /// as it was.
    pub fn train(
        &mut self,
        checkpoint: Option<&Path>,
        mut on_step: impl FnMut(&TaskStepReport),
    ) -> Result<()> {
        let mut last_good: Option<PathBuf> =
            checkpoint.filter(|p| p.is_file()).map(Path::to_path_buf);
        while self.step < self.config.steps {
            let report = match self.step() {
                Ok(report) => report,
                Err(Error::NonFiniteLoss {
                    step,
                    denoise,
                    regularizer,
                    grad_norm,
                    ..
                }) => {
                    return Err(Error::NonFiniteLoss {
                        step,
                        denoise,
                        regularizer,
                        grad_norm,
                        checkpoint: last_good,
                    })
                }
                Err(e) => return Err(e),
            };
            on_step(&report);
            let every = self.config.checkpoint_every;
            if let Some(path) = checkpoint {
                if every > 0 && self.step.is_multiple_of(every) && self.step < self.config.steps {
                    write_checkpoint(path, &self.state()?, &self.words, &self.config)?;
                    last_good = Some(path.to_path_buf());
                }
            }
        }
        Ok(())
    }

    /// The denoising loss of a fixed batch drawn from `seed`, without any update: a
    /// comparable measure of fit before and after training.
    pub fn denoising_loss(&self, seed: u64) -> Result<f32> {
        let batch = self.draw_batch(&mut step_rng(seed, u64::MAX))?;
        let prediction =
            self.lora
                .unet()
                .forward(batch.noisy_latents, batch.timesteps, &batch.conditioning)?;
        Ok(mean_all((prediction - batch.target).powi_scalar(2))
            .into_scalar()
            .elem())
    }

    /// Everything a checkpoint holds: step, factors, tokens, both optimizers' moments and
    /// R2's state.
    pub fn state(&self) -> Result<TrainingState<B>> {
        Ok(TrainingState {
            step: self.step,
            adapter: self.lora.adapter()?,
            tokens: self.tokens.embeddings.val().detach(),
            lora_moments: self.lora.optimizer_state(),
            token_moments: adam_moments::<B, _, 3>(
                &self.token_optimizer,
                &[(self.tokens.embeddings.id, TOKENS.to_string())],
            ),
            subspace: self.subspace.clone(),
        })
    }

    /// Ends the task: its learner (factors and token rows, detached) and R2's state after it.
    pub fn finish(self) -> Result<(TaskLearner<B>, Option<CommonSubspace<B>>)> {
        let learner = TaskLearner {
            words: self.words.words.clone(),
            classes: self.words.classes.clone(),
            adapter: self.lora.adapter()?,
            tokens: self.tokens.embeddings.val().detach(),
        };
        Ok((learner, self.subspace))
    }

    /// A training batch from `rng`: see the module documentation.
    fn draw_batch(&self, rng: &mut ChaCha8Rng) -> Result<DenoisingBatch<B>> {
        let device = unet_device(self.lora.unet());
        let count = self.data.entries.len();
        let size = self.data.latent_size;
        let mut latents = Vec::with_capacity(self.config.batch_size);
        let mut captions = Vec::with_capacity(self.config.batch_size);
        for _ in 0..self.config.batch_size {
            let index = rng.random_range(0..count);
            let [_, c, h, w] = self.data.shape(index).unwrap_or_default();
            let noise = gaussian::<B, 4>(rng, [1, c, h, w], &device);
            let (top, left) = match self.config.crop {
                Crop::Center => (h.saturating_sub(size) / 2, w.saturating_sub(size) / 2),
                Crop::Random => (
                    rng.random_range(0..=h.saturating_sub(size)),
                    rng.random_range(0..=w.saturating_sub(size)),
                ),
            };
            latents.push(self.data.sample(index, noise, top, left)?);
            captions.push(self.data.entries[index].caption.clone());
        }
        let latents = Tensor::cat(latents, 0);
        let [batch, channels, h, w] = latents.dims();
        let mut noise = gaussian::<B, 4>(rng, [batch, channels, h, w], &device);
        if self.config.noise_offset > 0.0 {
            let offset = gaussian::<B, 4>(rng, [batch, channels, 1, 1], &device);
            noise = noise + offset.mul_scalar(self.config.noise_offset);
        }
        let train_steps = self.noiser.schedule().num_train_timesteps();
        let timesteps: Vec<usize> = (0..batch)
            .map(|_| rng.random_range(0..train_steps))
            .collect();
        let conditioning = self.tokens.encode(
            &self.tokenizer,
            &self.text_encoder,
            &captions,
            self.config.clip_skip,
        )?;
        Ok(DenoisingBatch::from_clean_latents(
            &self.noiser,
            latents,
            noise,
            &timesteps,
            conditioning,
        )?)
    }
}

/// The regularizer of step 1, borrowed from the trainer while the LoRA trainer steps.
struct Regularizer<'a, B: AutodiffBackend> {
    old: &'a [Vec<LowRankDelta<B>>],
    subspace: Option<&'a CommonSubspace<B>>,
    config: &'a TaskTrainingConfig,
}

impl<B: AutodiffBackend> Regularizer<'_, B> {
    /// `gamma1 R1 + gamma2 R2_g` on the attached (new) factors; `None` for task 1 and for
    /// methods without either term.
    fn term(&self, unet: &UNet2DConditionModel<B>) -> Result<Option<Tensor<B, 1>>> {
        let method = self.config.method;
        if self.old.is_empty() || !(method.uses_r1() || method.uses_r2()) {
            return Ok(None);
        }
        let new = attached_deltas(unet);
        let mut total: Option<Tensor<B, 1>> = None;
        let mut add = |term: Tensor<B, 1>| {
            total = Some(match total.take() {
                Some(t) => t + term,
                None => term,
            })
        };
        if method.uses_r1() {
            let old_up: Vec<Vec<Tensor<B, 2>>> = self
                .old
                .iter()
                .map(|task| task.iter().map(|d| d.up.clone()).collect())
                .collect();
            let new_up: Vec<Tensor<B, 2>> = new.iter().map(|d| d.up.clone()).collect();
            let r1 = orthogonal_regularizer(self.config.continual.r1_form, &old_up, &new_up)?;
            add(r1.mul_scalar(self.config.continual.gamma1));
        }
        if let (true, Some(subspace)) = (method.uses_r2(), self.subspace) {
            let r2 = subspace.r2_of_task(self.old.len(), &new)?;
            add(r2.mul_scalar(self.config.continual.gamma2));
        }
        Ok(total)
    }
}

/// The task's LoRA config: the configured one with the init seed offset by the task's index,
/// so that tasks do not share their initial down factors.
fn task_lora(config: &LoraConfig, task_index: usize) -> LoraConfig {
    config
        .clone()
        .with_init_seed(config.init_seed.wrapping_add(task_index as u64))
}

fn into_lora(error: Error) -> LoraError {
    match error {
        Error::Lora(e) => e,
        other => LoraError::InvalidInput(other.to_string()),
    }
}

fn unet_device<B: AutodiffBackend>(unet: &UNet2DConditionModel<B>) -> B::Device {
    unet.devices().into_iter().next().unwrap_or_default()
}

/// The random stream of step `step`.
fn step_rng(seed: u64, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    rng
}
