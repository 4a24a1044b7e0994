//! Invariants of the weights, for any prompt and store (proptest): `code` weights are finite,
//! non-negative and sum to one; `paper` weights have unit L2 norm; `off` is 1/g; permuting
//! the tasks permutes the weights; a prompt that holds one task's concept row gives that task
//! the largest weight.

use cidm_ewa::{psi, EwaVariant, EwaWeights, TaskEmbeddings, TokenRows};
use proptest::prelude::*;

const DIM: usize = 6;

fn rows(count: usize) -> impl Strategy<Value = TokenRows> {
    prop::collection::vec(-3.0f32..3.0, count * DIM)
        .prop_map(|values| TokenRows::new(DIM, values).unwrap())
}

/// A store of 1-5 tasks with 1-3 concept positions each, 1-3 layers, and a prompt of 1-8
/// positions.
fn store() -> impl Strategy<Value = (Vec<TokenRows>, Vec<Vec<TokenRows>>)> {
    (1usize..4, 1usize..6, 1usize..9).prop_flat_map(|(layers, tasks, positions)| {
        (
            prop::collection::vec(rows(positions), layers),
            prop::collection::vec(
                (1usize..4).prop_flat_map(move |n| prop::collection::vec(rows(n), layers)),
                tasks,
            ),
        )
    })
}

proptest! {
    #[test]
    fn code_weights_are_a_distribution((prompt, tasks) in store()) {
        let store = TaskEmbeddings::new(tasks).unwrap();
        let weights = EwaWeights::compute(EwaVariant::Code, &prompt, &store).unwrap();
        for w in weights.values() {
            prop_assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "{w:?}");
            prop_assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{w:?}");
        }
    }

    #[test]
    fn paper_weights_have_unit_l2_norm((prompt, tasks) in store()) {
        let store = TaskEmbeddings::new(tasks).unwrap();
        let weights = EwaWeights::compute(EwaVariant::Paper, &prompt, &store).unwrap();
        for w in weights.values() {
            prop_assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "{w:?}");
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            prop_assert!((norm - 1.0).abs() < 1e-12, "{w:?}");
        }
    }

    #[test]
    fn off_is_equal_weights((prompt, tasks) in store()) {
        let g = tasks.len();
        let store = TaskEmbeddings::new(tasks).unwrap();
        let weights = EwaWeights::compute(EwaVariant::Off, &prompt, &store).unwrap();
        for w in weights.values() {
            prop_assert!(w.iter().all(|&x| x == 1.0 / g as f64));
        }
    }

    /// Weights depend on each task alone (plus the normalisation over all), so reordering
    /// the tasks reorders the weights and changes nothing else.
    #[test]
    fn permuting_tasks_permutes_weights(
        (prompt, tasks) in store(),
        seed in any::<u64>(),
    ) {
        let g = tasks.len();
        let mut order: Vec<usize> = (0..g).collect();
        // A seeded Fisher-Yates shuffle.
        let mut state = seed;
        for i in (1..g).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        let permuted: Vec<Vec<TokenRows>> = order.iter().map(|&i| tasks[i].clone()).collect();
        for variant in [EwaVariant::Code, EwaVariant::Paper] {
            let base = EwaWeights::compute(variant, &prompt, &TaskEmbeddings::new(tasks.clone()).unwrap()).unwrap();
            let moved = EwaWeights::compute(variant, &prompt, &TaskEmbeddings::new(permuted.clone()).unwrap()).unwrap();
            for (b, m) in base.values().iter().zip(moved.values()) {
                for (j, &i) in order.iter().enumerate() {
                    prop_assert!((m[j] - b[i]).abs() < 1e-12, "{b:?} permuted by {order:?} gave {m:?}");
                }
            }
        }
    }
}

/// Three tasks with orthogonal concept rows; the prompt holds task 1's row (and two neutral
/// rows): task 1's cosine relation is 1, the others' 0 or below, so `code` gives it the whole
/// weight and `paper` the largest.
#[test]
fn a_prompt_naming_one_task_gives_it_the_largest_weight() {
    let basis = |k: usize| {
        let mut v = vec![0.0f32; DIM];
        v[k] = 1.0;
        v
    };
    let tasks: Vec<Vec<TokenRows>> = (0..3)
        .map(|i| vec![TokenRows::new(DIM, basis(i)).unwrap()])
        .collect();
    let store = TaskEmbeddings::new(tasks).unwrap();
    let mut prompt = basis(4);
    prompt.extend(basis(1));
    prompt.extend(basis(5));
    let prompt = vec![TokenRows::new(DIM, prompt).unwrap()];
    let code = EwaWeights::compute(EwaVariant::Code, &prompt, &store).unwrap();
    assert_eq!(code.layer(0).unwrap(), &[0.0, 1.0, 0.0]);
    let paper = EwaWeights::compute(EwaVariant::Paper, &prompt, &store).unwrap();
    let w = paper.layer(0).unwrap();
    assert!(w[1] > w[0] && w[1] > w[2], "{w:?}");
}

/// psi by hand: relations (1, 2) give code weights (1, 16) / 17 and paper weights
/// (1, 4) / sqrt(17); all-zero relations give equal weights.
#[test]
fn psi_closed_forms() {
    let code = psi(EwaVariant::Code, &[1.0, 2.0]).unwrap();
    assert!((code[0] - 1.0 / 17.0).abs() < 1e-15 && (code[1] - 16.0 / 17.0).abs() < 1e-15);
    let paper = psi(EwaVariant::Paper, &[1.0, -2.0]).unwrap();
    let n = 17f64.sqrt();
    assert!((paper[0] - 1.0 / n).abs() < 1e-15 && (paper[1] - 4.0 / n).abs() < 1e-15);
    assert_eq!(psi(EwaVariant::Code, &[0.0, 0.0]).unwrap(), vec![0.5, 0.5]);
    assert!(psi(EwaVariant::Code, &[f64::NAN]).is_err());
    assert!(psi(EwaVariant::Code, &[]).is_err());
}
