//! transformers' `CLIPModel`: the text and vision encoders with their projections into one
//! shared embedding space, as the paper's metrics use them (METHOD.md section 6), loaded from
//! a transformers model directory (`config.json` + `model.safetensors`).

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::{CLIPTextConfig, MAX_WIDTH};
use super::model::CLIPTextModel;
use super::vision::CLIPVisionModel;
use super::vision_config::CLIPVisionConfig;
use crate::error::{Error, Result};
use crate::loading::json::read_json;
use crate::loading::{ModelDir, SafetensorsWeights, VarBuilder};
use crate::nn::{linear, linear_forward};
use crate::unet::config::memory_path;

/// The `eos_token_id` of configs written before transformers fixed it (PR 24773; OpenAI's own
/// CLIP configs still say 2): transformers then pools the token with the largest id, which is
/// the end token for CLIP's vocabulary.
const LEGACY_EOS: u32 = 2;

/// The configuration of a transformers `CLIPModel` (`config.json` of e.g.
/// `openai/clip-vit-base-patch32`). Field defaults are transformers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CLIPConfig {
    /// The text encoder.
    pub text_config: CLIPTextConfig,
    /// The image encoder.
    pub vision_config: CLIPVisionConfig,
    /// Width of the shared embedding space (default 512).
    pub projection_dim: usize,
    /// The initial `logit_scale` (default 2.6592 = ln(1 / 0.07)); a checkpoint stores the
    /// trained value.
    pub logit_scale_init_value: f64,
}

impl Default for CLIPConfig {
    fn default() -> Self {
        Self {
            text_config: CLIPTextConfig::default(),
            vision_config: CLIPVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

impl CLIPConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config: Self = read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks both sub-configs and the projection; `path` is what errors name.
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.text_config.validate(path)?;
        self.vision_config.validate(path)?;
        if self.projection_dim == 0 || self.projection_dim > MAX_WIDTH {
            return Err(Error::config(
                path,
                format!(
                    "projection_dim = {} is outside 1..={MAX_WIDTH}",
                    self.projection_dim
                ),
            ));
        }
        if !self.logit_scale_init_value.is_finite() {
            return Err(Error::config(path, "logit_scale_init_value must be finite"));
        }
        Ok(())
    }
}

/// Where transformers' `CLIPTextModel` pools each sequence: the first `eos_token_id`, or,
/// for configs with the legacy `eos_token_id` 2, the first largest id (torch's `argmax`).
/// A sequence without the end token pools position 0, as transformers' `argmax` of an
/// all-false mask does.
pub fn pooled_positions<S: AsRef<[u32]>>(ids: &[S], eos_token_id: u32) -> Vec<usize> {
    ids.iter()
        .map(|sequence| {
            let sequence = sequence.as_ref();
            if eos_token_id == LEGACY_EOS {
                let max = sequence.iter().copied().max().unwrap_or(0);
                sequence.iter().position(|&id| id == max)
            } else {
                sequence.iter().position(|&id| id == eos_token_id)
            }
            .unwrap_or(0)
        })
        .collect()
}

/// CLIP: text and image encoders and their projections (no bias) into the shared space.
#[derive(Module, Debug)]
pub struct CLIPModel<B: Backend> {
    /// The text encoder (`text_model.*`).
    pub text_model: CLIPTextModel<B>,
    /// The image encoder (`vision_model.*`).
    pub vision_model: CLIPVisionModel<B>,
    /// `visual_projection.weight` `[projection_dim, vision hidden]`.
    pub visual_projection: Linear<B>,
    /// `text_projection.weight` `[projection_dim, text hidden]`.
    pub text_projection: Linear<B>,
    #[module(skip)]
    logit_scale: f32,
    #[module(skip)]
    config: CLIPConfig,
}

impl<B: Backend> CLIPModel<B> {
    fn build(
        config: &CLIPConfig,
        vb: &VarBuilder<B>,
        path: &Path,
        logit_scale: f32,
    ) -> Result<Self> {
        config.validate(path)?;
        let (text, vision) = (&config.text_config, &config.vision_config);
        Ok(Self {
            text_model: CLIPTextModel::new(text, &vb.pp("text_model"), path)?,
            vision_model: CLIPVisionModel::new(vision, &vb.pp("vision_model"), path)?,
            visual_projection: linear(
                &vb.pp("visual_projection"),
                vision.hidden_size,
                config.projection_dim,
                false,
            )?,
            text_projection: linear(
                &vb.pp("text_projection"),
                text.hidden_size,
                config.projection_dim,
                false,
            )?,
            logit_scale,
            config: config.clone(),
        })
    }

