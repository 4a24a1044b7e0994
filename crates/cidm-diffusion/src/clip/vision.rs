//! transformers' `CLIPVisionEmbeddings` and `CLIPVisionModel`: a ViT that cuts the image into
//! patches, prepends a class token, and runs the CLIP encoder layers with full (not causal)
//! attention; the class token's output, through `post_layernorm`, is the pooled image feature.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::encoder::CLIPEncoderLayer;
use super::vision_config::CLIPVisionConfig;
use crate::error::{Error, Result};
use crate::loading::{Init, VarBuilder};
use crate::nn::{conv_forward, conv_weight, LayerNorm};
use crate::unet::config::memory_path;

/// Bound of the uniform draw for the random class and position rows: the standard deviation
/// of transformers' `normal(0, 0.02)` init (see the text embeddings).
const RANDOM_BOUND: f64 = 0.02 * 1.732_050_807_568_877_2;

/// The patch convolution (no bias), the class token and the position table.
#[derive(Module, Debug)]
pub struct CLIPVisionEmbeddings<B: Backend> {
    /// `class_embedding` `[hidden]`: the token whose output is pooled.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// `patch_embedding`: `[hidden, 3, patch, patch]` with stride `patch`.
    pub patch_embedding: Conv2d<B>,
    /// `position_embedding.weight` `[patches + 1, hidden]`.
    pub position_embedding: Param<Tensor<B, 2>>,
}

impl<B: Backend> CLIPVisionEmbeddings<B> {
    /// Builds the three parameters from `vb` at the `embeddings` prefix.
    pub fn new(vb: &VarBuilder<B>, config: &CLIPVisionConfig) -> Result<Self> {
        let (hidden, patch) = (config.hidden_size, config.patch_size);
        let channels = config.num_channels;
        let init = Init::Uniform(RANDOM_BOUND);
        Ok(Self {
            class_embedding: vb.param("class_embedding", [hidden], init)?,
            patch_embedding: Conv2d {
                weight: conv_weight(
                    vb,
                    "patch_embedding.weight",
                    [hidden, channels, patch, patch],
                    Init::fan_in(channels * patch * patch),
                )?,
                bias: None,
                stride: [patch, patch],
                kernel_size: [patch, patch],
                dilation: [1, 1],
                groups: 1,
                padding: PaddingConfig2d::Valid,
            },
            position_embedding: vb.param(
                "position_embedding.weight",
                [config.num_positions(), hidden],
                init,
            )?,
        })
    }

    /// `[class, patch_1, ..., patch_n] + positions`, patches in row-major order.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, image_size, image_size]` -> `[batch, patches + 1, hidden]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let batch = pixels.dims()[0];
        let patches = conv_forward(&self.patch_embedding, pixels);
        let [_, hidden, rows, cols] = patches.dims();
        let patches = patches
            .reshape([batch, hidden, rows * cols])
            .swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, hidden])
            .expand([batch, 1, hidden]);
        Tensor::cat(vec![class, patches], 1) + self.position_embedding.val().unsqueeze::<3>()
    }
}

/// The CLIP image encoder (without the projection, which belongs to the CLIP model).
#[derive(Module, Debug)]
pub struct CLIPVisionModel<B: Backend> {
    /// Patches, class token, positions.
    pub embeddings: CLIPVisionEmbeddings<B>,
    pre_layrnorm: LayerNorm<B>,
    /// `encoder.layers`, in order, with full attention.
    pub layers: Vec<CLIPEncoderLayer<B>>,
    post_layernorm: LayerNorm<B>,
    #[module(skip)]
    config: CLIPVisionConfig,
}

impl<B: Backend> CLIPVisionModel<B> {
    /// Builds the model with parameters from `vb` (at the level where `embeddings`,
    /// `pre_layrnorm`, `encoder` and `post_layernorm` live: `vision_model` in a CLIP
    /// checkpoint); `path` is what config errors name. `pre_layrnorm` is transformers'
    /// spelling, kept because it is the checkpoint's.
    pub fn new(config: &CLIPVisionConfig, vb: &VarBuilder<B>, path: &Path) -> Result<Self> {
        let activation = config.validate(path)?;
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                CLIPEncoderLayer::new(
                    &vb.pp(format!("encoder.layers.{i}")),
                    hidden,
                    config.intermediate_size,
                    config.num_attention_heads,
                    activation,
                    eps,
                    false,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: CLIPVisionEmbeddings::new(&vb.pp("embeddings"), config)?,
            pre_layrnorm: LayerNorm::new(&vb.pp("pre_layrnorm"), hidden, eps)?,
            layers,
            post_layernorm: LayerNorm::new(&vb.pp("post_layernorm"), hidden, eps)?,
            config: config.clone(),
        })
    }

    /// A model with random initialisation (tests, benchmarks); the draw follows the backend
    /// seed.
    pub fn random(config: &CLIPVisionConfig, device: &B::Device) -> Result<Self> {
        Self::new(config, &VarBuilder::random(device), &memory_path())
    }

    /// The config the model was built from.
    pub fn config(&self) -> &CLIPVisionConfig {
        &self.config
    }

    /// transformers' `last_hidden_state`: the encoder output of every token, class first.
    /// Pixels that are not `[batch >= 1, 3, image_size, image_size]` are an
    /// [`Error::InvalidInput`] (transformers refuses other sizes too unless asked to
    /// interpolate positions, which this does not do).
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, image_size, image_size]` -> `[batch, patches + 1, hidden]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let [batch, channels, height, width] = pixels.dims();
        let size = self.config.image_size;
        if batch == 0 || channels != self.config.num_channels || height != size || width != size {
            return Err(Error::InvalidInput(format!(
                "pixel values of shape [{batch}, {channels}, {height}, {width}]; the vision \
                 model takes [n >= 1, {}, {size}, {size}]",
                self.config.num_channels
            )));
        }
        let x = self.pre_layrnorm.forward(self.embeddings.forward(pixels));
        Ok(self.layers.iter().fold(x, |x, layer| layer.forward(x)))
    }

    /// transformers' `pooler_output`: the class token's output through `post_layernorm`.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, image_size, image_size]` -> `[batch, hidden]`
    pub fn pooled(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let hidden = self.forward(pixels)?;
        let [batch, _, width] = hidden.dims();
        let class = hidden.slice([0..batch, 0..1, 0..width]);
        Ok(self.post_layernorm.forward(class).reshape([batch, width]))
    }
}
