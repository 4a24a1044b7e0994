//! Regional generation settings.

use serde::{Deserialize, Serialize};

use crate::error::{RegionError, Result};
use crate::spec::MAX_REGIONS;

/// How regional estimates are composed; the guidance scale and sampler are the sampling
/// settings' (`cidm_diffusion::pipeline::SamplingSettings`, guidance 7.5 by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegionalConfig {
    /// Weight of the global estimate inside the boxes (default 0.1, the paper's).
    pub alpha: f64,
    /// The most regions accepted (default [`MAX_REGIONS`] = 8).
    pub max_regions: usize,
}

impl Default for RegionalConfig {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            max_regions: MAX_REGIONS,
        }
    }
}

impl RegionalConfig {
    /// Checks alpha is in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(RegionError::InvalidInput(format!(
                "regional alpha must be in [0, 1], got {}",
                self.alpha
            )));
        }
        Ok(())
    }
}
