//! Layer-wise concept tokens on the tiny diffusers model: registration, per-layer encoding,
//! gradients into exactly the used rows, typed errors, and the norm threshold.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_continual::{keep_updating_tokens, ConceptTokens, ConceptWord, Error, TokenInit};
use cidm_diffusion::{CLIPTextModel, CLIPTokenizer, ModelDir, PerLayer, UNet2DConditionModel};

type AD = Autodiff<Flex>;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../cidm-diffusion/tests/fixtures/pipeline-model"
);

fn load<Bk: Backend>() -> (CLIPTokenizer, CLIPTextModel<Bk>, usize) {
    let dir = ModelDir::open(Path::new(MODEL)).expect("model dir");
    let device = Default::default();
    let tokenizer = CLIPTokenizer::from_model_dir(&dir).expect("tokenizer");
    let encoder = CLIPTextModel::from_model_dir(&dir, None, &device).expect("text encoder");
    let unet = UNet2DConditionModel::<Bk>::from_model_dir(&dir, None, &device).expect("unet");
    (tokenizer, encoder, unet.cross_attention_layers())
}

fn words() -> Vec<ConceptWord> {
    vec![
        ConceptWord {
            word: "<dog1>".into(),
            init: TokenInit::Normal {
                sigma: 0.013,
                seed: 7,
            },
        },
        ConceptWord {
            word: "<cat1>".into(),
            init: TokenInit::ClassWord("day".into()),
        },
    ]
}

fn max_abs<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> f32 {
    t.abs().max().into_data().to_vec::<f32>().expect("f32")[0]
}

#[test]
fn registration_adds_ids_and_rows_with_the_requested_init() {
    let (mut tokenizer, mut encoder, layers) = load::<Flex>();
    assert!(
        layers > 1,
        "the fixture has {layers} cross-attention layers"
    );
    let vocab = tokenizer.vocab_size();
    let tokens =
        ConceptTokens::register(&words(), layers, &mut tokenizer, &mut encoder).expect("register");
    assert_eq!(tokens.ids(), &[vocab as u32, vocab as u32 + 1]);
    assert_eq!(encoder.vocab_size(), vocab + 2);
    assert_eq!(
        tokens.embeddings.dims(),
        [2, layers, encoder.config().hidden_size]
    );
    assert_eq!(tokenizer.token_to_id("<cat1>"), Some(vocab as u32 + 1));

    // The class-word rows are the class word's table row on every layer.
    let day = tokenizer.token_to_id("day</w>").expect("day is one token");
    let day_row = encoder
        .embed_tokens(&[[day]])
        .expect("row")
        .reshape([1, 1, 32]);
    let cat_rows = tokens.embeddings.val().slice(1..2);
    assert!(max_abs(cat_rows - day_row) == 0.0);

    // The random rows are small and differ between layers.
    let dog = tokens.embeddings.val().slice(0..1);
    let layer_gap = max_abs(dog.clone().slice([0..1, 0..1]) - dog.clone().slice([0..1, 1..2]));
    assert!(layer_gap > 0.0);
    assert!(max_abs(dog) < 0.1);
    assert!(tokens.mean_norm().expect("norm") > 0.0);
}

#[test]
fn prompts_without_concept_words_share_one_encoding() {
    let (mut tokenizer, mut encoder, layers) = load::<Flex>();
    let tokens =
        ConceptTokens::register(&words(), layers, &mut tokenizer, &mut encoder).expect("register");
    let conditioning = tokens
        .encode(&tokenizer, &encoder, &["a photo of the day"], 0)
        .expect("encode");
    let PerLayer::Shared(text) = conditioning.text else {
        panic!("expected one shared encoding");
    };
    let direct = encoder
        .forward(
            &[tokenizer.encode("a photo of the day").expect("ids").ids],
            0,
        )
        .expect("forward");
    assert!(max_abs(text - direct) < 1e-6);
}

#[test]
fn per_layer_encodings_carry_each_layers_rows_and_gradients_reach_only_used_rows() {
    let (mut tokenizer, mut encoder, layers) = load::<AD>();
    let tokens =
        ConceptTokens::register(&words(), layers, &mut tokenizer, &mut encoder).expect("register");
    let prompts = ["a photo of <dog1> on the day", "<dog1>"];
    let conditioning = tokens
        .encode(&tokenizer, &encoder, &prompts, 0)
        .expect("encode");
    let PerLayer::Layers(texts) = conditioning.text else {
        panic!("expected per-layer encodings");
    };
    assert_eq!(texts.len(), layers);
    assert_eq!(texts[0].dims(), [2, 77, 32]);

    // Layer 0's encoding equals the encoder run on a table whose <dog1> row is layer 0's.
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| tokenizer.encode(p).expect("ids").ids)
        .collect();
    let direct = encoder.forward(&ids, 0).expect("forward");
    assert!(max_abs(texts[0].clone() - direct) < 1e-5);
    assert!(max_abs(texts[0].clone() - texts[1].clone()) > 0.0);

    // A loss on layer 1 alone: gradient only on <dog1>'s layer-1 row.
    let loss = texts[1].clone().square().sum();
    let grads = loss.backward();
    let grad = tokens.embeddings.grad(&grads).expect("token gradient");
    assert!(max_abs(grad.clone().slice([0..1, 1..2])) > 0.0, "used row");
    let mut unused = vec![grad.clone().slice(1..2)];
    unused.push(grad.clone().slice([0..1, 0..1]));
    if layers > 2 {
        unused.push(grad.slice([0..1, 2..layers]));
    }
    for rows in unused {
        assert_eq!(max_abs(rows), 0.0, "absent word or unused layer");
    }
}

#[test]
fn bad_words_are_typed_errors_and_leave_the_models_unchanged() {
    let (mut tokenizer, mut encoder, layers) = load::<Flex>();
    let vocab = tokenizer.vocab_size();
    let taken = [ConceptWord {
        word: "day</w>".into(),
        init: TokenInit::Normal {
            sigma: 0.013,
            seed: 0,
        },
    }];
    assert!(matches!(
        ConceptTokens::register(&taken, layers, &mut tokenizer, &mut encoder),
        Err(Error::WordInVocabulary(_))
    ));
    let multi = [ConceptWord {
        word: "<dog1>".into(),
        init: TokenInit::ClassWord("dog".into()),
    }];
    assert!(matches!(
        ConceptTokens::register(&multi, layers, &mut tokenizer, &mut encoder),
        Err(Error::ClassWordNotSingleToken { .. })
    ));
    assert!(ConceptTokens::register(&[], layers, &mut tokenizer, &mut encoder).is_err());
    assert_eq!(tokenizer.vocab_size(), vocab);
    assert_eq!(encoder.vocab_size(), vocab);
}

#[test]
fn norm_threshold_stops_updates_at_the_threshold() {
    assert!(keep_updating_tokens(0.3, Some(0.55)));
    assert!(!keep_updating_tokens(0.55, Some(0.55)));
    assert!(keep_updating_tokens(10.0, None));
}
