//! What elastic weight aggregation computes: the variant of the relation and of psi, the
//! merge strength alpha, and the template that places a task's concept words in context.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{EwaError, Result};

/// How task weights are computed from a prompt (METHOD.md section 4).
///
/// | variant | relation M_i^l | psi |
/// |---|---|---|
/// | `code` | mean over task i's concept positions k of max over prompt positions p of cos(c_p, e_k) | M^4 / sum M^4 |
/// | `paper` | max over prompt positions p of c_p . mean_k(e_k) | M^2 / ‖M^2‖_2 |
/// | `off` | none | 1 / g (LoRA-M, the equal-weight merge) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EwaVariant {
    /// The released code's form (the default): cosine, max, mean, power 4, L1.
    #[default]
    Code,
    /// The paper's eq. 3 read literally: mean concept embedding, dot product, max, power 2, L2.
    Paper,
    /// Equal weights for every task and layer, independent of the prompt.
    Off,
}

impl EwaVariant {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            EwaVariant::Code => "code",
            EwaVariant::Paper => "paper",
            EwaVariant::Off => "off",
        }
    }
}

impl fmt::Display for EwaVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EwaVariant {
    type Err = EwaError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "code" => Ok(EwaVariant::Code),
            "paper" => Ok(EwaVariant::Paper),
            "off" => Ok(EwaVariant::Off),
            other => Err(EwaError::UnknownVariant(other.to_string())),
        }
    }
}

/// Elastic weight aggregation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EwaConfig {
    /// How weights are computed (default `code`).
    pub variant: EwaVariant,
    /// Multiplies every weight in the merge `alpha * sum_i w_i ΔW_i` (default 0.8, the
    /// released code's; [`EwaConfig::for_variant`] uses 1.0 for `off`, which is LoRA-M).
    pub alpha: f64,
    /// The prompt a task's concept words are encoded in to get e_i^l; `{}` is replaced by the
    /// task's words joined by spaces (default `"a photo of {}"`).
    pub template: String,
}

impl Default for EwaConfig {
    fn default() -> Self {
        Self::for_variant(EwaVariant::Code)
    }
}

impl EwaConfig {
    /// The defaults of a variant: alpha 0.8 for `code` and `paper`, 1.0 for `off` (LoRA-M
    /// merges g tasks with weight 1/g each).
    pub fn for_variant(variant: EwaVariant) -> Self {
        Self {
            variant,
            alpha: if variant == EwaVariant::Off { 1.0 } else { 0.8 },
            template: "a photo of {}".into(),
        }
    }

    /// Checks alpha (finite, non-negative) and the template (exactly one `{}`).
    pub fn validate(&self) -> Result<()> {
        if !self.alpha.is_finite() || self.alpha < 0.0 {
            return Err(EwaError::InvalidInput(format!(
                "EWA alpha must be finite and >= 0, got {}",
                self.alpha
            )));
        }
        if self.template.matches("{}").count() != 1 {
            return Err(EwaError::InvalidInput(format!(
                "EWA template {:?} must hold exactly one `{{}}`",
                self.template
            )));
        }
        Ok(())
    }

    /// The template prompt of a task with concept words `words`.
    pub fn template_prompt(&self, words: &[String]) -> String {
        self.template.replacen("{}", &words.join(" "), 1)
    }
}
