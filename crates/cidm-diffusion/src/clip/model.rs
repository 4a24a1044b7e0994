//! transformers' `CLIPTextModel`: embeddings, a stack of causal encoder layers and a final
//! layer norm, giving the per-token text embedding Stable Diffusion cross-attends to.

use std::ops::Range;
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::config::CLIPTextConfig;
use super::embeddings::CLIPTextEmbeddings;
use super::encoder::CLIPEncoderLayer;
use crate::error::{Error, Result};
use crate::loading::{ModelDir, SafetensorsWeights, VarBuilder};
use crate::nn::LayerNorm;
use crate::unet::config::memory_path;

/// The prefix of every tensor in the Stable Diffusion checkpoints and in transformers 4 saves;
/// transformers 5 writes the same names without it.
const TEXT_MODEL: &str = "text_model";

/// A buffer older transformers saved beside the weights (int64 `[1, max_positions]`, always
/// `0..max_positions`): accepted and ignored, since positions are implied by token order.
const POSITION_IDS: &str = "embeddings.position_ids";

/// The CLIP text encoder of Stable Diffusion.
#[derive(Module, Debug)]
pub struct CLIPTextModel<B: Backend> {
    /// Token and position tables.
    pub embeddings: CLIPTextEmbeddings<B>,
    /// `encoder.layers`, in order.
    pub layers: Vec<CLIPEncoderLayer<B>>,
    final_layer_norm: LayerNorm<B>,
    #[module(skip)]
    config: CLIPTextConfig,
}

