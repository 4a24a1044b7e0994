//! The tiny complete Stable Diffusion of the core's fixtures with two tasks: concept words
//! `<c1>` and `<c2>` registered as layer-wise tokens, and one rank-2 LoRA per task with
//! random non-zero factors on every cross-attention projection.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cidm_continual::{ConceptTokens, ConceptWord, TokenInit};
use cidm_diffusion::StableDiffusion;
use cidm_lora::{LoraAdapter, LoraConfig, LoraFactors};

pub type B = burn::backend::Flex;

pub const WORDS: [&str; 2] = ["<c1>", "<c2>"];

pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/pipeline-model")
}

pub struct Setup {
    pub sd: StableDiffusion<B>,
    pub concepts: ConceptTokens<B>,
    pub adapters: Vec<LoraAdapter<B>>,
}

pub fn task_words() -> Vec<Vec<String>> {
    WORDS.iter().map(|w| vec![w.to_string()]).collect()
}

pub fn setup() -> Setup {
    let device = Default::default();
    B::seed(&device, 20241022);
    let mut sd = StableDiffusion::<B>::from_model_dir(&model_dir(), None, &device).unwrap();
    let words: Vec<ConceptWord> = WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| ConceptWord {
            word: w.to_string(),
            init: TokenInit::Normal {
                sigma: 0.5,
                seed: i as u64 + 1,
            },
        })
        .collect();
    let layers = sd.unet.cross_attention_layers();
    let concepts =
        ConceptTokens::register(&words, layers, &mut sd.tokenizer, &mut sd.text_encoder).unwrap();
    let adapters = (0..WORDS.len() as u64)
        .map(|seed| {
            let config = LoraConfig::new(2, 4.0).with_init_seed(seed);
            let fresh = LoraAdapter::init(&config, &sd.unet, &device).unwrap();
            let layers: BTreeMap<String, LoraFactors<B>> = fresh
                .layers()
                .iter()
                .map(|(path, f)| {
                    let up = Tensor::random(f.up.dims(), Distribution::Normal(0.0, 0.3), &device);
                    let factors = LoraFactors {
                        down: f.down.clone(),
                        up,
                    };
                    (path.clone(), factors)
                })
                .collect();
            LoraAdapter::new(config, layers).unwrap()
        })
        .collect();
    Setup {
        sd,
        concepts,
        adapters,
    }
}

pub fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).abs().max().into_scalar()
}
