//! R1 and R2 against independent numpy values (`tools/continual_fixtures.py`): each R1 form,
//! R2 with dense and factorised `H_i`, and one descent step of each, within 1e-5.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use cidm_continual::{
    orthogonal_regularizer, ExactCommonSubspace, FactorisedCommonSubspace, LowRankDelta, R1Form,
};
use safetensors::SafeTensors;

type B = Flex;
const TASKS: usize = 3;
const LAYERS: usize = 2;
const TOLERANCE: f32 = 1e-5;

struct Fixture(Vec<u8>);

impl Fixture {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/continual.safetensors"
        );
        Self(std::fs::read(path).expect("fixture file"))
    }

    fn values(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let file = SafeTensors::deserialize(&self.0).expect("safetensors");
        let view = file
            .tensor(name)
            .unwrap_or_else(|_| panic!("tensor {name}"));
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, view.shape().to_vec())
    }

    fn matrix(&self, name: &str) -> Tensor<B, 2> {
        let (values, shape) = self.values(name);
        Tensor::from_data(
            TensorData::new(values, [shape[0], shape[1]]),
            &Default::default(),
        )
    }

    fn scalar(&self, name: &str) -> f32 {
        self.values(name).0[0]
    }

    fn per_task(&self, prefix: &str) -> Vec<Vec<Tensor<B, 2>>> {
        (0..TASKS)
            .map(|i| {
                (0..LAYERS)
                    .map(|l| self.matrix(&format!("{prefix}.{i}.{l}")))
                    .collect()
            })
            .collect()
    }

    fn deltas(&self) -> Vec<Vec<LowRankDelta<B>>> {
        (0..TASKS)
            .map(|i| {
                (0..LAYERS)
                    .map(|l| {
                        let up = self.matrix(&format!("up.{i}.{l}"));
                        let down = self.matrix(&format!("down.{i}.{l}"));
                        LowRankDelta::new(up, down).expect("matching ranks")
                    })
                    .collect()
            })
            .collect()
    }

    fn w_star(&self) -> Vec<Tensor<B, 2>> {
        (0..LAYERS)
            .map(|l| self.matrix(&format!("r2.w.{l}")))
            .collect()
    }
}

fn scalar(t: Tensor<B, 1>) -> f32 {
    t.into_data().to_vec::<f32>().expect("f32")[0]
}

fn assert_close(actual: Tensor<B, 2>, expected: Tensor<B, 2>, what: &str) {
    let diff = scalar((actual - expected).abs().max().reshape([1]));
    assert!(diff < TOLERANCE, "{what}: max abs difference {diff}");
}

#[test]
fn r1_forms_match_numpy() {
    let fixture = Fixture::load();
    let mut ups = fixture.per_task("up");
    let new = ups.pop().expect("new task");
    for (form, name) in [
        (R1Form::Subspace, "subspace"),
        (R1Form::PaperLiteral, "paper_literal"),
        (R1Form::ReleasedCode, "released_code"),
    ] {
        let value = scalar(orthogonal_regularizer(form, &ups, &new).expect("r1"));
        let expected = fixture.scalar(&format!("r1.{name}"));
        assert!(
            (value - expected).abs() < TOLERANCE,
            "{name}: {value} vs numpy {expected}"
        );
    }
}

#[test]
fn exact_r2_and_its_step_match_numpy() {
    let fixture = Fixture::load();
    let deltas = fixture.deltas();
    let lr = f64::from(fixture.scalar("r2.lr"));
    let mut subspace = ExactCommonSubspace {
        w_star: fixture.w_star(),
        h: fixture.per_task("r2.exact.h"),
    };
    let value = scalar(subspace.r2(&deltas).expect("r2"));
    let expected = fixture.scalar("r2.exact.value");
    assert!(
        (value - expected).abs() < TOLERANCE * expected.max(1.0),
        "{value} vs {expected}"
    );

    subspace.descend(&deltas, lr).expect("step");
    for (l, w) in subspace.w_star.iter().enumerate() {
        assert_close(
            w.clone(),
            fixture.matrix(&format!("r2.exact.w_next.{l}")),
            "W*",
        );
    }
    let next = fixture.per_task("r2.exact.h_next");
    for (task, expected) in subspace.h.iter().zip(next) {
        for (h, e) in task.iter().zip(expected) {
            assert_close(h.clone(), e, "H");
        }
    }
}

#[test]
fn factorised_r2_and_its_step_match_numpy() {
    let fixture = Fixture::load();
    let deltas = fixture.deltas();
    let lr = f64::from(fixture.scalar("r2.lr"));
    let shapes: Vec<[usize; 2]> = fixture.w_star().iter().map(|w| w.dims()).collect();
    let mut subspace =
        FactorisedCommonSubspace::<B>::new(&shapes, 2, &Default::default()).expect("rank 2");
    subspace.w_star = fixture.w_star();
    subspace.u = fixture.per_task("r2.factorised.u");
    subspace.v = fixture.per_task("r2.factorised.v");
    let value = scalar(subspace.r2(&deltas).expect("r2"));
    let expected = fixture.scalar("r2.factorised.value");
    assert!(
        (value - expected).abs() < TOLERANCE * expected.max(1.0),
        "{value} vs {expected}"
    );

    subspace.descend(&deltas, lr).expect("step");
    for (l, w) in subspace.w_star.iter().enumerate() {
        assert_close(
            w.clone(),
            fixture.matrix(&format!("r2.factorised.w_next.{l}")),
            "W*",
        );
    }
    for (name, got) in [("u_next", &subspace.u), ("v_next", &subspace.v)] {
        let expected = fixture.per_task(&format!("r2.factorised.{name}"));
        for (task, e) in got.iter().zip(expected) {
            for (x, e) in task.iter().zip(e) {
                assert_close(x.clone(), e, name);
            }
        }
    }
}