impl<B: Backend> CLIPTextModel<B> {
    /// Builds the model with parameters from `vb` (at the level where `embeddings`,
    /// `encoder` and `final_layer_norm` live); `path` is what config errors name.
    pub fn new(config: &CLIPTextConfig, vb: &VarBuilder<B>, path: &Path) -> Result<Self> {
        let activation = config.validate(path)?;
        let hidden = config.hidden_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                CLIPEncoderLayer::new(
                    &vb.pp(format!("encoder.layers.{i}")),
                    hidden,
                    config.intermediate_size,
                    config.num_attention_heads,
                    activation,
                    config.layer_norm_eps,
                    true,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: CLIPTextEmbeddings::new(
                &vb.pp("embeddings"),
                config.vocab_size,
                config.max_position_embeddings,
                hidden,
            )?,
            layers,
            final_layer_norm: LayerNorm::new(
                &vb.pp("final_layer_norm"),
                hidden,
                config.layer_norm_eps,
            )?,
            config: config.clone(),
        })
    }

    /// A model with random initialisation (tests, benchmarks); the draw follows the backend
    /// seed.
    pub fn random(config: &CLIPTextConfig, device: &B::Device) -> Result<Self> {
        Self::new(config, &VarBuilder::random(device), &memory_path())
    }

    /// Builds the model from transformers-named weights, with or without the `text_model.`
    /// prefix, and checks that every stored tensor was used (the `position_ids` buffer of
    /// older checkpoints aside): a checkpoint that does not match the config is an error.
    pub fn load(
        config: &CLIPTextConfig,
        weights: &SafetensorsWeights,
        device: &B::Device,
    ) -> Result<Self> {
        let root = VarBuilder::from_weights(weights, device);
        let prefixed = format!("{TEXT_MODEL}.embeddings.token_embedding.weight");
        let vb = if weights.shape(&prefixed).is_some() {
            root.pp(TEXT_MODEL)
        } else {
            root
        };
        let model = Self::new(config, &vb, weights.path())?;
        weights.skip(&vb.path(POSITION_IDS), &[1, config.max_position_embeddings])?;
        weights.ensure_all_used()?;
        Ok(model)
    }

    /// Loads the `text_encoder` component of a diffusers model directory (`variant` picks
    /// e.g. the `fp16` weights file; sharded weights are found through their index).
    pub fn from_model_dir(
        dir: &ModelDir,
        variant: Option<&str>,
        device: &B::Device,
    ) -> Result<Self> {
        let (folder, weights) =
            dir.open_component("text_encoder", "CLIPTextModel", "model", variant)?;
        let config = CLIPTextConfig::from_file(folder.join("config.json"))?;
        Self::load(&config, &weights, device)
    }

    /// The config the model was built from, with `vocab_size` counting added tokens.
    pub fn config(&self) -> &CLIPTextConfig {
        &self.config
    }

    /// Rows of the token table, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.embeddings.vocab_size()
    }

    /// Appends token rows for new tokens (concept words) and returns their ids, which are
    /// the ids a tokenizer assigns when the same words are added to it in the same order.
    ///
    /// # Shapes
    /// - rows: `[new, hidden]`
    pub fn add_token_embeddings(&mut self, rows: Tensor<B, 2>) -> Result<Range<u32>> {
        let ids = self.embeddings.extend(rows)?;
        self.config.vocab_size = ids.end as usize;
        Ok(ids)
    }

    /// The token rows of a batch of id sequences, before positions are added: the place to
    /// substitute per-layer concept-token rows before [`Self::forward_embeds`].
    ///
    /// Every sequence must have the same length, between 1 and `max_position_embeddings`,
    /// and every id must be below [`Self::vocab_size`]; otherwise [`Error::InvalidInput`].
    ///
    /// # Shapes
    /// - ids: `batch` sequences of `tokens` ids
    /// - output: `[batch, tokens, hidden]`
    pub fn embed_tokens<S: AsRef<[u32]>>(&self, ids: &[S]) -> Result<Tensor<B, 3>> {
        let tokens = ids.first().map(|s| s.as_ref().len()).unwrap_or(0);
        if ids.is_empty() || tokens == 0 {
            return Err(Error::InvalidInput(
                "the token batch is empty (no sequences or no tokens)".into(),
            ));
        }
        self.check_length(tokens)?;
        let vocab = self.vocab_size();
        let mut flat = Vec::with_capacity(ids.len() * tokens);
        for (i, sequence) in ids.iter().enumerate() {
            let sequence = sequence.as_ref();
            if sequence.len() != tokens {
                return Err(Error::InvalidInput(format!(
                    "sequence {i} has {} tokens, sequence 0 has {tokens}: pad them to one length",
                    sequence.len()
                )));
            }
            if let Some(&id) = sequence.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::InvalidInput(format!(
                    "token id {id} in sequence {i} is outside the vocabulary of {vocab}"
                )));
            }
            flat.extend(sequence.iter().map(|&id| i64::from(id)));
        }
        let device = self.embeddings.token_embedding.device();
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [ids.len(), tokens]), &device);
        Ok(self.embeddings.embed_tokens(ids))
    }

    /// Encodes token rows (from [`Self::embed_tokens`], possibly edited).
    ///
    /// `clip_skip` is diffusers' option: 0 gives `last_hidden_state`; `k >= 1` gives the
    /// output of layer `num_hidden_layers - k` (`hidden_states[-(k + 1)]`) through the final
    /// layer norm, and skips the layers after it. A width other than `hidden_size`, more
    /// tokens than `max_position_embeddings` or `clip_skip > num_hidden_layers` is an
    /// [`Error::InvalidInput`].
    ///
    /// # Shapes
    /// - embeds: `[batch, tokens, hidden]` -> `[batch, tokens, hidden]`
    pub fn forward_embeds(&self, embeds: Tensor<B, 3>, clip_skip: usize) -> Result<Tensor<B, 3>> {
        let [batch, tokens, width] = embeds.dims();
        if batch == 0 {
            return Err(Error::InvalidInput("the embedding batch is empty".into()));
        }
        if width != self.config.hidden_size {
            return Err(Error::InvalidInput(format!(
                "token embeddings are {width} wide, the text encoder takes {}",
                self.config.hidden_size
            )));
        }
        self.check_length(tokens)?;
        let layers = self.layers.len();
        if clip_skip > layers {
            return Err(Error::InvalidInput(format!(
                "clip_skip {clip_skip} exceeds the {layers} encoder layers"
            )));
        }
        let x = self
            .layers
            .iter()
            .take(layers - clip_skip)
            .fold(self.embeddings.add_positions(embeds), |x, layer| {
                layer.forward(x)
            });
        Ok(self.final_layer_norm.forward(x))
    }

    /// Encodes a batch of id sequences: [`Self::embed_tokens`] then [`Self::forward_embeds`].
    ///
    /// # Shapes
    /// - ids: `batch` sequences of `tokens` ids
    /// - output: `[batch, tokens, hidden]`
    pub fn forward<S: AsRef<[u32]>>(&self, ids: &[S], clip_skip: usize) -> Result<Tensor<B, 3>> {
        self.forward_embeds(self.embed_tokens(ids)?, clip_skip)
    }

    fn check_length(&self, tokens: usize) -> Result<()> {
        let max = self.embeddings.max_positions();
        if tokens == 0 || tokens > max {
            return Err(Error::InvalidInput(format!(
                "{tokens} tokens; the text encoder takes 1 to {max}"
            )));
        }
        Ok(())
    }
}
