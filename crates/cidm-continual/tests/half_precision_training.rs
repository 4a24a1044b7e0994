//! Task training of an f16 model, what a GPU build with the `f16` feature runs, emulated on
//! the CPU: the Flex device's default float type is set to f16 before anything is created, so
//! the tiny model loads in f16 as on `Cuda<f16>`. Everything trained (LoRA factors, concept
//! tokens, R2's `H` and `W*`) and its optimizer state must stay f32
//! (`cidm_diffusion::precision`): in f16, AdamW's `sqrt(v) + 1e-8` is `0 + 0` wherever a
//! gradient is 0, as for the down factors at the first step and the rows of concept words
//! absent from a batch, and 0 / 0 is NaN. Task 1, task 2 with CIDM's regularizers (both R2
//! variants), and a checkpoint written and resumed, all in f16. One test in this binary: the
//! device's default dtype is set once per process.

mod common;

use burn::backend::Flex;
use burn::tensor::{DType, FloatDType, IntDType, Tensor};
use cidm_continual::{
    read_checkpoint, write_checkpoint, CommonSubspace, Method, R2Variant, TaskTrainer, TaskWords,
};
use common::{config, context, write_images, AB};

fn words(word: &str, class: &str) -> TaskWords {
    TaskWords {
        words: vec![word.into()],
        classes: vec![class.into()],
    }
}

/// The tensor is f32 and finite.
fn check<const D: usize>(what: &str, tensor: &Tensor<AB, D>) {
    assert_eq!(tensor.dtype(), DType::F32, "{what}");
    let values = tensor.to_data().convert::<f32>().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "{what} is not finite");
}

fn check_subspace(what: &str, subspace: &CommonSubspace<AB>) {
    let tensors: Vec<&Tensor<AB, 2>> = match subspace {
        CommonSubspace::Exact(s) => s.w_star.iter().chain(s.h.iter().flatten()).collect(),
        CommonSubspace::Factorised(s) => s
            .w_star
            .iter()
            .chain(s.u.iter().flatten())
            .chain(s.v.iter().flatten())
            .collect(),
    };
    for tensor in tensors {
        check(what, tensor);
    }
}

#[test]
fn an_f16_model_trains_f32_state_through_two_tasks_and_a_resume() {
    let device = Default::default();
    burn::tensor::set_default_dtypes::<Flex>(&device, FloatDType::F16, IntDType::I64)
        .expect("the first use of the device");
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("one"), [200, 30, 30], 2);
    write_images(&dir.path().join("two"), [30, 30, 200], 2);

    for variant in [R2Variant::Exact, R2Variant::Factorised { rank: 2 }] {
        let mut settings = config(Method::Cidm, 3);
        settings.continual.r2_variant = variant;
        let first_context = context(&dir.path().join("one"), "a <king1> king", &settings);
        let model_dtype = first_context.unet.transformer_blocks()[0]
            .attn2
            .to_q
            .base
            .weight
            .val()
            .dtype();
        assert_eq!(model_dtype, DType::F16, "the model is f16, as on Cuda<f16>");
        let mut first =
            TaskTrainer::new(first_context, words("<king1>", "king"), settings.clone()).unwrap();
        let mut reports = Vec::new();
        first.train(None, |r| reports.push(*r)).unwrap();
        assert!(reports
            .iter()
            .all(|r| r.loss.is_finite() && r.tokens_updated));
        let (learner, subspace) = first.finish().unwrap();
        check("task 1 tokens", &learner.tokens);
        for (path, f) in learner.adapter.layers() {
            check(&format!("task 1 {path} down"), &f.down);
            check(&format!("task 1 {path} up"), &f.up);
        }
        let subspace = subspace.expect("CIDM keeps R2's state");
        check_subspace("task 1 subspace", &subspace);

        // Task 2: R1 against task 1's up factors, R2 over both tasks, and R2's descent step.
        let mut second_context = context(&dir.path().join("two"), "a <land1> land", &settings);
        second_context.old_tasks = vec![learner.adapter.clone()];
        second_context.subspace = Some(subspace);
        let task = words("<land1>", "land");
        let mut second = TaskTrainer::new(second_context, task.clone(), settings.clone()).unwrap();
        let report = second.step().unwrap();
        assert!(
            report.loss.is_finite() && report.regularizer.is_finite() && report.regularizer > 0.0,
            "{variant:?}: {report:?}"
        );

        // A checkpoint of task 2 holds f32 state and resumes into two more finite steps.
        let path = dir.path().join("task2.ckpt.safetensors");
        write_checkpoint(&path, &second.state().unwrap(), &task, &settings).unwrap();
        drop(second);
        let (_, state) = read_checkpoint::<AB>(&path, &device).unwrap();
        check("checkpointed tokens", &state.tokens);
        let mut resumed_context = context(&dir.path().join("two"), "a <land1> land", &settings);
        resumed_context.old_tasks = vec![learner.adapter.clone()];
        let mut resumed = TaskTrainer::resume(resumed_context, task, settings, state).unwrap();
        for _ in 0..2 {
            let report = resumed.step().unwrap();
            assert!(
                report.loss.is_finite() && report.regularizer.is_finite(),
                "{report:?}"
            );
        }
        let (learner, subspace) = resumed.finish().unwrap();
        check("task 2 tokens", &learner.tokens);
        for (path, f) in learner.adapter.layers() {
            check(&format!("task 2 {path} down"), &f.down);
            check(&format!("task 2 {path} up"), &f.up);
        }
        check_subspace("task 2 subspace", &subspace.expect("R2's state"));
    }
}
