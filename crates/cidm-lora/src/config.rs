//! What a LoRA adapter is: its rank, its alpha (the output is scaled by alpha / rank), which
//! projections it adapts and the seed of its initialisation. Serde types, because the config
//! travels with the adapter inside its safetensors file.

use serde::{Deserialize, Serialize};

use crate::error::{LoraError, Result};
use crate::sites::{AttentionKind, ProjectionSite};

/// The hyper-parameters of one LoRA adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// Rank r of every adapted projection (default 4, CIDM's released setting).
    pub rank: usize,
    /// LoRA alpha: the adapter's output is scaled by `alpha / rank` (default 4.0, i.e. scale 1,
    /// as diffusers' training scripts set `lora_alpha = rank`).
    pub alpha: f64,
    /// Which projections get an adapter (default: every cross-attention q, k, v, out).
    pub targets: LoraTargets,
    /// Seed of the down factors' Kaiming-uniform draw (default 0). The draw is made on the host
    /// with ChaCha8, so it is the same on every backend.
    pub init_seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 4,
            alpha: 4.0,
            targets: LoraTargets::CrossAttention,
            init_seed: 0,
        }
    }
}

impl LoraConfig {
    /// A config of rank `rank` and alpha `alpha` on the default targets with seed 0.
    pub fn new(rank: usize, alpha: f64) -> Self {
        Self {
            rank,
            alpha,
            ..Self::default()
        }
    }

    /// The same config with other targets.
    pub fn with_targets(mut self, targets: LoraTargets) -> Self {
        self.targets = targets;
        self
    }

    /// The same config with another init seed.
    pub fn with_init_seed(mut self, seed: u64) -> Self {
        self.init_seed = seed;
        self
    }

    /// `alpha / rank`, the factor the adapter's output is multiplied by.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Rejects a zero rank, a non-finite alpha and malformed target patterns.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(LoraError::InvalidConfig("rank must be at least 1".into()));
        }
        if !self.alpha.is_finite() {
            return Err(LoraError::InvalidConfig(format!(
                "alpha must be finite, got {}",
                self.alpha
            )));
        }
        self.targets.validate()
    }

    /// The sites of `sites` this config adapts; errors when none are selected or when a
    /// pattern selects nothing (almost always a typo).
    pub fn select<'a>(&self, sites: &'a [ProjectionSite]) -> Result<Vec<&'a ProjectionSite>> {
        self.validate()?;
        if let LoraTargets::Patterns(patterns) = &self.targets {
            if let Some(unused) = patterns
                .iter()
                .find(|p| !sites.iter().any(|s| glob_match(p, &s.path)))
            {
                return Err(LoraError::InvalidConfig(format!(
                    "target pattern `{unused}` matches no attention projection of this UNet"
                )));
            }
        }
        let selected: Vec<_> = sites.iter().filter(|s| self.targets.matches(s)).collect();
        if selected.is_empty() {
            return Err(LoraError::InvalidConfig(format!(
                "targets {:?} select no projection of this UNet",
                self.targets
            )));
        }
        Ok(selected)
    }
}

/// Which attention projections an adapter adapts.
///
/// Only the four attention projections of each transformer block (`to_q`, `to_k`, `to_v`,
/// `to_out.0` of `attn1` and `attn2`) are adaptable in the core, so patterns select among
/// those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "patterns", rename_all = "snake_case")]
pub enum LoraTargets {
    /// q, k, v and out of every cross-attention (`attn2`): CIDM's default, 64 adapters in
    /// SD 1.5.
    CrossAttention,
    /// q, k, v and out of every self-attention (`attn1`).
    SelfAttention,
    /// Both of the above.
    AllAttention,
    /// Glob patterns matched against the full diffusers module path: `*` matches any run of
    /// characters (dots included), everything else is literal, and the whole path must match.
    /// Example: `down_blocks.*.attn2.to_k` or `*.attn1.to_*`.
    Patterns(Vec<String>),
}

impl LoraTargets {
    /// Whether the rule selects `site`.
    pub fn matches(&self, site: &ProjectionSite) -> bool {
        match self {
            LoraTargets::CrossAttention => site.attention == AttentionKind::CrossAttention,
            LoraTargets::SelfAttention => site.attention == AttentionKind::SelfAttention,
            LoraTargets::AllAttention => true,
            LoraTargets::Patterns(patterns) => patterns.iter().any(|p| glob_match(p, &site.path)),
        }
    }

    /// The rule that selects exactly `paths` among `sites`: one of the named rules when it
    /// selects the same set, else the paths themselves as patterns. Used to describe a file
    /// written by another tool.
    pub fn describing(paths: &[String], sites: &[ProjectionSite]) -> Self {
        let mut wanted: Vec<&str> = paths.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        for rule in [
            LoraTargets::CrossAttention,
            LoraTargets::SelfAttention,
            LoraTargets::AllAttention,
        ] {
            let mut selected: Vec<&str> = sites
                .iter()
                .filter(|s| rule.matches(s))
                .map(|s| s.path.as_str())
                .collect();
            selected.sort_unstable();
            if selected == wanted {
                return rule;
            }
        }
        LoraTargets::Patterns(wanted.into_iter().map(str::to_string).collect())
    }

    fn validate(&self) -> Result<()> {
        match self {
            LoraTargets::Patterns(patterns) if patterns.is_empty() => Err(
                LoraError::InvalidConfig("target patterns: the list is empty".into()),
            ),
            LoraTargets::Patterns(patterns) => match patterns.iter().find(|p| p.is_empty()) {
                Some(_) => Err(LoraError::InvalidConfig(
                    "target patterns: a pattern is empty".into(),
                )),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// Whole-string glob match where `*` matches any (possibly empty) run of characters.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().expect("split yields at least one part");
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_matches_whole_paths() {
        let path = "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0";
        assert!(glob_match(path, path));
        assert!(glob_match("*.attn2.to_out.0", path));
        assert!(glob_match("down_blocks.*.attn2.*", path));
        assert!(glob_match("*", path));
        assert!(glob_match("down*attn2*to_out*0", path));
        assert!(!glob_match("*.attn2.to_out", path));
        assert!(!glob_match("up_blocks.*", path));
        assert!(!glob_match("*.attn1.*", path));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("a*a", "aa"));
    }
}
