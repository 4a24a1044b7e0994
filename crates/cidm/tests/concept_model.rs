//! `ConceptModel` on the tiny complete Stable Diffusion fixture with two tasks (random
//! non-zero LoRAs, random layer-wise rows): each aggregation against an independent path.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm::concept_model::{Aggregation, ConceptModel, ConceptModelError};
use cidm::continual::{ConceptTokens, Method, TaskLearner};
use cidm::diffusion::pipeline::{gaussian_latents, sample, GenerationRequest};
use cidm::diffusion::{Sampler, StableDiffusion};
use cidm::ewa::EwaVariant;

#[path = "../../cidm-ewa/tests/common/mod.rs"]
mod ewa_common;

type B = burn::backend::Flex;

const WORDS: [&str; 2] = ["<c1>", "<c2>"];

fn base() -> StableDiffusion<B> {
    StableDiffusion::from_model_dir(&ewa_common::model_dir(), None, &Default::default()).unwrap()
}

/// Two learners: the EWA tests' random rank-2 LoRAs (up ~ N(0, 0.3), so they change the
/// output) and random rows (sigma 0.5, far from any vocabulary row).
fn learners(sd: &StableDiffusion<B>) -> Vec<TaskLearner<B>> {
    let device = Default::default();
    let adapters = ewa_common::setup().adapters;
    B::seed(&device, 7);
    let layers = sd.unet.cross_attention_layers();
    let hidden = sd.text_encoder.config().hidden_size;
    WORDS
        .iter()
        .zip(adapters)
        .map(|(word, adapter)| TaskLearner {
            words: vec![word.to_string()],
            classes: vec!["king".into()],
            adapter,
            tokens: Tensor::random([1, layers, hidden], Distribution::Normal(0.0, 0.5), &device),
        })
        .collect()
}

fn request(prompts: &[&str], guidance: f64) -> GenerationRequest {
    GenerationRequest {
        prompts: prompts.iter().map(|p| p.to_string()).collect(),
        negative_prompts: vec![],
        width: 16,
        height: 16,
        steps: 3,
        guidance_scale: guidance,
        seed: 11,
        sampler: Sampler::DpmPlusPlus,
        clip_skip: 0,
    }
}

fn max_abs_diff(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar()
}

/// `finetune` uses the last LoRA alone at full strength: the same latents as attaching that
/// LoRA by hand and sampling with the layer-wise text of the registered words. The two paths
/// differ only by a gate of exactly 1.0 (one f32 multiply by one), so they agree to 1e-6.
#[test]
fn last_task_equals_the_last_lora_attached_by_hand() {
    let sd = base();
    let stored = learners(&sd);
    let request = request(&["a <c2> on grass"], 7.5);
    let model = ConceptModel::new(sd, stored.clone(), Aggregation::LastTask, 0).unwrap();
    let (ours, weights) = model
        .generate_latents(&request, None, &mut |_, _| {})
        .unwrap();
    assert_eq!(weights[0].values()[0], vec![1.0]);

    let mut by_hand = base();
    let words: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    let rows = Tensor::cat(stored.iter().map(|l| l.tokens.clone()).collect(), 0);
    let concepts = ConceptTokens::register_rows(
        &words,
        rows,
        &mut by_hand.tokenizer,
        &mut by_hand.text_encoder,
    )
    .unwrap();
    stored[1].adapter.attach(&mut by_hand.unet).unwrap();
    let conditioning = concepts
        .encode(
            &by_hand.tokenizer,
            &by_hand.text_encoder,
            &["", "a <c2> on grass"],
            0,
        )
        .unwrap();
    let latents = gaussian_latents([1, 4, 8, 8], 11, &Default::default());
    let settings = by_hand.sampling_settings(&request);
    let expected = sample(
        &by_hand.unet,
        latents,
        &conditioning,
        &settings,
        &mut |_, _| {},
    )
    .unwrap();
    let diff = max_abs_diff(ours, expected);
    assert!(diff < 1e-6, "max |diff| {diff}");
}

/// A batch of prompts naming different concepts: each prompt gets its own weights (the task
/// it names weighs most, on average over layers), and each image equals the image generated
/// alone from the same initial latent, so per-sample gates never leak across the batch.
/// Tolerance 1e-4: batched and single convolutions sum in different orders on the CPU.
#[test]
fn each_prompt_of_a_batch_gets_its_own_weights() {
    let sd = base();
    let stored = learners(&sd);
    let model = ConceptModel::new(sd, stored, Aggregation::Ewa(EwaVariant::Code), 0).unwrap();
    let prompts = ["one <c1> in snow", "<c2> sitting on grass"];
    let latents = gaussian_latents([2, 4, 8, 8], 5, &Default::default());
    for guidance in [7.5, 1.0] {
        let batch = request(&prompts, guidance);
        let (together, weights) = model
            .generate_latents(&batch, Some(latents.clone()), &mut |_, _| {})
            .unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let mean = weights[i].mean_per_task();
            assert!(mean[i] > mean[1 - i], "{prompt:?}: {mean:?}");
            let alone = request(&[prompt], guidance);
            let (single, _) = model
                .generate_latents(
                    &alone,
                    Some(latents.clone().narrow(0, i, 1)),
                    &mut |_, _| {},
                )
                .unwrap();
            let diff = max_abs_diff(together.clone().narrow(0, i, 1), single);
            assert!(diff < 1e-4, "{prompt:?}, guidance {guidance}: {diff}");
        }
    }
}

/// The store's method decides the default; finetune refuses EWA.
#[test]
fn aggregation_follows_the_method() {
    use Aggregation::*;
    let cases = [
        (Method::Cidm, None, Ewa(EwaVariant::Code)),
        (Method::R1Only, None, Ewa(EwaVariant::Code)),
        (
            Method::R2Only,
            Some(EwaVariant::Paper),
            Ewa(EwaVariant::Paper),
        ),
        (Method::LoraM, None, Ewa(EwaVariant::Off)),
        (Method::LoraM, Some(EwaVariant::Code), Ewa(EwaVariant::Code)),
        (Method::Finetune, None, LastTask),
    ];
    for (method, asked, expected) in cases {
        assert_eq!(Aggregation::for_method(method, asked).unwrap(), expected);
    }
    assert!(matches!(
        Aggregation::for_method(Method::Finetune, Some(EwaVariant::Off)),
        Err(ConceptModelError::EwaNotApplicable(EwaVariant::Off))
    ));
}

/// No learners, and a clip skip other than the tokens', are typed errors.
#[test]
fn bad_input_is_a_typed_error() {
    let sd = base();
    assert!(matches!(
        ConceptModel::new(sd, vec![], Aggregation::LastTask, 0),
        Err(ConceptModelError::EmptyStore(_))
    ));
    let sd = base();
    let stored = learners(&sd);
    let model = ConceptModel::new(sd, stored, Aggregation::LastTask, 0).unwrap();
    let mut skip = request(&["a <c1>"], 7.5);
    skip.clip_skip = 1;
    assert!(matches!(
        model.generate_latents(&skip, None, &mut |_, _| {}),
        Err(ConceptModelError::ClipSkip {
            trained: 0,
            asked: 1
        })
    ));
}
