//! The continual-training settings as serde types, with the defaults of METHOD.md section 3
//! and the released code (see docs/continual.md for why each default was chosen).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which formula R1, the orthogonal subspace regularizer, uses.
///
/// Every form takes the up factors in the paper's orientation, `A` `[out, rank]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum R1Form {
    /// `mean |A_i^T A_g|` (`r x r`): the overlap of the column spaces, which is what
    /// "orthogonal subspaces" means; zero exactly when the subspaces are orthogonal. Default.
    #[default]
    Subspace,
    /// `mean |A_i A_g^T|` (`out x out`), as the paper prints eq. 2. Zero only when one factor
    /// is zero, so it mostly shrinks the factors.
    PaperLiteral,
    /// The released code: `mean |A_g A_i^T|` plus `MSE(A_g, 1)` (the mean of `(A_g - 1)^2`)
    /// once per layer.
    ReleasedCode,
}

/// How R2's per-task transforms `H_i` are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum R2Variant {
    /// Dense `H_i` `[out, out]` per task and layer, as the paper states it.
    Exact,
    /// `H_i = I + U_i V_i^T` with `U_i`, `V_i` `[out, rank]`: `2 * out * rank` floats instead
    /// of `out^2`.
    Factorised {
        /// Rank of the correction `U_i V_i^T`.
        rank: usize,
    },
}

impl Default for R2Variant {
    /// [`R2Variant::Exact`]: at SD 1.5 sizes it costs ~50 MB per task and adapted projection
    /// (docs/continual.md), which fits; the factorised form is for long task sequences.
    fn default() -> Self {
        R2Variant::Exact
    }
}

/// Settings of the concept consolidation loss and the concept tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinualConfig {
    /// Weight of R1 in the loss. Default 0.1 (paper).
    pub gamma1: f64,
    /// Weight of R2 in the loss. Default 1.0 (paper).
    pub gamma2: f64,
    /// R1's formula. Default [`R1Form::Subspace`].
    pub r1_form: R1Form,
    /// R2's storage of `H_i`. Default [`R2Variant::Exact`].
    pub r2_variant: R2Variant,
    /// Standard deviation of the random concept-token init. Default 0.013 (paper: 0.013-0.02).
    pub token_init_sigma: f64,
    /// Stop updating concept tokens once their mean row norm reaches this; `None` never
    /// stops. Default `Some(0.55)` (released code).
    pub token_norm_threshold: Option<f64>,
}

impl Default for ContinualConfig {
    fn default() -> Self {
        Self {
            gamma1: 0.1,
            gamma2: 1.0,
            r1_form: R1Form::default(),
            r2_variant: R2Variant::default(),
            token_init_sigma: 0.013,
            token_norm_threshold: Some(0.55),
        }
    }
}

impl ContinualConfig {
    /// Checks that weights are finite and non-negative, sigma and the threshold positive and
    /// a factorised rank at least 1.
    pub fn validate(&self) -> Result<()> {
        let non_negative = |name: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(Error::InvalidInput(format!(
                    "{name} must be finite and >= 0, got {value}"
                )))
            }
        };
        non_negative("gamma1", self.gamma1)?;
        non_negative("gamma2", self.gamma2)?;
        if !(self.token_init_sigma.is_finite() && self.token_init_sigma > 0.0) {
            return Err(Error::InvalidInput(format!(
                "token_init_sigma must be finite and > 0, got {}",
                self.token_init_sigma
            )));
        }
        if let Some(t) = self.token_norm_threshold {
            if !(t.is_finite() && t > 0.0) {
                return Err(Error::InvalidInput(format!(
                    "token_norm_threshold must be finite and > 0, got {t}"
                )));
            }
        }
        if let R2Variant::Factorised { rank: 0 } = self.r2_variant {
            return Err(Error::InvalidInput(
                "the factorised R2 variant needs rank >= 1".into(),
            ));
        }
        Ok(())
    }
}
