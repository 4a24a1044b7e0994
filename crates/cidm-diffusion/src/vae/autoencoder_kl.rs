//! `AutoencoderKL`: Stable Diffusion's VAE, built from its diffusers config and weights, with
//! the latent scaling the diffusers pipelines apply around it.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::attention::AttentionKeys;
use super::config::AutoencoderKLConfig;
use super::decoder::Decoder;
use super::distribution::DiagonalGaussian;
use super::encoder::Encoder;
use crate::error::{Error, Result};
use crate::loading::{ModelDir, SafetensorsWeights, VarBuilder};
use crate::nn::{conv2d, conv_forward};
use crate::unet::config::memory_path;

/// The KL-regularised autoencoder between images in `[-1, 1]` and latents.
///
/// [`encode`](Self::encode) / [`decode`](Self::decode) are diffusers' `encode` / `decode`;
/// [`encode_latents`](Self::encode_latents) / [`decode_latents`](Self::decode_latents) add
/// the pipelines' scaling: `latents = (z - shift_factor) * scaling_factor` and back (SD 1.x/2.x
/// have no shift: `z * 0.18215`). Tiling and slicing are not implemented.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    encoder: Encoder<B>,
    decoder: Decoder<B>,
    quant_conv: Option<Conv2d<B>>,
    post_quant_conv: Option<Conv2d<B>>,
    #[module(skip)]
    config: AutoencoderKLConfig,
}

impl<B: Backend> AutoencoderKL<B> {
    /// Builds the model with parameters from `vb`, the mid-block attention projections under
    /// the names `keys` finds; `path` is what config errors name.
    pub fn new(
        config: &AutoencoderKLConfig,
        vb: &VarBuilder<B>,
        keys: AttentionKeys<'_>,
        path: &Path,
    ) -> Result<Self> {
        config.validate(path)?;
        let latent = config.latent_channels;
        Ok(Self {
            encoder: Encoder::new(&vb.pp("encoder"), config, keys)?,
            decoder: Decoder::new(&vb.pp("decoder"), config, keys)?,
            quant_conv: config
                .use_quant_conv
                .then(|| conv2d(&vb.pp("quant_conv"), 2 * latent, 2 * latent, 1, 1, 0))
                .transpose()?,
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| conv2d(&vb.pp("post_quant_conv"), latent, latent, 1, 1, 0))
                .transpose()?,
            config: config.clone(),
        })
    }

    /// A model with PyTorch-default random initialisation; the draw follows the backend seed.
    pub fn random(config: &AutoencoderKLConfig, device: &B::Device) -> Result<Self> {
        Self::new(
            config,
            &VarBuilder::random(device),
            AttentionKeys::Current,
            &memory_path(),
        )
    }

    /// Builds the model from diffusers-named weights (either attention naming, see
    /// [`super::attention`]) and checks that every stored tensor was used.
    pub fn load(
        config: &AutoencoderKLConfig,
        weights: &SafetensorsWeights,
        device: &B::Device,
    ) -> Result<Self> {
        let model = Self::new(
            config,
            &VarBuilder::from_weights(weights, device),
            AttentionKeys::DetectIn(weights),
            weights.path(),
        )?;
        weights.ensure_all_used()?;
        Ok(model)
    }

    /// Loads the `vae` component (class `AutoencoderKL`) of a diffusers model directory;
    /// `variant` picks e.g. the `fp16` weights file.
    pub fn from_model_dir(
        dir: &ModelDir,
        variant: Option<&str>,
        device: &B::Device,
    ) -> Result<Self> {
        let (folder, weights) =
            dir.open_component("vae", "AutoencoderKL", "diffusion_pytorch_model", variant)?;
        let config = AutoencoderKLConfig::from_file(folder.join("config.json"))?;
        Self::load(&config, &weights, device)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// The posterior over latents of `images`.
    ///
    /// # Shapes
    /// - images: `[batch, in_channels, h, w]`, values in `[-1, 1]`, `h`, `w` >= the
    ///   downsample factor `f` (8 for SD); other sizes are [`Error::InvalidInput`]
    /// - posterior: `[batch, latent_channels, floor(h / f), floor(w / f)]`
    pub fn encode(&self, images: Tensor<B, 4>) -> Result<DiagonalGaussian<B>> {
        let [batch, channels, h, w] = images.dims();
        let f = self.config.downsample_factor();
        if channels != self.config.in_channels || batch == 0 || h < f || w < f {
            return Err(Error::InvalidInput(format!(
                "images of shape {:?}: the VAE takes [batch >= 1, {}, h >= {f}, w >= {f}]",
                images.dims(),
                self.config.in_channels
            )));
        }
        let moments = self.encoder.forward(images);
        let moments = match &self.quant_conv {
            Some(conv) => conv_forward(conv, moments),
            None => moments,
        };
        DiagonalGaussian::from_moments(moments)
    }

    /// Decodes unscaled latents `z` (a posterior sample) to images.
    ///
    /// # Shapes
    /// - z: `[batch, latent_channels, h, w]`
    /// - output: `[batch, out_channels, f h, f w]`, nominally in `[-1, 1]`
    pub fn decode(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [batch, channels, h, w] = z.dims();
        if channels != self.config.latent_channels || batch == 0 || h == 0 || w == 0 {
            return Err(Error::InvalidInput(format!(
                "latents of shape {:?}: the VAE decodes [batch >= 1, {}, h >= 1, w >= 1]",
                z.dims(),
                self.config.latent_channels
            )));
        }
        let z = match &self.post_quant_conv {
            Some(conv) => conv_forward(conv, z),
            None => z,
        };
        Ok(self.decoder.forward(z))
    }

    /// The latents the UNet works in: `(z - shift_factor) * scaling_factor`.
    ///
    /// # Shapes
    /// - z: `[batch, c, h, w]` -> `[batch, c, h, w]`
    pub fn scale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match self.config.shift_factor {
            Some(shift) => z - shift,
            None => z,
        };
        z * self.config.scaling_factor
    }

    /// The inverse of [`Self::scale_latents`]: `latents / scaling_factor + shift_factor`.
    ///
    /// # Shapes
    /// - latents: `[batch, c, h, w]` -> `[batch, c, h, w]`
    pub fn unscale_latents(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = latents / self.config.scaling_factor;
        match self.config.shift_factor {
            Some(shift) => z + shift,
            None => z,
        }
    }

    /// Encodes `images` to scaled latents, as training and image-to-image pipelines do: the
    /// posterior sampled with `noise` (standard normal, chosen by the caller), or its mode when
    /// `noise` is `None`, then [`Self::scale_latents`].
    ///
    /// # Shapes
    /// - images: `[batch, in_channels, h, w]`; noise: the posterior's shape
    /// - output: `[batch, latent_channels, floor(h / f), floor(w / f)]`
    pub fn encode_latents(
        &self,
        images: Tensor<B, 4>,
        noise: Option<Tensor<B, 4>>,
    ) -> Result<Tensor<B, 4>> {
        let posterior = self.encode(images)?;
        let z = match noise {
            Some(noise) => posterior.sample(noise)?,
            None => posterior.mode(),
        };
        Ok(self.scale_latents(z))
    }

    /// Decodes scaled latents, as the pipelines do after denoising:
    /// `decode(latents / scaling_factor + shift_factor)`.
    ///
    /// # Shapes
    /// - latents: `[batch, latent_channels, h, w]` -> `[batch, out_channels, f h, f w]`
    pub fn decode_latents(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.decode(self.unscale_latents(latents))
    }
}
