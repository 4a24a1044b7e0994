//! The text side of aggregation: prompts encoded with layer-wise concept tokens, and the
//! host copy of their rows that relations are computed from.
//!
//! Which prompt positions count: 1 through the first end-of-text token, inclusive. The start
//! token (position 0) is left out because CLIP's causal attention makes its output the same
//! for every prompt, so it would put a prompt-independent floor under every max; the padding
//! after the end token is left out because it only repeats the end of the prompt. The end
//! token itself counts: it is the summary of the whole prompt.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_continual::ConceptTokens;
use cidm_diffusion::{CLIPTextModel, CLIPTokenizer, PerLayer, TokenizedPrompt};

use crate::error::{EwaError, Result};
use crate::rows::TokenRows;

/// The positions of `prompt` that count for elastic weight aggregation: 1 through its first
/// end-of-text token (`eos_id`), inclusive.
pub fn counted_positions(prompt: &TokenizedPrompt, eos_id: u32) -> Vec<usize> {
    let last = prompt.ids.len().saturating_sub(1);
    let end = prompt
        .ids
        .iter()
        .skip(1)
        .position(|&id| id == eos_id)
        .map_or(last, |p| p + 1);
    (1..=end).collect()
}

/// What encodes prompts with layer-wise concept tokens: the tokenizer and frozen text encoder
/// (with every task's words registered) and the concept tokens holding all tasks' rows.
#[derive(Debug, Clone, Copy)]
pub struct PromptEncoder<'a, B: Backend> {
    /// The tokenizer, with the concept words added.
    pub tokenizer: &'a CLIPTokenizer,
    /// The frozen text encoder, with rows for the concept words.
    pub encoder: &'a CLIPTextModel<B>,
    /// The layer-wise rows of every task's concept words.
    pub concepts: &'a ConceptTokens<B>,
    /// Text-encoder layers to skip from the end (diffusers' `clip_skip`, usually 0).
    pub clip_skip: usize,
}

impl<B: Backend> PromptEncoder<'_, B> {
    /// Cross-attention layers L.
    pub fn layers(&self) -> usize {
        self.concepts.layers()
    }

    /// Encodes a batch of prompts in one call of the text encoder per layer copy (see
    /// [`ConceptTokens::encode`]). Truncated prompts are reported with a warning.
    pub fn encode<S: AsRef<str>>(&self, prompts: &[S]) -> Result<EncodedBatch<B>> {
        if prompts.is_empty() {
            return Err(EwaError::InvalidInput("no prompt to encode".into()));
        }
        let tokenized = self.tokenizer.encode_batch(prompts)?;
        for (prompt, t) in prompts.iter().zip(&tokenized) {
            if t.truncated {
                tracing::warn!(
                    prompt = prompt.as_ref(),
                    "prompt is longer than the tokenizer's length and was truncated"
                );
            }
        }
        let text = self
            .concepts
            .encode(self.tokenizer, self.encoder, prompts, self.clip_skip)?
            .text;
        Ok(EncodedBatch {
            text,
            tokenized,
            layers: self.layers(),
            eos_id: self.tokenizer.eos_id(),
        })
    }
}

/// A batch of encoded prompts: per-layer text embeddings (one shared tensor when no prompt
/// holds a concept word) and the token ids they came from.
#[derive(Debug, Clone)]
pub struct EncodedBatch<B: Backend> {
    text: PerLayer<Tensor<B, 3>>,
    tokenized: Vec<TokenizedPrompt>,
    layers: usize,
    eos_id: u32,
}

impl<B: Backend> EncodedBatch<B> {
    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.tokenized.len()
    }

    /// Whether the batch is empty (never, for a batch from [`PromptEncoder::encode`]).
    pub fn is_empty(&self) -> bool {
        self.tokenized.is_empty()
    }

    /// Cross-attention layers L.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// The text `[prompts, tokens, hidden]`, shared or one per cross-attention layer.
    pub fn text(&self) -> &PerLayer<Tensor<B, 3>> {
        &self.text
    }

    /// The text, consumed.
    pub fn into_text(self) -> PerLayer<Tensor<B, 3>> {
        self.text
    }

    /// The tokenized prompts, in batch order.
    pub fn tokenized(&self) -> &[TokenizedPrompt] {
        &self.tokenized
    }

    /// The device the text lives on.
    pub fn device(&self) -> B::Device {
        // A batch holds a shared tensor or at least one layer (concept tokens have L >= 1).
        self.text.get(0).device()
    }

    /// The text of prompt `index`, `[1, tokens, hidden]` per layer.
    pub fn prompt_text(&self, index: usize) -> Result<PerLayer<Tensor<B, 3>>> {
        self.check_index(index)?;
        let one = |t: &Tensor<B, 3>| t.clone().narrow(0, index, 1);
        Ok(match &self.text {
            PerLayer::Shared(t) => PerLayer::Shared(one(t)),
            PerLayer::Layers(ts) => PerLayer::Layers(ts.iter().map(one).collect()),
        })
    }

    /// The positions of prompt `index` that count (see [`counted_positions`]).
    pub fn counted_positions(&self, index: usize) -> Result<Vec<usize>> {
        self.check_index(index)?;
        Ok(counted_positions(&self.tokenized[index], self.eos_id))
    }

    /// The rows of prompt `index` at `positions`, one [`TokenRows`] per layer: one read-back
    /// of the text per distinct layer tensor.
    pub fn rows(&self, index: usize, positions: &[usize]) -> Result<Vec<TokenRows>> {
        self.check_index(index)?;
        let read = |t: &Tensor<B, 3>| -> Result<TokenRows> {
            let [_, tokens, dim] = t.dims();
            if let Some(&p) = positions.iter().find(|&&p| p >= tokens) {
                return Err(EwaError::Shape {
                    what: format!("position {p} of prompt {index}"),
                    found: vec![p],
                    expected: format!("a position below {tokens}"),
                });
            }
            let data = t.clone().narrow(0, index, 1).into_data().convert::<f32>();
            let values = data.as_slice::<f32>().map_err(|e| {
                EwaError::InvalidInput(format!("text embedding is not readable as f32: {e:?}"))
            })?;
            let picked = positions
                .iter()
                .flat_map(|&p| values[p * dim..(p + 1) * dim].iter().copied())
                .collect();
            TokenRows::new(dim, picked)
        };
        match &self.text {
            PerLayer::Shared(t) => Ok(vec![read(t)?; self.layers]),
            PerLayer::Layers(ts) => ts.iter().map(read).collect(),
        }
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.len() {
            return Err(EwaError::InvalidInput(format!(
                "prompt {index} of a batch of {}",
                self.len()
            )));
        }
        Ok(())
    }
}
