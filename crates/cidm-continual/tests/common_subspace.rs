//! R2's step 2: the closed-form gradients equal burn's autodiff gradients, one descent step
//! lowers R2, bad shapes are errors, and the state's size is what the docs state.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use cidm_continual::{
    state_floats, CommonSubspace, Error, ExactCommonSubspace, FactorisedCommonSubspace,
    LowRankDelta, R2Variant,
};

type B = Flex;
type AD = Autodiff<Flex>;

const SHAPES: [[usize; 2]; 2] = [[6, 4], [5, 7]];

fn random<Bk: burn::tensor::backend::Backend>(shape: [usize; 2]) -> Tensor<Bk, 2> {
    Tensor::random(shape, Distribution::Normal(0.0, 0.5), &Default::default())
}

fn deltas<Bk: burn::tensor::backend::Backend>(tasks: usize) -> Vec<Vec<LowRankDelta<Bk>>> {
    (0..tasks)
        .map(|_| {
            SHAPES
                .iter()
                .map(|&[out, inp]| {
                    LowRankDelta::new(random([out, 2]), random([2, inp])).expect("ranks")
                })
                .collect()
        })
        .collect()
}

fn max_abs<Bk: burn::tensor::backend::Backend>(t: Tensor<Bk, 2>) -> f32 {
    t.abs().max().into_data().to_vec::<f32>().expect("f32")[0]
}

fn value(t: Tensor<B, 1>) -> f32 {
    t.into_data().to_vec::<f32>().expect("f32")[0]
}

#[test]
fn exact_closed_form_gradients_equal_autodiff() {
    let deltas = deltas::<AD>(2);
    let w_star: Vec<Tensor<AD, 2>> = SHAPES.iter().map(|&s| random(s).require_grad()).collect();
    let h: Vec<Vec<Tensor<AD, 2>>> = (0..2)
        .map(|_| {
            SHAPES
                .iter()
                .map(|&[o, _]| random([o, o]).require_grad())
                .collect()
        })
        .collect();
    let subspace = ExactCommonSubspace { w_star, h };
    let closed = subspace.gradients(&deltas).expect("gradients");
    let grads = subspace.r2(&deltas).expect("r2").backward();
    for (w, g) in subspace.w_star.iter().zip(&closed.w_star) {
        let auto = w.grad(&grads).expect("W* gradient");
        let diff = max_abs::<B>(auto - g.clone().inner());
        assert!(diff < 1e-4, "dR2/dW* differs by {diff}");
    }
    for (task, task_g) in subspace.h.iter().zip(&closed.h) {
        for (h, g) in task.iter().zip(task_g) {
            let auto = h.grad(&grads).expect("H gradient");
            let diff = max_abs::<B>(auto - g.clone().inner());
            assert!(diff < 1e-4, "dR2/dH differs by {diff}");
        }
    }
}

#[test]
fn factorised_closed_form_gradients_equal_autodiff() {
    let deltas = deltas::<AD>(2);
    let shapes = SHAPES.to_vec();
    let mut subspace =
        FactorisedCommonSubspace::<AD>::new(&shapes, 2, &Default::default()).expect("rank 2");
    subspace.w_star = SHAPES.iter().map(|&s| random(s).require_grad()).collect();
    let factors = || -> Vec<Vec<Tensor<AD, 2>>> {
        (0..2)
            .map(|_| {
                SHAPES
                    .iter()
                    .map(|&[o, _]| random([o, 2]).require_grad())
                    .collect()
            })
            .collect()
    };
    subspace.u = factors();
    subspace.v = factors();
    let closed = subspace.gradients(&deltas).expect("gradients");
    let grads = subspace.r2(&deltas).expect("r2").backward();
    let pairs = subspace
        .w_star
        .iter()
        .zip(&closed.w_star)
        .chain(subspace.u.iter().flatten().zip(closed.u.iter().flatten()))
        .chain(subspace.v.iter().flatten().zip(closed.v.iter().flatten()));
    for (x, g) in pairs {
        let auto = x.grad(&grads).expect("gradient");
        let diff = max_abs::<B>(auto - g.clone().inner());
        assert!(diff < 1e-4, "closed-form gradient differs by {diff}");
    }
}

#[test]
fn one_descent_step_lowers_r2_in_both_variants() {
    let deltas = deltas::<B>(3);
    for variant in [R2Variant::Exact, R2Variant::Factorised { rank: 2 }] {
        let mut subspace =
            CommonSubspace::<B>::new(variant, &SHAPES, &Default::default()).expect("subspace");
        for seed in 0..3 {
            subspace.add_task(seed);
        }
        // From W* = 0 the first step only moves W*; a few steps exercise every term.
        let mut previous = value(subspace.r2(&deltas).expect("r2"));
        for step in 0..5 {
            subspace.descend(&deltas, 0.05).expect("step");
            let now = value(subspace.r2(&deltas).expect("r2"));
            assert!(
                now < previous,
                "{variant:?} step {step}: R2 {previous} -> {now}"
            );
            previous = now;
        }
    }
}

#[test]
fn task_and_layer_counts_and_shapes_are_checked() {
    let mut subspace = ExactCommonSubspace::<B>::new(&SHAPES, &Default::default());
    subspace.add_task();
    assert!(matches!(
        subspace.r2(&deltas::<B>(2)),
        Err(Error::Shape { .. })
    ));
    let wrong = vec![vec![
        LowRankDelta::new(random([6, 2]), random([2, 4])).expect("ranks")
    ]];
    assert!(matches!(subspace.r2(&wrong), Err(Error::Shape { .. })));
    assert!(LowRankDelta::<B>::new(random([6, 2]), random([3, 4])).is_err());
    assert!(FactorisedCommonSubspace::<B>::new(&SHAPES, 0, &Default::default()).is_err());
}

#[test]
fn state_sizes_at_sd15_cross_attention() {
    // to_k of the 16 SD 1.5 cross-attention layers: out = channels, in = 768.
    let channels = [
        320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320,
    ];
    let shapes: Vec<[usize; 2]> = channels.iter().map(|&c| [c, 768]).collect();
    let w_star = 12_480 * 768;
    assert_eq!(state_floats(R2Variant::Exact, &shapes, 0), w_star);
    assert_eq!(
        state_floats(R2Variant::Exact, &shapes, 1),
        w_star + 12_390_400
    );
    let factorised = R2Variant::Factorised { rank: 8 };
    assert_eq!(
        state_floats(factorised, &shapes, 1),
        w_star + 2 * 12_480 * 8
    );
}
