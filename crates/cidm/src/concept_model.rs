//! Generation with a task store: every stored task's LoRA and concept tokens on one base
//! model, combined as the store's method calls for (METHOD.md sections 4 and 5).
//!
//! - `cidm`, `r1-only`, `r2-only`: elastic weight aggregation, `code` variant by default;
//! - `lora-m`: the equal-weight merge (EWA `off`, weight 1/g each);
//! - `finetune`: the last task's LoRA alone, which was trained on top of every earlier one.
//!
//! Every task's words are registered with their layer-wise rows, so one prompt may name
//! concepts of different tasks; regions (`a <dog1> dog@0,0,0.5,1`) go through the regional
//! sampler with each region's own EWA weights.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_continual::store::{BaseFingerprint, TaskStore};
use cidm_continual::{ConceptTokens, Method, TaskLearner};
use cidm_diffusion::pipeline::GenerationRequest;
use cidm_diffusion::vae::Rgb8Image;
use cidm_diffusion::StableDiffusion;
use cidm_ewa::{Ewa, EwaConfig, EwaVariant, EwaWeights, PromptEncoder};
use cidm_regions::{sample_regional, RegionSpec, RegionalConfig, RegionalStep};

/// Errors of store-based generation: each layer's own, plus the ones of combining them.
#[derive(Debug, thiserror::Error)]
pub enum ConceptModelError {
    /// Loading or running the diffusion core failed.
    #[error(transparent)]
    Diffusion(#[from] cidm_diffusion::Error),
    /// The store could not be read, or was made for another base model.
    #[error(transparent)]
    Store(#[from] cidm_continual::Error),
    /// Elastic weight aggregation rejected an input.
    #[error(transparent)]
    Ewa(#[from] cidm_ewa::EwaError),
    /// Regional sampling rejected an input (boxes, region count).
    #[error(transparent)]
    Regions(#[from] cidm_regions::RegionError),
    /// The store has no task yet.
    #[error("the task store {0} holds no task yet: train one with `cidm train-task`")]
    EmptyStore(String),
    /// An EWA variant was asked of a store that holds one LoRA continued across tasks.
    #[error(
        "the store was trained with `finetune`: its last LoRA already holds every task, so \
         EWA (`--ewa {0}`) does not apply; leave `--ewa` out"
    )]
    EwaNotApplicable(EwaVariant),
    /// The request's clip skip differs from the one the concept tokens were trained with.
    #[error("the concept tokens were trained with clip skip {trained}, the request asks {asked}")]
    ClipSkip {
        /// The store's.
        trained: usize,
        /// The request's.
        asked: usize,
    },
}

/// Result alias of this module.
pub type Result<T, E = ConceptModelError> = std::result::Result<T, E>;

/// How the stored tasks' LoRAs are combined at inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Every task, weighted by elastic weight aggregation of this variant (`off` is LoRA-M).
    Ewa(EwaVariant),
    /// The last task's LoRA alone, at full strength (sequential fine-tuning).
    LastTask,
}

impl Aggregation {
    /// The aggregation a store trained with `method` calls for, or the EWA variant asked
    /// (`asked`), which any method but `finetune` accepts.
    pub fn for_method(method: Method, asked: Option<EwaVariant>) -> Result<Self> {
        match (method, asked) {
            (Method::Finetune, Some(variant)) => Err(ConceptModelError::EwaNotApplicable(variant)),
            (Method::Finetune, None) => Ok(Aggregation::LastTask),
            (Method::LoraM, None) => Ok(Aggregation::Ewa(EwaVariant::Off)),
            (_, None) => Ok(Aggregation::Ewa(EwaVariant::Code)),
            (_, Some(variant)) => Ok(Aggregation::Ewa(variant)),
        }
    }
}

/// A base model with a task store's learners installed: concept words registered with their
/// layer-wise rows, and the tasks' LoRAs stacked in one gated bank on the UNet.
#[derive(Debug)]
pub struct ConceptModel<B: Backend> {
    /// The base model; its tokenizer and text encoder know the concept words and its UNet
    /// carries the stacked bank.
    pub sd: StableDiffusion<B>,
    /// Every task's concept words and layer-wise rows.
    pub concepts: ConceptTokens<B>,
    /// The stacked LoRAs and the task embeddings their weights are computed from.
    pub ewa: Ewa<B>,
    /// How the tasks are combined.
    pub aggregation: Aggregation,
    /// The text-encoder layers skipped when the tokens were trained (prompts use the same).
    pub clip_skip: usize,
}

impl<B: Backend> ConceptModel<B> {
    /// Loads the base model from its diffusers directory and installs every task of `store`.
    ///
    /// Errors: the store was made for another base model (fingerprints differ), it holds no
    /// task, a learner does not fit the model, or anything the loaders refuse.
    pub fn from_store(
        model: &Path,
        variant: Option<&str>,
        store: &TaskStore,
        aggregation: Aggregation,
        device: &B::Device,
    ) -> Result<Self> {
        store.check_base(&BaseFingerprint::of_model_dir(model, variant)?)?;
        let Some(last) = store.tasks().last() else {
            return Err(ConceptModelError::EmptyStore(
                store.root().display().to_string(),
            ));
        };
        let clip_skip = store.task_manifest(last.index)?.training.clip_skip;
        let learners = store.load_learners::<B>(device)?;
        let sd = StableDiffusion::<B>::from_model_dir(model, variant, device)?;
        Self::new(sd, learners, aggregation, clip_skip)
    }

