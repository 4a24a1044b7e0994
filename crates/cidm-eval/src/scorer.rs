//! A loaded CLIP model directory (model, tokenizer, image processor) that turns images and
//! prompts into embeddings and scores them with the paper's metrics.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_diffusion::vae::Rgb8Image;
use cidm_diffusion::{CLIPImageProcessor, CLIPModel, CLIPTokenizer};

use crate::error::{EvalError, Result};
use crate::metrics::{image_alignment, text_alignment, Score};

/// Images or prompts encoded per forward pass by default: bounds memory (a ViT-B/32 batch of
/// 16 at 224 px holds a few hundred MB of activations on the CPU) without losing throughput.
pub const DEFAULT_BATCH: usize = 16;

/// The CLIP model of a transformers `CLIPModel` directory with its tokenizer and processor.
#[derive(Debug)]
pub struct ClipScorer<B: Backend> {
    model: CLIPModel<B>,
    tokenizer: CLIPTokenizer,
    processor: CLIPImageProcessor,
    device: B::Device,
    batch: usize,
}

impl<B: Backend> ClipScorer<B> {
    /// Loads `config.json` + `model.safetensors`, the tokenizer files and
    /// `preprocessor_config.json` of `dir` (e.g. a download of `openai/clip-vit-base-patch32`,
    /// the model the paper uses).
    pub fn from_dir(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let model = CLIPModel::from_dir(dir, device)?;
        let tokenizer = CLIPTokenizer::from_folder(dir)?;
        let processor = CLIPImageProcessor::from_dir(dir)?;
        Self::new(model, tokenizer, processor, device)
    }

    /// Puts loaded parts together. A tokenizer whose sequences are longer than the text
    /// encoder's position table, or a processor whose output is not the vision model's input
    /// size, is an [`EvalError::InvalidInput`] here rather than at the first forward pass.
    pub fn new(
        model: CLIPModel<B>,
        tokenizer: CLIPTokenizer,
        processor: CLIPImageProcessor,
        device: &B::Device,
    ) -> Result<Self> {
        let config = model.config();
        let positions = config.text_config.max_position_embeddings;
        if tokenizer.model_max_length() > positions {
            return Err(EvalError::InvalidInput(format!(
                "the tokenizer pads prompts to {} tokens, the text encoder takes at most {positions}",
                tokenizer.model_max_length()
            )));
        }
        let size = config.vision_config.image_size;
        if let Some(crop) = processor.crop {
            if crop != (size, size) {
                return Err(EvalError::InvalidInput(format!(
                    "the image processor crops to {}x{}, the vision model takes {size}x{size}",
                    crop.0, crop.1
                )));
            }
        }
        Ok(Self {
            model,
            tokenizer,
            processor,
            device: device.clone(),
            batch: DEFAULT_BATCH,
        })
    }

    /// Encodes at most `batch` (at least 1) images or prompts per forward pass.
    pub fn with_batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The loaded model.
    pub fn model(&self) -> &CLIPModel<B> {
        &self.model
    }

    /// The image processor.
    pub fn processor(&self) -> &CLIPImageProcessor {
        &self.processor
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &CLIPTokenizer {
        &self.tokenizer
    }

    fn rows(features: Tensor<B, 2>) -> Result<Vec<Vec<f32>>> {
        let [_, width] = features.dims();
        let values = features
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| EvalError::InvalidInput(format!("features are not f32: {e:?}")))?;
        Ok(values.chunks(width).map(<[f32]>::to_vec).collect())
    }

    /// The projected CLIP embedding of each image (transformers' `get_image_features`).
    pub fn image_embeddings(&self, images: &[Rgb8Image]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch) {
            let pixels = self.processor.batch::<B>(chunk, &self.device)?;
            out.extend(Self::rows(self.model.image_features(pixels)?)?);
        }
        Ok(out)
    }

    /// The projected CLIP embedding of each prompt (transformers' `get_text_features` on
    /// ids padded to the tokenizer's length; longer prompts are truncated, as CLIP's are).
    pub fn text_embeddings<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(self.batch) {
            let ids: Vec<Vec<u32>> = self
                .tokenizer
                .encode_batch(chunk)?
                .into_iter()
                .map(|t| t.ids)
                .collect();
            out.extend(Self::rows(self.model.text_features(&ids)?)?);
        }
        Ok(out)
    }

    /// Image alignment of `generated` against `references` (see [`image_alignment`]).
    pub fn image_alignment(
        &self,
        generated: &[Rgb8Image],
        references: &[Rgb8Image],
    ) -> Result<Score> {
        image_alignment(
            &self.image_embeddings(generated)?,
            &self.image_embeddings(references)?,
        )
    }

    /// Text alignment of each image against its prompt (see [`text_alignment`]); prompts
    /// should already have their concept words replaced
    /// ([`crate::prompts::replace_class_words`]).
    pub fn text_alignment<S: AsRef<str>>(
        &self,
        images: &[Rgb8Image],
        prompts: &[S],
    ) -> Result<Score> {
        if images.len() != prompts.len() {
            return Err(EvalError::InvalidInput(format!(
                "{} images but {} prompts: each image needs its prompt",
                images.len(),
                prompts.len()
            )));
        }
        text_alignment(
            &self.image_embeddings(images)?,
            &self.text_embeddings(prompts)?,
        )
    }
}
