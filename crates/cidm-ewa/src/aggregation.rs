//! [`Ewa`]: the stored tasks' adapters stacked into one gated bank, their concept embeddings,
//! and the settings that turn a prompt into per-layer gates.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::{Conditioning, PerLayer, UNet2DConditionModel};
use cidm_lora::{LoraAdapter, LoraStack};

use crate::config::{EwaConfig, EwaVariant};
use crate::error::{EwaError, Result};
use crate::prompt::{EncodedBatch, PromptEncoder};
use crate::task_embeddings::TaskEmbeddings;
use crate::weights::EwaWeights;

/// One prompt's UNet inputs: its text and the gates of its task mixture.
#[derive(Debug, Clone)]
pub struct PromptConditioning<B: Backend> {
    /// Text `[1, tokens, hidden]`, shared or one per cross-attention layer.
    pub text: PerLayer<Tensor<B, 3>>,
    /// Gates `[1, total_rank]` per layer for the stacked bank (alpha applied).
    pub gates: PerLayer<Tensor<B, 2>>,
    /// The weights the gates came from.
    pub weights: EwaWeights,
}

/// Elastic weight aggregation over the stored tasks (METHOD.md section 4).
///
/// The adapters are stacked once into one bank per projection ([`LoraStack`]); a prompt's
/// per-layer weights w^l become gates `alpha * w_i^l` repeated over task i's rank columns, so
/// the bank computes `alpha * sum_i w_i^l ΔW_i^l x` exactly, without a dense delta, and a
/// batch can mix prompts. Weights are computed once per prompt, never per step.
#[derive(Debug, Clone)]
pub struct Ewa<B: Backend> {
    config: EwaConfig,
    tasks: TaskEmbeddings,
    stack: LoraStack<B>,
}

impl<B: Backend> Ewa<B> {
    /// Stacks `adapters` (one per task, in task order) with their tasks' concept embeddings.
    /// Errors when the config is invalid or the adapter and task counts differ.
    pub fn new(
        config: EwaConfig,
        adapters: &[LoraAdapter<B>],
        tasks: TaskEmbeddings,
    ) -> Result<Self> {
        config.validate()?;
        if adapters.len() != tasks.task_count() {
            return Err(EwaError::Shape {
                what: "task adapters".into(),
                found: vec![adapters.len()],
                expected: format!("one per task ({})", tasks.task_count()),
            });
        }
        Ok(Self {
            config,
            stack: LoraStack::new(adapters)?,
            tasks,
        })
    }

    /// [`Ewa::new`] with the task embeddings encoded from `task_words` (each task's concept
    /// words, in task order) by [`TaskEmbeddings::encode`].
    pub fn encode(
        config: EwaConfig,
        adapters: &[LoraAdapter<B>],
        task_words: &[Vec<String>],
        encoder: &PromptEncoder<'_, B>,
    ) -> Result<Self> {
        let tasks = TaskEmbeddings::encode(encoder, &config, task_words)?;
        Self::new(config, adapters, tasks)
    }

    /// The settings.
    pub fn config(&self) -> &EwaConfig {
        &self.config
    }

    /// The tasks' concept embeddings (cache them to skip re-encoding).
    pub fn tasks(&self) -> &TaskEmbeddings {
        &self.tasks
    }

    /// The stacked adapters.
    pub fn stack(&self) -> &LoraStack<B> {
        &self.stack
    }

    /// Attaches the stacked bank to `unet`; run it with gates from [`Ewa::gates`].
    pub fn attach(&self, unet: &mut UNet2DConditionModel<B>) -> Result<()> {
        Ok(self.stack.attach(unet)?)
    }

    /// The weights of prompt `index` of an encoded batch (host arithmetic on the positions
    /// that count; `off` reads nothing back).
    pub fn weights(&self, batch: &EncodedBatch<B>, index: usize) -> Result<EwaWeights> {
        if self.config.variant == EwaVariant::Off {
            return Ok(EwaWeights::equal(
                self.tasks.layers(),
                self.tasks.task_count(),
            ));
        }
        if batch.layers() != self.tasks.layers() {
            return Err(EwaError::Shape {
                what: "encoded prompt layers".into(),
                found: vec![batch.layers()],
                expected: format!("{} (the task embeddings')", self.tasks.layers()),
            });
        }
        let rows = batch.rows(index, &batch.counted_positions(index)?)?;
        EwaWeights::compute(self.config.variant, &rows, &self.tasks)
    }

    /// Gates `[1, total_rank]` per layer: `alpha * w_i^l` over task i's columns.
    pub fn gates(
        &self,
        weights: &EwaWeights,
        device: &B::Device,
    ) -> Result<PerLayer<Tensor<B, 2>>> {
        let tasks = self.tasks.task_count();
        if weights.task_count() != tasks || weights.layers() != self.tasks.layers() {
            return Err(EwaError::Shape {
                what: "EWA weights".into(),
                found: vec![weights.layers(), weights.task_count()],
                expected: format!("[{}, {tasks}]", self.tasks.layers()),
            });
        }
        let alpha = self.config.alpha;
        let row = |w: &[f64]| {
            let values: Vec<f32> = w.iter().map(|&x| (alpha * x) as f32).collect();
            Tensor::<B, 2>::from_data(TensorData::new(values, [1, tasks]), device)
        };
        Ok(self.stack.per_layer_gates(PerLayer::Layers(
            weights.values().iter().map(|w| row(w)).collect(),
        ))?)
    }