    /// Installs `learners` (in task order) on `sd`: registers every word with its rows,
    /// encodes the task embeddings, and attaches the stacked bank to the UNet.
    pub fn new(
        mut sd: StableDiffusion<B>,
        learners: Vec<TaskLearner<B>>,
        aggregation: Aggregation,
        clip_skip: usize,
    ) -> Result<Self> {
        if learners.is_empty() {
            return Err(ConceptModelError::EmptyStore("(no learners given)".into()));
        }
        let words: Vec<String> = learners.iter().flat_map(|l| l.words.clone()).collect();
        let rows = Tensor::cat(learners.iter().map(|l| l.tokens.clone()).collect(), 0);
        let concepts =
            ConceptTokens::register_rows(&words, rows, &mut sd.tokenizer, &mut sd.text_encoder)?;
        let (config, used) = match aggregation {
            Aggregation::Ewa(variant) => (EwaConfig::for_variant(variant), &learners[..]),
            // One task at weight 1: `off` over a single adapter, at alpha 1.
            Aggregation::LastTask => (
                EwaConfig::for_variant(EwaVariant::Off),
                &learners[learners.len() - 1..],
            ),
        };
        let adapters: Vec<_> = used.iter().map(|l| l.adapter.clone()).collect();
        let task_words: Vec<Vec<String>> = used.iter().map(|l| l.words.clone()).collect();
        let ewa = {
            let encoder = PromptEncoder {
                tokenizer: &sd.tokenizer,
                encoder: &sd.text_encoder,
                concepts: &concepts,
                clip_skip,
            };
            Ewa::encode(config, &adapters, &task_words, &encoder)?
        };
        ewa.attach(&mut sd.unet)?;
        Ok(Self {
            sd,
            concepts,
            ewa,
            aggregation,
            clip_skip,
        })
    }

    /// Runs `request` to its final latents with each prompt's own task weights (computed once
    /// per prompt, not per step), returned beside the latents. `initial` replaces the seeded
    /// noise.
    ///
    /// # Shapes
    /// - initial: `[prompts, in_channels, height / f, width / f]`
    pub fn generate_latents(
        &self,
        request: &GenerationRequest,
        initial: Option<Tensor<B, 4>>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<(Tensor<B, 4>, Vec<EwaWeights>)> {
        let encoder = self.encoder(request)?;
        let negatives: Vec<&str> = (0..request.prompts.len())
            .map(|i| request.negative(i))
            .collect();
        let negatives = request.guided().then_some(&negatives[..]);
        let (conditioning, weights) =
            self.ewa
                .batch_conditioning(&encoder, &request.prompts, negatives)?;
        let latents = self
            .sd
            .generate_latents_with(request, &conditioning, initial, on_step)?;
        Ok((latents, weights))
    }

    /// Runs `request` with regions: every image is sampled by the regional sampler, one
    /// batched UNet call of U + 2 samples per step, each region with its own EWA weights.
    /// `on_step(done, total)` counts the steps of all images together.
    ///
    /// # Shapes
    /// - initial: `[prompts, in_channels, height / f, width / f]`
    pub fn generate_regional_latents(
        &self,
        request: &GenerationRequest,
        regions: &[RegionSpec],
        config: &RegionalConfig,
        initial: Option<Tensor<B, 4>>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        let encoder = self.encoder(request)?;
        let latents = self.sd.initial_latents(request, initial)?;
        let [images, _, h, w] = latents.dims();
        let settings = self.sd.sampling_settings(request);
        let total = images * request.steps;
        let mut out = Vec::with_capacity(images);
        for i in 0..images {
            let step = RegionalStep::from_prompts(
                &self.sd.unet,
                &self.ewa,
                &encoder,
                &request.prompts[i],
                request.negative(i),
                regions,
                [h, w],
                config,
            )?;
            let mut report = |done: usize, _: usize| on_step(i * request.steps + done, total);
            out.push(sample_regional(
                &self.sd.unet,
                latents.clone().narrow(0, i, 1),
                &step,
                &settings,
                &mut report,
            )?);
        }
        Ok(Tensor::cat(out, 0))
    }

    /// Decodes final latents to 8-bit RGB images.
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Vec<Rgb8Image>> {
        Ok(self.sd.decode(latents)?)
    }

    /// The prompt encoder over the installed words, for `request`'s clip skip.
    fn encoder(&self, request: &GenerationRequest) -> Result<PromptEncoder<'_, B>> {
        if request.clip_skip != self.clip_skip {
            return Err(ConceptModelError::ClipSkip {
                trained: self.clip_skip,
                asked: request.clip_skip,
            });
        }
        Ok(PromptEncoder {
            tokenizer: &self.sd.tokenizer,
            encoder: &self.sd.text_encoder,
            concepts: &self.concepts,
            clip_skip: self.clip_skip,
        })
    }
}
