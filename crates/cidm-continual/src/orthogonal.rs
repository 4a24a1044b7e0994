//! R1, the orthogonal subspace regularizer (METHOD.md section 3): keeps the new task's
//! concept subspace away from every old task's.
//!
//! # Orientation
//! Every function here takes up factors in the paper's orientation, `A` `[out, rank]` (the
//! columns span the task's subspace of the layer's output space). The core's
//! `LowRankBank::up` is `[rank, out]`: pass `bank.up.val().transpose()`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use cidm_diffusion::totals::{add_all, mean_all};

use crate::config::R1Form;
use crate::error::{Error, Result};

/// R1 of the new task against all old tasks, averaged over old tasks and layers:
///
/// - [`R1Form::Subspace`]: `mean_{i,l} mean |A_i^T A_g|`
/// - [`R1Form::PaperLiteral`]: `mean_{i,l} mean |A_i A_g^T|`
/// - [`R1Form::ReleasedCode`]: `mean_l ( mean_i mean |A_g A_i^T| + mean (A_g - 1)^2 )`
///
/// Built from burn ops, so it is differentiable w.r.t. every factor (the old ones are usually
/// detached by the caller). Output widths must agree per layer; ranks may differ between
/// tasks only for [`R1Form::Subspace`] (`A_i A_g^T` contracts over the ranks).
///
/// # Shapes
/// - old: `tasks` lists of `layers` up factors `[out_l, rank_i]`
/// - new: `layers` up factors `[out_l, rank_g]`
/// - output: `[1]`
pub fn orthogonal_regularizer<B: Backend>(
    form: R1Form,
    old: &[Vec<Tensor<B, 2>>],
    new: &[Tensor<B, 2>],
) -> Result<Tensor<B, 1>> {
    if old.is_empty() {
        return Err(Error::NoOldTasks);
    }
    if new.is_empty() {
        return Err(Error::InvalidInput("R1 needs at least one layer".into()));
    }
    for (i, task) in old.iter().enumerate() {
        if task.len() != new.len() {
            return Err(Error::Shape {
                what: format!("up factors of old task {i}"),
                found: vec![task.len()],
                expected: format!("{} layers, as the new task", new.len()),
            });
        }
        for (l, (a_i, a_g)) in task.iter().zip(new).enumerate() {
            // `A_i A_g^T` contracts over the ranks, so the a x a forms need equal ranks.
            let rank_differs = form != R1Form::Subspace && a_i.dims()[1] != a_g.dims()[1];
            if a_i.dims()[0] != a_g.dims()[0] || rank_differs {
                return Err(Error::Shape {
                    what: format!("up factor of old task {i}, layer {l}"),
                    found: a_i.dims().to_vec(),
                    expected: format!(
                        "[{}, {}] (the new task's width{})",
                        a_g.dims()[0],
                        if rank_differs {
                            a_g.dims()[1].to_string()
                        } else {
                            "rank".into()
                        },
                        if rank_differs { " and rank" } else { "" }
                    ),
                });
            }
        }
    }
    let pairs = (old.len() * new.len()) as f64;
    let overlaps = old
        .iter()
        .flat_map(|task| task.iter().zip(new))
        .map(|(a_i, a_g)| {
            let product = match form {
                R1Form::Subspace => a_i.clone().transpose().matmul(a_g.clone()),
                R1Form::PaperLiteral => a_i.clone().matmul(a_g.clone().transpose()),
                R1Form::ReleasedCode => a_g.clone().matmul(a_i.clone().transpose()),
            };
            mean_all(product.abs())
        });
    let overlap = add_all(overlaps)
        .map(|sum| sum / pairs)
        .ok_or(Error::NoOldTasks)?;
    match form {
        R1Form::ReleasedCode => {
            let layers = new.len() as f64;
            let mse = add_all(
                new.iter()
                    .map(|a_g| mean_all(a_g.clone().sub_scalar(1.0).square())),
            )
            .map(|sum| sum / layers)
            .ok_or_else(|| Error::InvalidInput("R1 needs at least one layer".into()))?;
            Ok(overlap + mse)
        }
        R1Form::Subspace | R1Form::PaperLiteral => Ok(overlap),
    }
}
