//! `UNet2DConditionModel`: the noise predictor of Stable Diffusion, built from its diffusers
//! config and weights.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::attention::BasicTransformerBlock;
use super::blocks::{BlockSpec, DownBlock, MidBlock, UpBlock};
use super::config::{memory_path, BlockKind, UNet2DConditionConfig};
use super::embeddings::{TimestepEmbedding, Timesteps};
use super::transformer_2d::{Transformer2DModel, TransformerSpec};
use crate::conditioning::Conditioning;
use crate::error::{Error, Result};
use crate::loading::{ModelDir, SafetensorsWeights, VarBuilder};
use crate::nn::{conv2d, conv_forward, group_norm, GroupNorm};

/// The conditional UNet of Stable Diffusion 1.x / 2.x.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    time_proj: Timesteps<B>,
    time_embedding: TimestepEmbedding<B>,
    conv_in: Conv2d<B>,
    /// Down blocks, highest resolution first.
    pub down_blocks: Vec<DownBlock<B>>,
    /// The mid block.
    pub mid_block: MidBlock<B>,
    /// Up blocks, lowest resolution first.
    pub up_blocks: Vec<UpBlock<B>>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    #[module(skip)]
    config: UNet2DConditionConfig,
    cross_attention_layers: usize,
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Builds the model with parameters from `vb`; `path` is what config errors name.
    pub fn new(config: &UNet2DConditionConfig, vb: &VarBuilder<B>, path: &Path) -> Result<Self> {
        let r = config.resolve(path)?;
        let boc = &config.block_out_channels;
        let blocks = boc.len();
        let (groups, eps, temb) = (config.norm_num_groups, config.norm_eps, r.time_embed_dim);
        let transformer = |kind: BlockKind, channels: usize, heads: usize, depth: usize| {
            (kind == BlockKind::CrossAttn).then_some(TransformerSpec {
                channels,
                heads,
                depth,
                context_dim: config.cross_attention_dim,
                groups,
                linear_projection: config.use_linear_projection,
            })
        };
        let mut next_layer = 0;

        let mut down_blocks = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let spec = BlockSpec {
                c_in: if i == 0 { boc[0] } else { boc[i - 1] },
                c_out: boc[i],
                temb,
                groups,
                eps,
                layers: r.layers[i],
                transformer: transformer(
                    r.down_kinds[i],
                    boc[i],
                    r.heads[i],
                    r.transformer_layers[i],
                ),
            };
            let padding = (i + 1 < blocks).then_some(config.downsample_padding);
            down_blocks.push(DownBlock::new(
                &vb.pp(format!("down_blocks.{i}")),
                &spec,
                padding,
                &mut next_layer,
            )?);
        }

        let last = blocks - 1;
        let mid_spec = BlockSpec {
            c_in: boc[last],
            c_out: boc[last],
            temb,
            groups,
            eps,
            layers: 1,
            transformer: transformer(
                BlockKind::CrossAttn,
                boc[last],
                r.heads[last],
                r.transformer_layers[last],
            ),
        };
        let mid_block = MidBlock::new(
            &vb.pp("mid_block"),
            &mid_spec,
            config.mid_block_scale_factor,
            &mut next_layer,
        )?;

        let mut up_blocks = Vec::with_capacity(blocks);
        let mut prev = boc[last];
        for i in 0..blocks {
            let rev = last - i;
            let spec = BlockSpec {
                c_in: prev,
                c_out: boc[rev],
                temb,
                groups,
                eps,
                layers: r.layers[rev] + 1,
                transformer: transformer(
                    r.up_kinds[i],
                    boc[rev],
                    r.heads[rev],
                    r.transformer_layers[rev],
                ),
            };
            let skip_in = boc[rev.saturating_sub(1)];
            up_blocks.push(UpBlock::new(
                &vb.pp(format!("up_blocks.{i}")),
                &spec,
                prev,
                skip_in,
                i < last,
                &mut next_layer,
            )?);
            prev = boc[rev];
        }

        Ok(Self {
            time_proj: Timesteps::new(
                boc[0],
                config.flip_sin_to_cos,
                config.freq_shift,
                vb.device(),
            ),
            time_embedding: TimestepEmbedding::new(&vb.pp("time_embedding"), boc[0], temb)?,
            conv_in: conv2d(
                &vb.pp("conv_in"),
                config.in_channels,
                boc[0],
                config.conv_in_kernel,
                1,
                config.conv_in_kernel / 2,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(&vb.pp("conv_norm_out"), groups, boc[0], eps)?,
            conv_out: conv2d(
                &vb.pp("conv_out"),
                boc[0],
                config.out_channels,
                config.conv_out_kernel,
                1,
                config.conv_out_kernel / 2,
            )?,
            config: config.clone(),
            cross_attention_layers: next_layer,
        })
    }

    /// A model with PyTorch-default random initialisation (tests, benchmarks, training from
    /// scratch); the draw follows the backend seed.
    pub fn random(config: &UNet2DConditionConfig, device: &B::Device) -> Result<Self> {
        Self::new(config, &VarBuilder::random(device), &memory_path())
    }

    /// Builds the model from diffusers-named weights and checks that every stored tensor was
    /// used: a checkpoint that does not match the config is an error, not a partial load.
    pub fn load(
        config: &UNet2DConditionConfig,
        weights: &SafetensorsWeights,
        device: &B::Device,
    ) -> Result<Self> {
        let model = Self::new(
            config,
            &VarBuilder::from_weights(weights, device),
            weights.path(),
        )?;
        weights.ensure_all_used()?;
        Ok(model)
    }

    /// Loads the `unet` component of a diffusers model directory (`variant` picks e.g. the
    /// `fp16` weights file).
    pub fn from_model_dir(
        dir: &ModelDir,
        variant: Option<&str>,
        device: &B::Device,
    ) -> Result<Self> {
        let (folder, weights) = dir.open_component(
            "unet",
            "UNet2DConditionModel",
            "diffusion_pytorch_model",
            variant,
        )?;
        let config = UNet2DConditionConfig::from_file(folder.join("config.json"))?;
        Self::load(&config, &weights, device)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// Number of cross-attention layers (16 for SD 1.5): the length of per-layer conditioning.
    pub fn cross_attention_layers(&self) -> usize {
        self.cross_attention_layers
    }

    /// The `[h, w]` at which each cross-attention layer runs (stable layer order) for a
    /// latent of `size` `[h, w]`: what regional masks must be built for. Follows the shapes
    /// of [`Self::forward`]: `conv_in` keeps the size, each downsampler halves it (rounding
    /// up with diffusers' padding 1), each upsampler returns to the matching skip's size.
    pub fn attention_resolutions(&self, size: [usize; 2]) -> Vec<[usize; 2]> {
        let k = self.config.conv_in_kernel;
        // A stride-2 kernel-3 conv: symmetric padding p on both sides, or diffusers' one
        // extra row and column when p is 0.
        let pad = match self.config.downsample_padding {
            0 => 1,
            p => 2 * p,
        };
        let conv_in = |n: usize| (n + 2 * (k / 2) + 1).saturating_sub(k);
        let down = |n: usize| (n + pad).saturating_sub(3) / 2 + 1;
        let depth = |t: &Transformer2DModel<B>| t.transformer_blocks.len();
        let mut res = size.map(conv_in);
        let mut skips = vec![res];
        let mut layers = Vec::with_capacity(self.cross_attention_layers);
        for block in &self.down_blocks {
            for j in 0..block.resnet_count() {
                if let Some(t) = block.attentions.get(j) {
                    layers.extend(std::iter::repeat_n(res, depth(t)));
                }
                skips.push(res);
            }
            if block.downsamples() {
                res = res.map(down);
                skips.push(res);
            }
        }
        for t in &self.mid_block.attentions {
            layers.extend(std::iter::repeat_n(res, depth(t)));
        }
        for block in &self.up_blocks {
            for j in 0..block.skips_needed() {
                skips.pop();
                if let Some(t) = block.attentions.get(j) {
                    layers.extend(std::iter::repeat_n(res, depth(t)));
                }
            }
            if block.upsamples() {
                res = skips.last().copied().unwrap_or(res);
            }
        }
        layers
    }

    /// Every transformer block, in the stable cross-attention layer order (down, mid, up);
    /// block `l` holds cross-attention layer `l`.
    pub fn transformer_blocks(&self) -> Vec<&BasicTransformerBlock<B>> {
        let down = self.down_blocks.iter().flat_map(|b| &b.attentions);
        let up = self.up_blocks.iter().flat_map(|b| &b.attentions);
        down.chain(&self.mid_block.attentions)
            .chain(up)
            .flat_map(|t| &t.transformer_blocks)
            .collect()
    }

    /// Mutable access to every transformer block, in the stable layer order, for attaching
    /// low-rank banks.
    pub fn transformer_blocks_mut(&mut self) -> Vec<&mut BasicTransformerBlock<B>> {
        let down = self.down_blocks.iter_mut().flat_map(|b| &mut b.attentions);
        let up = self.up_blocks.iter_mut().flat_map(|b| &mut b.attentions);
        down.chain(&mut self.mid_block.attentions)
            .chain(up)
            .flat_map(|t| &mut t.transformer_blocks)
            .collect()
    }

    /// Predicts the noise (or v, or x0, per the scheduler's prediction type) in `sample`.
    ///
    /// Inputs are checked before any work: wrong channel counts, batch sizes, conditioning
    /// widths, per-layer counts or gate widths give [`Error::InvalidInput`].
    ///
    /// # Shapes
    /// - sample: `[batch, in_channels, h, w]` (any `h`, `w` >= 1)
    /// - timesteps: `[batch]` or `[1]` (broadcast), in training-step units (0..1000)
    /// - output: `[batch, out_channels, h, w]`
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        cond: &Conditioning<B>,
    ) -> Result<Tensor<B, 4>> {
        let [batch, channels, height, width] = sample.dims();
        if batch == 0 || height == 0 || width == 0 {
            return Err(Error::InvalidInput(format!(
                "sample shape {:?} is empty",
                sample.dims()
            )));
        }
        if channels != self.config.in_channels {
            return Err(Error::InvalidInput(format!(
                "sample has {channels} channels, the UNet takes {}",
                self.config.in_channels
            )));
        }
        let timesteps = match timesteps.dims()[0] {
            n if n == batch => timesteps,
            1 => timesteps.repeat_dim(0, batch),
            n => {
                return Err(Error::InvalidInput(format!(
                    "{n} timesteps for a batch of {batch}"
                )))
            }
        };
        let ranks: Vec<Vec<usize>> = self
            .transformer_blocks()
            .iter()
            .map(|b| b.bank_ranks())
            .collect();
        cond.validate(
            &self.attention_resolutions([height, width]),
            self.config.cross_attention_dim,
            batch,
            &ranks,
        )?;

        let sample = if self.config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };
        let temb = self
            .time_embedding
            .forward(self.time_proj.forward(timesteps));
        let mut x = conv_forward(&self.conv_in, sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(x, &temb, cond, &mut skips);
        }
        x = self.mid_block.forward(x, &temb, cond);
        for block in &self.up_blocks {
            x = block.forward(x, &temb, cond, &mut skips);
        }
        Ok(conv_forward(
            &self.conv_out,
            self.conv_norm_out.forward_silu(x),
        ))
    }
}
