//! The UNet's blocks (diffusers' `unet_2d_blocks`): `DownBlock2D` / `CrossAttnDownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `UpBlock2D` / `CrossAttnUpBlock2D`. The plain and cross-attention
//! variants differ only in whether a transformer follows each ResNet, so each pair is one type
//! with a possibly empty `attentions` list.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use super::transformer_2d::{Transformer2DModel, TransformerSpec};
use crate::conditioning::Conditioning;
use crate::error::Result;
use crate::loading::VarBuilder;

/// Shared sizes of one block.
pub(crate) struct BlockSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub layers: usize,
    /// `Some` for cross-attention blocks.
    pub transformer: Option<TransformerSpec>,
}

fn attentions<B: Backend>(
    vb: &VarBuilder<B>,
    spec: &BlockSpec,
    next_layer: &mut usize,
) -> Result<Vec<Transformer2DModel<B>>> {
    match &spec.transformer {
        None => Ok(Vec::new()),
        Some(t) => (0..spec.layers)
            .map(|j| Transformer2DModel::new(&vb.pp(format!("attentions.{j}")), t, next_layer))
            .collect(),
    }
}

/// A down block: ResNets (each optionally followed by a transformer), then an optional
/// strided downsampler.
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    /// Transformers, one per ResNet, or none for `DownBlock2D`.
    pub attentions: Vec<Transformer2DModel<B>>,
    downsampler: Option<Downsample2D<B>>,
}

impl<B: Backend> DownBlock<B> {
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        spec: &BlockSpec,
        downsample_padding: Option<usize>,
        next_layer: &mut usize,
    ) -> Result<Self> {
        let resnets = (0..spec.layers)
            .map(|j| {
                let c_in = if j == 0 { spec.c_in } else { spec.c_out };
                ResnetBlock2D::new(
                    &vb.pp(format!("resnets.{j}")),
                    c_in,
                    spec.c_out,
                    Some(spec.temb),
                    spec.groups,
                    spec.eps,
                    1.0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = attentions(vb, spec, next_layer)?;
        let downsampler = downsample_padding
            .map(|p| Downsample2D::new(&vb.pp("downsamplers.0"), spec.c_out, p))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// How many skip connections the block pushes before its downsampler.
    pub(crate) fn resnet_count(&self) -> usize {
        self.resnets.len()
    }

    /// Whether the block ends with a strided downsampler.
    pub(crate) fn downsamples(&self) -> bool {
        self.downsampler.is_some()
    }

    /// Runs the block, pushing every intermediate output onto `skips` for the up path.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        cond: &Conditioning<B>,
        skips: &mut Vec<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(x, cond);
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2DCrossAttn` with one layer: ResNet, transformer, ResNet.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    /// The transformer between the two ResNets.
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> MidBlock<B> {
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        spec: &BlockSpec,
        scale: f64,
        next_layer: &mut usize,
    ) -> Result<Self> {
        let c = spec.c_out;
        let resnets = (0..2)
            .map(|j| {
                ResnetBlock2D::new(
                    &vb.pp(format!("resnets.{j}")),
                    c,
                    c,
                    Some(spec.temb),
                    spec.groups,
                    spec.eps,
                    scale,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            resnets,
            attentions: attentions(vb, spec, next_layer)?,
        })
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]` -> `[batch, c, h, w]`
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        cond: &Conditioning<B>,
    ) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(attn.forward(x, cond), Some(temb));
        }
        x
    }
}

/// An up block: ResNets over the input concatenated with skip connections (each optionally
/// followed by a transformer), then an optional upsampler.
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    /// Transformers, one per ResNet, or none for `UpBlock2D`.
    pub attentions: Vec<Transformer2DModel<B>>,
    upsampler: Option<Upsample2D<B>>,
}

impl<B: Backend> UpBlock<B> {
    /// `prev` is the previous up block's output width, `skip_in` the input width of the
    /// matching down block; `spec.c_in` is unused here.
    pub(crate) fn new(
        vb: &VarBuilder<B>,
        spec: &BlockSpec,
        prev: usize,
        skip_in: usize,
        upsample: bool,
        next_layer: &mut usize,
    ) -> Result<Self> {
        let resnets = (0..spec.layers)
            .map(|j| {
                let skip = if j == spec.layers - 1 {
                    skip_in
                } else {
                    spec.c_out
                };
                let c_in = if j == 0 { prev } else { spec.c_out };
                ResnetBlock2D::new(
                    &vb.pp(format!("resnets.{j}")),
                    c_in + skip,
                    spec.c_out,
                    Some(spec.temb),
                    spec.groups,
                    spec.eps,
                    1.0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = attentions(vb, spec, next_layer)?;
        let upsampler = if upsample {
            Some(Upsample2D::new(&vb.pp("upsamplers.0"), spec.c_out)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// How many skip connections the block consumes.
    pub fn skips_needed(&self) -> usize {
        self.resnets.len()
    }

    /// Whether the block ends with an upsampler.
    pub(crate) fn upsamples(&self) -> bool {
        self.upsampler.is_some()
    }

    /// Runs the block, popping its skip connections from the end of `skips`; the upsampler
    /// targets the size of the next skip so that odd latent sizes round-trip.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        cond: &Conditioning<B>,
        skips: &mut Vec<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the UNet keeps one skip per up-block ResNet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(x, cond);
            }
        }
        if let Some(up) = &self.upsampler {
            let [_, _, h, w] = skips
                .last()
                .expect("an upsampling block is never the last")
                .dims();
            x = up.forward(x, [h, w]);
        }
        x
    }
}
