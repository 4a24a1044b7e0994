//! The relation M_i^l between a prompt and task i at layer l, and psi, which turns the
//! relations of all tasks into weights (METHOD.md section 4). Pure host arithmetic in f64.

use crate::config::EwaVariant;
use crate::error::{EwaError, Result};
use crate::rows::TokenRows;

/// torch's `cosine_similarity` floor on the product of the norms.
const COSINE_EPS: f64 = 1e-8;

fn dot(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn to_f64(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&x| x as f64).collect()
}

/// M_i^l of one task at one layer: `prompt` holds the prompt's rows at the positions that
/// count, `concept` the task's rows at its concept-token positions. `Off` has no relation
/// (its weights ignore the prompt) and gives 0.
///
/// - `Code`: `mean_k max_p cos(c_p, e_k)`
/// - `Paper`: `max_p c_p . mean_k(e_k)`
pub fn relation(variant: EwaVariant, prompt: &TokenRows, concept: &TokenRows) -> Result<f64> {
    if prompt.dim() != concept.dim() {
        return Err(EwaError::Shape {
            what: "concept rows".into(),
            found: vec![concept.rows(), concept.dim()],
            expected: format!("rows of the prompt's width {}", prompt.dim()),
        });
    }
    let max_over_prompt = |e: &[f64], cosine: bool| {
        let e_norm = norm(e);
        prompt
            .iter()
            .map(|c| {
                let d = dot(c, e);
                if cosine {
                    let c_norm = norm(&to_f64(c));
                    d / (c_norm * e_norm).max(COSINE_EPS)
                } else {
                    d
                }
            })
            .fold(f64::NEG_INFINITY, f64::max)
    };
    Ok(match variant {
        EwaVariant::Code => {
            concept
                .iter()
                .map(|e| max_over_prompt(&to_f64(e), true))
                .sum::<f64>()
                / concept.rows() as f64
        }
        EwaVariant::Paper => max_over_prompt(&concept.mean(), false),
        EwaVariant::Off => 0.0,
    })
}

/// psi: the weights of all tasks from their relations at one layer.
///
/// - `Code`: `M^4 / sum_j M_j^4` (L1: non-negative, sums to one)
/// - `Paper`: `M^2 / ‖M^2‖_2` (non-negative, unit L2 norm)
/// - `Off`: `1 / g`
///
/// When every relation is zero the normalisation is undefined; the weights are then equal
/// (`1 / g` for `Code`, `1 / sqrt(g)` for `Paper`, each variant's own normalisation).
pub fn psi(variant: EwaVariant, relations: &[f64]) -> Result<Vec<f64>> {
    let g = relations.len();
    if g == 0 {
        return Err(EwaError::InvalidInput("psi needs at least one task".into()));
    }
    if relations.iter().any(|m| !m.is_finite()) {
        return Err(EwaError::NonFinite("task relations".into()));
    }
    let (power, l2) = match variant {
        EwaVariant::Off => return Ok(vec![1.0 / g as f64; g]),
        EwaVariant::Code => (4, false),
        EwaVariant::Paper => (2, true),
    };
    // Scaling by the largest |M| first keeps M^4 from overflowing; the ratios are unchanged.
    let scale = relations.iter().fold(0.0f64, |m, r| m.max(r.abs()));
    if scale == 0.0 {
        let equal = if l2 {
            (g as f64).sqrt().recip()
        } else {
            1.0 / g as f64
        };
        return Ok(vec![equal; g]);
    }
    let powered: Vec<f64> = relations.iter().map(|m| (m / scale).powi(power)).collect();
    let total = if l2 {
        powered.iter().map(|p| p * p).sum::<f64>().sqrt()
    } else {
        powered.iter().sum::<f64>()
    };
    Ok(powered.iter().map(|p| p / total).collect())
}

/// The weights of every task at one layer: the relation of each task, then psi.
pub fn layer_weights(
    variant: EwaVariant,
    prompt: &TokenRows,
    concepts: &[&TokenRows],
) -> Result<Vec<f64>> {
    let relations = concepts
        .iter()
        .map(|concept| relation(variant, prompt, concept))
        .collect::<Result<Vec<_>>>()?;
    psi(variant, &relations)
}
