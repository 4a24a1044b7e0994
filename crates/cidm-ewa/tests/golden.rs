//! EWA weights of both variants against an independent numpy implementation of the formulas
//! (`tools/ewa_fixtures.py`): 3 layers, 3 tasks with 1-3 concept positions, within 1e-9
//! (both sides compute in f64 from the same f32 inputs; only summation order differs).

use cidm_ewa::{EwaVariant, EwaWeights, TaskEmbeddings, TokenRows};
use safetensors::{Dtype, SafeTensors};

const LAYERS: usize = 3;
const TASKS: usize = 3;
const TOLERANCE: f64 = 1e-9;

fn read(file: &SafeTensors, name: &str) -> (Vec<f64>, Vec<usize>) {
    let view = file
        .tensor(name)
        .unwrap_or_else(|_| panic!("tensor {name}"));
    let values = match view.dtype() {
        Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (values, view.shape().to_vec())
}

fn rows(file: &SafeTensors, name: &str) -> TokenRows {
    let (values, shape) = read(file, name);
    TokenRows::new(shape[1], values.into_iter().map(|v| v as f32).collect()).unwrap()
}

#[test]
fn weights_match_numpy() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ewa.safetensors"
    ))
    .unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tasks = TaskEmbeddings::new(
        (0..TASKS)
            .map(|i| {
                (0..LAYERS)
                    .map(|l| rows(&file, &format!("concept.{i}.{l}")))
                    .collect()
            })
            .collect(),
    )
    .unwrap();
    let prompt: Vec<TokenRows> = (0..LAYERS)
        .map(|l| rows(&file, &format!("prompt.{l}")))
        .collect();
    for (variant, key) in [(EwaVariant::Code, "code"), (EwaVariant::Paper, "paper")] {
        let weights = EwaWeights::compute(variant, &prompt, &tasks).unwrap();
        for l in 0..LAYERS {
            let (expected, _) = read(&file, &format!("{key}.{l}"));
            let got = weights.layer(l).unwrap();
            for (g, e) in got.iter().zip(&expected) {
                assert!(
                    (g - e).abs() < TOLERANCE,
                    "{key} layer {l}: {got:?} vs numpy {expected:?}"
                );
            }
        }
    }
}
