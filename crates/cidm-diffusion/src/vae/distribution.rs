//! diffusers' `DiagonalGaussianDistribution`: the encoder's posterior over latents.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// Bounds diffusers clamps the log-variance to, so that `exp` neither overflows nor collapses.
pub const LOGVAR_RANGE: (f64, f64) = (-30.0, 20.0);

/// A Gaussian with diagonal covariance per latent element.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian<B: Backend> {
    mean: Tensor<B, 4>,
    logvar: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussian<B> {
    /// Splits encoder moments into mean (first half of the channels) and log-variance (second
    /// half, clamped to [`LOGVAR_RANGE`]).
    ///
    /// # Shapes
    /// - moments: `[batch, 2 c, h, w]`; errors when the channel count is odd
    pub fn from_moments(moments: Tensor<B, 4>) -> Result<Self> {
        let [_, channels, _, _] = moments.dims();
        if channels % 2 != 0 {
            return Err(Error::InvalidInput(format!(
                "moments need an even channel count (mean and logvar), got {channels}"
            )));
        }
        let c = channels / 2;
        let mean = moments.clone().narrow(1, 0, c);
        let logvar = moments
            .narrow(1, c, c)
            .clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1);
        Ok(Self { mean, logvar })
    }

    /// The mean; also the distribution's mode.
    ///
    /// # Shapes
    /// - `[batch, c, h, w]`
    pub fn mean(&self) -> &Tensor<B, 4> {
        &self.mean
    }

    /// The clamped log-variance.
    ///
    /// # Shapes
    /// - `[batch, c, h, w]`
    pub fn logvar(&self) -> &Tensor<B, 4> {
        &self.logvar
    }

    /// The standard deviation `exp(logvar / 2)`.
    ///
    /// # Shapes
    /// - `[batch, c, h, w]`
    pub fn std(&self) -> Tensor<B, 4> {
        (self.logvar.clone() * 0.5).exp()
    }

    /// `mean + std * noise`: a draw with noise the caller chose (standard normal for a proper
    /// sample), so that runs are reproducible and backend-independent.
    ///
    /// # Shapes
    /// - noise: `[batch, c, h, w]`, the mean's shape -> `[batch, c, h, w]`
    pub fn sample(&self, noise: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::InvalidInput(format!(
                "noise has shape {:?}, the posterior {:?}",
                noise.dims(),
                self.mean.dims()
            )));
        }
        Ok(self.mean.clone() + self.std() * noise)
    }

    /// The most likely latents: the mean.
    ///
    /// # Shapes
    /// - `[batch, c, h, w]`
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }
}