    /// A model with random initialisation (tests, benchmarks) and the config's initial logit
    /// scale; the draw follows the backend seed.
    pub fn random(config: &CLIPConfig, device: &B::Device) -> Result<Self> {
        let scale = config.logit_scale_init_value as f32;
        Self::build(config, &VarBuilder::random(device), &memory_path(), scale)
    }

    /// Builds the model from transformers-named weights and checks that every stored tensor
    /// was used (the int64 `position_ids` buffers older checkpoints store aside).
    pub fn load(
        config: &CLIPConfig,
        weights: &SafetensorsWeights,
        device: &B::Device,
    ) -> Result<Self> {
        let scale = weights.read_f32("logit_scale", &[])?;
        let scale = scale.to_vec::<f32>().map_err(|e| Error::CorruptWeights {
            path: weights.path().to_path_buf(),
            reason: format!("`logit_scale` is not readable as f32: {e:?}"),
        })?[0];
        let vb = VarBuilder::from_weights(weights, device);
        let model = Self::build(config, &vb, weights.path(), scale)?;
        let text_positions = config.text_config.max_position_embeddings;
        let vision_positions = config.vision_config.num_positions();
        weights.skip("text_model.embeddings.position_ids", &[1, text_positions])?;
        weights.skip(
            "vision_model.embeddings.position_ids",
            &[1, vision_positions],
        )?;
        weights.ensure_all_used()?;
        Ok(model)
    }

    /// Loads a transformers `CLIPModel` directory: `config.json` and `model.safetensors`
    /// (or its sharded index). The tokenizer and image processor of the same directory load
    /// with [`super::CLIPTokenizer::from_folder`] and [`super::CLIPImageProcessor::from_dir`].
    pub fn from_dir(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = CLIPConfig::from_file(dir.join("config.json"))?;
        let weights = ModelDir::weights(dir, "model", None)?;
        Self::load(&config, &weights, device)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &CLIPConfig {
        &self.config
    }

    /// The learned temperature (its log, as stored): logits are `exp(logit_scale) * cos`.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// transformers' `get_image_features`: the pooled image feature through
    /// `visual_projection` (not normalised).
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, image_size, image_size]` -> `[batch, projection_dim]`
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(linear_forward(
            &self.visual_projection,
            self.vision_model.pooled(pixels)?,
        ))
    }

    /// transformers' `get_text_features`: the text encoder's output at each sequence's end
    /// token ([`pooled_positions`]) through `text_projection` (not normalised). Sequences
    /// must have one length (a tokenizer padding to `model_max_length` gives that).
    ///
    /// # Shapes
    /// - ids: `batch` sequences of `tokens` ids -> `[batch, projection_dim]`
    pub fn text_features<S: AsRef<[u32]>>(&self, ids: &[S]) -> Result<Tensor<B, 2>> {
        let hidden = self.text_model.forward(ids, 0)?;
        let [batch, tokens, width] = hidden.dims();
        let rows: Vec<i64> = pooled_positions(ids, self.config.text_config.eos_token_id)
            .into_iter()
            .enumerate()
            .map(|(b, position)| (b * tokens + position) as i64)
            .collect();
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [batch]), &hidden.device());
        let pooled = hidden.reshape([batch * tokens, width]).select(0, rows);
        Ok(linear_forward(&self.text_projection, pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::pooled_positions;

    /// The first end token is pooled, not the padding copies of it after it.
    #[test]
    fn pools_first_end_token() {
        let ids = [vec![5u32, 9, 7, 9, 9], vec![5, 1, 2, 3, 9]];
        assert_eq!(pooled_positions(&ids, 9), vec![1, 4]);
    }

    /// Legacy configs (`eos_token_id` 2) pool the first largest id, as transformers does;
    /// a sequence with no end token pools position 0.
    #[test]
    fn legacy_and_missing_end_tokens() {
        let ids = [vec![3u32, 49407, 49407], vec![3, 8, 8]];
        assert_eq!(pooled_positions(&ids, 2), vec![1, 1]);
        assert_eq!(pooled_positions(&ids, 49407), vec![1, 0]);
    }
}
