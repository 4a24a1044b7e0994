//! The core's one adaptation mechanism: a projection is a frozen base linear plus an optional
//! low-rank bank `y = x W0 + b + scale * ((x D) * gates) U`.
//!
//! The core gives the bank no meaning. A single LoRA is a bank of rank r with no gates; elastic
//! weight aggregation stacks every task's factors into one bank of rank g*r and passes per-sample
//! gates built from its weights, so one batched call runs a different task mixture per sample
//! without ever forming a dense `in x out` delta.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::nn::{affine, linear_forward};
use crate::precision::cast_to;

/// Low-rank factors: `down` `[in, rank]`, `up` `[rank, out]`, and a scalar `scale` (alpha / r
/// for a LoRA).
#[derive(Module, Debug)]
pub struct LowRankBank<B: Backend> {
    /// Down factor `[in, rank]` (PEFT's `lora_A`, transposed).
    pub down: Param<Tensor<B, 2>>,
    /// Up factor `[rank, out]` (PEFT's `lora_B`, transposed; the paper's A).
    pub up: Param<Tensor<B, 2>>,
    /// Multiplies the bank's contribution.
    pub scale: f64,
}

impl<B: Backend> LowRankBank<B> {
    /// A bank from its factors; errors when the inner dimensions disagree.
    pub fn new(down: Tensor<B, 2>, up: Tensor<B, 2>, scale: f64) -> Result<Self> {
        let [_, rank] = down.dims();
        let [rank_up, _] = up.dims();
        if rank != rank_up {
            return Err(Error::InvalidInput(format!(
                "low-rank bank: down factor has rank {rank}, up factor has rank {rank_up}"
            )));
        }
        Ok(Self {
            down: Param::from_tensor(down),
            up: Param::from_tensor(up),
            scale,
        })
    }

    /// The bank's total rank R (columns of `down`).
    pub fn rank(&self) -> usize {
        self.down.dims()[1]
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.down.dims()[0]
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.up.dims()[1]
    }

    /// The bank's contribution `scale * ((x D) * gates) U`, computed in x's dtype: factors and
    /// gates of another dtype (f32 factors under an f16 model, see [`crate::precision`]) are
    /// cast to it, as PyTorch's autocast does, and their gradients come back in their own.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, in]`
    /// - gates: `[batch, rank]` or `[1, rank]` (shared by the batch)
    /// - output: `[batch, tokens, out]`
    pub fn forward(&self, x: Tensor<B, 3>, gates: Option<&Tensor<B, 2>>) -> Tensor<B, 3> {
        let [batch, tokens, d_in] = x.dims();
        let rank = self.rank();
        let dtype = x.dtype();
        let down = cast_to(self.down.val(), dtype);
        let hidden = affine(x.reshape([batch * tokens, d_in]), down, None);
        let hidden = match gates {
            Some(gates) => {
                let gate_batch = gates.dims()[0];
                let gates = cast_to(gates.clone(), dtype).reshape([gate_batch, 1, rank]);
                hidden.reshape([batch, tokens, rank]) * gates
            }
            None => hidden.reshape([batch, tokens, rank]),
        };
        // The scale multiplies the `[rank, out]` factor rather than the `[rows, out]` product:
        // the same values to f32 rounding, one pass over a few thousand values instead of one
        // over the layer's whole output.
        let up = cast_to(self.up.val(), dtype) * self.scale;
        let out = affine(hidden.reshape([batch * tokens, rank]), up, None);
        out.reshape([batch, tokens, self.d_out()])
    }
}

/// A base linear layer with an optional low-rank bank. Adapters are attached by the crates
/// above the core (`cidm-lora`, `cidm-ewa`); with no bank this is exactly the base layer.
#[derive(Module, Debug)]
pub struct AdaptableLinear<B: Backend> {
    /// The pretrained projection, `weight` stored `[in, out]`.
    pub base: Linear<B>,
    /// The attached bank, if any.
    pub bank: Option<LowRankBank<B>>,
}

impl<B: Backend> AdaptableLinear<B> {
    /// Wraps a base linear with no bank.
    pub fn new(base: Linear<B>) -> Self {
        Self { base, bank: None }
    }

    /// Input features of the base layer.
    pub fn d_in(&self) -> usize {
        self.base.weight.dims()[0]
    }

    /// Output features of the base layer.
    pub fn d_out(&self) -> usize {
        self.base.weight.dims()[1]
    }

    /// Attaches (or replaces) the bank; errors when its sizes do not fit the base layer.
    pub fn set_bank(&mut self, bank: LowRankBank<B>) -> Result<()> {
        if bank.d_in() != self.d_in() || bank.d_out() != self.d_out() {
            return Err(Error::InvalidInput(format!(
                "low-rank bank is {}x{}, the projection is {}x{}",
                bank.d_in(),
                bank.d_out(),
                self.d_in(),
                self.d_out()
            )));
        }
        self.bank = Some(bank);
        Ok(())
    }

    /// Removes and returns the bank.
    pub fn take_bank(&mut self) -> Option<LowRankBank<B>> {
        self.bank.take()
    }

    /// `x W0 + b`, plus the bank's gated contribution when a bank is attached. The UNet checks
    /// gate widths against bank ranks before its forward pass starts.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, in]` -> `[batch, tokens, out]`
    /// - gates: `[batch, rank]` or `[1, rank]`
    pub fn forward(&self, x: Tensor<B, 3>, gates: Option<&Tensor<B, 2>>) -> Tensor<B, 3> {
        match &self.bank {
            None => linear_forward(&self.base, x),
            Some(bank) => linear_forward(&self.base, x.clone()) + bank.forward(x, gates),
        }
    }
}
