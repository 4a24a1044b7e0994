//! The paper's two metrics on CLIP embeddings (METHOD.md section 6), as pure functions so that
//! they can be checked in closed form and reused on embeddings computed elsewhere.
//!
//! - Image alignment (IA): the mean cosine similarity between the CLIP image embeddings of
//!   every generated image and every reference image of the concept, x100.
//! - Text alignment (TA): CLIPScore (Hessel et al. 2021), `2.5 * max(cos, 0)` between each
//!   image's embedding and its prompt's (concept words replaced by class words), averaged
//!   over images, x100.
//!
//! Cosines are computed in f64 from the f32 embeddings.

use crate::error::{EvalError, Result};

/// CLIPScore's weight `w`: rescales cosines, which CLIP keeps near 0.3 for matching pairs.
pub const CLIP_SCORE_WEIGHT: f64 = 2.5;

/// A metric over a set of images: the mean and each image's share (x100 like the mean).
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The metric, x100.
    pub mean: f64,
    /// Per image, in input order, x100: IA against all references, or the image's
    /// CLIPScore against its prompt.
    pub per_image: Vec<f64>,
}

/// `v / |v|` in f64; an empty or zero vector has no direction and is an error.
fn unit(v: &[f32], what: &str, index: usize) -> Result<Vec<f64>> {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if v.is_empty() || norm == 0.0 || !norm.is_finite() {
        return Err(EvalError::InvalidInput(format!(
            "{what} embedding {index} has norm {norm} over {} values",
            v.len()
        )));
    }
    Ok(v.iter().map(|&x| f64::from(x) / norm).collect())
}

/// Unit vectors of one width, or an error naming the list.
fn units(embeddings: &[Vec<f32>], what: &str) -> Result<Vec<Vec<f64>>> {
    if embeddings.is_empty() {
        return Err(EvalError::InvalidInput(format!("no {what} embeddings")));
    }
    let width = embeddings[0].len();
    embeddings
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if e.len() != width {
                return Err(EvalError::InvalidInput(format!(
                    "{what} embedding {i} has {} values, embedding 0 has {width}",
                    e.len()
                )));
            }
            unit(e, what, i)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(EvalError::InvalidInput(format!(
            "embeddings of {} and {} values cannot be compared",
            a.len(),
            b.len()
        )));
    }
    Ok(a.iter().zip(b).map(|(x, y)| x * y).sum())
}

/// Image alignment: 100 x the mean cosine over all (generated, reference) pairs; each
/// image's share is its mean cosine to the references. Empty lists, unequal widths and zero
/// embeddings are [`EvalError::InvalidInput`].
pub fn image_alignment(generated: &[Vec<f32>], references: &[Vec<f32>]) -> Result<Score> {
    let generated = units(generated, "generated image")?;
    let references = units(references, "reference image")?;
    let per_image = generated
        .iter()
        .map(|g| {
            let total = references.iter().map(|r| dot(g, r)).sum::<Result<f64>>()?;
            Ok(100.0 * total / references.len() as f64)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Score {
        mean: per_image.iter().sum::<f64>() / per_image.len() as f64,
        per_image,
    })
}

/// Text alignment: 100 x the mean CLIPScore `2.5 * max(cos(image_i, prompt_i), 0)`; image
/// `i` is scored against prompt `i`. Lists of different lengths, empty lists, unequal
/// widths and zero embeddings are [`EvalError::InvalidInput`].
pub fn text_alignment(images: &[Vec<f32>], prompts: &[Vec<f32>]) -> Result<Score> {
    if images.len() != prompts.len() {
        return Err(EvalError::InvalidInput(format!(
            "{} images but {} prompts: each image needs its prompt",
            images.len(),
            prompts.len()
        )));
    }
    let images = units(images, "image")?;
    let prompts = units(prompts, "prompt")?;
    let per_image = images
        .iter()
        .zip(&prompts)
        .map(|(i, p)| Ok(100.0 * CLIP_SCORE_WEIGHT * dot(i, p)?.max(0.0)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Score {
        mean: per_image.iter().sum::<f64>() / per_image.len() as f64,
        per_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Orthogonal, parallel and opposite pairs: cosines 0, 1 and -1, whatever the lengths.
    #[test]
    fn closed_forms() {
        let generated = vec![vec![2.0, 0.0], vec![0.0, 3.0]];
        let references = vec![vec![5.0, 0.0], vec![-1.0, 0.0]];
        // Image 0: cos 1 and -1 -> 0; image 1: 0 and 0 -> 0.
        let ia = image_alignment(&generated, &references).unwrap();
        assert_eq!(ia.per_image, vec![0.0, 0.0]);
        let ia = image_alignment(&generated, &references[..1]).unwrap();
        assert_eq!((ia.mean, ia.per_image), (50.0, vec![100.0, 0.0]));

        // A 60-degree pair has cos 0.5: CLIPScore 2.5 * 0.5 = 1.25 -> 125; opposite -> 0.
        let images = vec![vec![1.0, 0.0], vec![1.0, 0.0]];
        let prompts = vec![vec![0.5, 0.75f32.sqrt()], vec![-4.0, 0.0]];
        let ta = text_alignment(&images, &prompts).unwrap();
        assert!((ta.per_image[0] - 125.0).abs() < 1e-5);
        assert_eq!(ta.per_image[1], 0.0);
        assert!((ta.mean - 62.5).abs() < 1e-5);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let one = vec![vec![1.0f32, 0.0]];
        assert!(image_alignment(&[], &one).is_err());
        assert!(image_alignment(&one, &[vec![0.0, 0.0]]).is_err());
        assert!(image_alignment(&one, &[vec![1.0, 0.0, 0.0]]).is_err());
        assert!(text_alignment(&one, &[]).is_err());
        assert!(text_alignment(&[vec![1.0, f32::NAN]], &one).is_err());
    }

    proptest! {
        /// Both metrics are invariant to the scale of every embedding, IA is symmetric in a
        /// single pair, and they stay within their ranges: IA in [-100, 100], TA in [0, 250].
        #[test]
        fn scale_invariant_and_bounded(
            a in prop::collection::vec(-5.0f32..5.0, 4),
            b in prop::collection::vec(-5.0f32..5.0, 4),
            s in 0.1f32..10.0,
        ) {
            prop_assume!(a.iter().any(|x| x.abs() > 0.1) && b.iter().any(|x| x.abs() > 0.1));
            let scaled: Vec<f32> = a.iter().map(|x| x * s).collect();
            let (a, b) = ([a], [b]);
            let ia = image_alignment(&a, &b).unwrap().mean;
            let ia_scaled = image_alignment(std::slice::from_ref(&scaled), &b).unwrap().mean;
            let ia_swapped = image_alignment(&b, &a).unwrap().mean;
            prop_assert!((ia - ia_scaled).abs() < 1e-3);
            prop_assert!((ia - ia_swapped).abs() < 1e-9);
            prop_assert!((-100.0 - 1e-9..=100.0 + 1e-9).contains(&ia));
            let ta = text_alignment(&[scaled], &b).unwrap().mean;
            prop_assert!((ta - CLIP_SCORE_WEIGHT * ia.max(0.0)).abs() < 1e-3);
        }
    }
}
