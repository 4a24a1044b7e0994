//! Which continual-learning method trains a task: CIDM, its ablations, or a baseline of the
//! paper's table (METHOD.md section 6).

use serde::{Deserialize, Serialize};

/// How a task's LoRA is trained and how a store's tasks are combined at inference.
///
/// Every method learns layer-wise concept tokens the same way; they differ in the LoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// CIDM: a fresh LoRA per task trained on `denoise + gamma1 R1 + gamma2 R2` with the
    /// two-step update; tasks combined by elastic weight aggregation.
    #[default]
    Cidm,
    /// Ablation: CIDM with R1 only (no common subspace).
    R1Only,
    /// Ablation: CIDM with R2 only (no orthogonality term).
    R2Only,
    /// Baseline: one LoRA fine-tuned across all tasks in sequence (each task starts from the
    /// previous task's LoRA, plain denoising loss); the last task's LoRA is the model.
    Finetune,
    /// Baseline "LoRA-M": a fresh LoRA per task on the plain denoising loss; tasks merged with
    /// equal weights at inference.
    LoraM,
}

impl Method {
    /// All methods, in the order reports list them.
    pub const ALL: [Method; 5] = [
        Method::Cidm,
        Method::R1Only,
        Method::R2Only,
        Method::Finetune,
        Method::LoraM,
    ];

    /// Whether the loss has the orthogonal subspace term R1.
    pub fn uses_r1(self) -> bool {
        matches!(self, Method::Cidm | Method::R1Only)
    }

    /// Whether the loss has the common-subspace term R2 (and the second step of the update).
    pub fn uses_r2(self) -> bool {
        matches!(self, Method::Cidm | Method::R2Only)
    }

    /// Whether a task's LoRA starts from the previous task's instead of from zero.
    pub fn continues_previous_lora(self) -> bool {
        self == Method::Finetune
    }

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Method::Cidm => "cidm",
            Method::R1Only => "r1-only",
            Method::R2Only => "r2-only",
            Method::Finetune => "finetune",
            Method::LoraM => "lora-m",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method {s:?}; one of {}", names.join(", "))
            })
    }
}