    /// Encodes `prompts` in one batch and returns each one's text, weights and gates.
    pub fn prompts<S: AsRef<str>>(
        &self,
        encoder: &PromptEncoder<'_, B>,
        prompts: &[S],
    ) -> Result<Vec<PromptConditioning<B>>> {
        let batch = encoder.encode(prompts)?;
        self.prompts_of(&batch)
    }

    /// [`Ewa::prompts`] for an already encoded batch.
    pub fn prompts_of(&self, batch: &EncodedBatch<B>) -> Result<Vec<PromptConditioning<B>>> {
        let device = batch.device();
        (0..batch.len())
            .map(|i| {
                let weights = self.weights(batch, i)?;
                for (l, w) in weights.values().iter().enumerate() {
                    tracing::debug!(prompt = i, layer = l, weights = ?w, "EWA weights");
                }
                Ok(PromptConditioning {
                    text: batch.prompt_text(i)?,
                    gates: self.gates(&weights, &device)?,
                    weights,
                })
            })
            .collect()
    }

    /// The conditioning of classifier-free guidance for one prompt: text
    /// `[negative; prompt]` and the prompt's gates, shared by both halves (the aggregated
    /// model is one model: the negative prompt runs with the same task mixture, as a merged
    /// model would). Pass it to [`cidm_diffusion::pipeline::sample`] with a UNet that has
    /// the stack attached ([`Ewa::attach`]).
    pub fn guided_conditioning(
        &self,
        encoder: &PromptEncoder<'_, B>,
        prompt: &str,
        negative: &str,
    ) -> Result<(Conditioning<B>, EwaWeights)> {
        let (conditioning, mut weights) =
            self.batch_conditioning(encoder, &[prompt], Some(&[negative]))?;
        Ok((conditioning, weights.remove(0)))
    }

    /// The conditioning of a batch of prompts, encoded in one batch, each prompt's weights
    /// computed once. With `negatives` (one per prompt) it is the classifier-free guidance
    /// batch `[negatives; prompts]` of [`Self::guided_conditioning`], every negative run with
    /// its prompt's gates; without, the prompts alone. Returns the conditioning and the
    /// prompts' weights.
    pub fn batch_conditioning<S: AsRef<str>, T: AsRef<str>>(
        &self,
        encoder: &PromptEncoder<'_, B>,
        prompts: &[S],
        negatives: Option<&[T]>,
    ) -> Result<(Conditioning<B>, Vec<EwaWeights>)> {
        let n = prompts.len();
        let negatives: Vec<&str> = negatives
            .map(|ns| ns.iter().map(AsRef::as_ref).collect())
            .unwrap_or_default();
        if n == 0 || !(negatives.is_empty() || negatives.len() == n) {
            return Err(EwaError::InvalidInput(format!(
                "{n} prompts and {} negative prompts: need at least one prompt and one \
                 negative per prompt",
                negatives.len()
            )));
        }
        let first = negatives.len();
        let mut texts = negatives;
        texts.extend(prompts.iter().map(AsRef::as_ref));
        let batch = encoder.encode(&texts)?;
        let device = batch.device();
        let weights = (first..first + n)
            .map(|i| self.weights(&batch, i))
            .collect::<Result<Vec<_>>>()?;
        let gates = weights
            .iter()
            .map(|w| self.gates(w, &device))
            .collect::<Result<Vec<_>>>()?;
        let sources: Vec<&PerLayer<Tensor<B, 2>>> = if first > 0 {
            gates.iter().chain(&gates).collect()
        } else {
            gates.iter().collect()
        };
        let conditioning = Conditioning {
            text: batch.into_text(),
            gates: Some(cat_batch(&sources, self.tasks.layers())),
            regions: None,
        };
        Ok((conditioning, weights))
    }
}

/// Per-layer tensors of several samples joined along the batch axis (shared stays shared
/// when every input is shared).
fn cat_batch<B: Backend>(
    parts: &[&PerLayer<Tensor<B, 2>>],
    layers: usize,
) -> PerLayer<Tensor<B, 2>> {
    if parts.iter().all(|p| matches!(p, PerLayer::Shared(_))) {
        return PerLayer::Shared(Tensor::cat(
            parts.iter().map(|p| p.get(0).clone()).collect(),
            0,
        ));
    }
    PerLayer::Layers(
        (0..layers)
            .map(|l| Tensor::cat(parts.iter().map(|p| p.get(l).clone()).collect(), 0))
            .collect(),
    )
}
