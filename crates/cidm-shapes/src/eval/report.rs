//! Evaluation results as serde types, and the markdown table a report shows them in.

use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Scores of one concept's generations under one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptScores {
    /// The concept's name.
    pub concept: String,
    /// Mean image alignment (0 to 1).
    pub image_alignment: f32,
    /// Share of generations showing the class shape (0 to 1).
    pub text_alignment: f32,
    /// Share of positioned prompts whose shape appeared at the asked position, if any prompt
    /// asked for one.
    pub position_accuracy: Option<f32>,
    /// Number of generations scored.
    pub samples: usize,
}

/// Scores of every concept under one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodScores {
    /// The method, e.g. "CIDM", "sequential fine-tuning", "LoRA-M".
    pub method: String,
    /// One entry per concept.
    pub concepts: Vec<ConceptScores>,
}

impl MethodScores {
    /// Mean image alignment over concepts (each concept weighs the same); `None` when empty.
    pub fn mean_image_alignment(&self) -> Option<f32> {
        mean(self.concepts.iter().map(|c| c.image_alignment))
    }

    /// Mean text alignment over concepts; `None` when empty.
    pub fn mean_text_alignment(&self) -> Option<f32> {
        mean(self.concepts.iter().map(|c| c.text_alignment))
    }
}

fn mean(values: impl Iterator<Item = f32>) -> Option<f32> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f32)
}

/// One box of a multi-concept layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionScore {
    /// The concept the box should show.
    pub concept: String,
    /// Image alignment of the box's crop to that concept.
    pub image_alignment: f32,
    /// The other concept the crop is most aligned to, if the evaluator knows any other.
    pub best_other: Option<String>,
    /// Its alignment.
    pub best_other_alignment: Option<f32>,
    /// The crop is more aligned to its own concept than to any other.
    pub shows_concept: bool,
}

/// A markdown table with one row per concept (in order of first appearance) and an IA and a
/// TA column per method, ending with the per-method means. Missing cells show "-".
pub fn markdown_table(methods: &[MethodScores]) -> String {
    let mut concepts: Vec<&str> = Vec::new();
    for m in methods {
        for c in &m.concepts {
            if !concepts.contains(&c.concept.as_str()) {
                concepts.push(&c.concept);
            }
        }
    }
    let cell = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut out = String::from("| concept |");
    for m in methods {
        let _ = write!(out, " {} IA | {} TA |", m.method, m.method);
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|---:|".repeat(methods.len()));
    out.push('\n');
    for concept in &concepts {
        let _ = write!(out, "| {concept} |");
        for m in methods {
            let scores = m.concepts.iter().find(|c| c.concept == *concept);
            let _ = write!(
                out,
                " {} | {} |",
                cell(scores.map(|s| s.image_alignment)),
                cell(scores.map(|s| s.text_alignment))
            );
        }
        out.push('\n');
    }
    out.push_str("| **mean** |");
    for m in methods {
        let _ = write!(
            out,
            " {} | {} |",
            cell(m.mean_image_alignment()),
            cell(m.mean_text_alignment())
        );
    }
    out.push('\n');
    out
}
