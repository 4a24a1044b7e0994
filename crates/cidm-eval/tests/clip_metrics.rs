//! IA and TA from image files and captions reproduce the values computed from transformers'
//! embeddings by tools/clip_eval_fixtures.py on a tiny random CLIPModel, and bad folders and
//! files give typed errors.
//!
//! Tolerance: 1e-4 on the x100 metrics (4e-7 on a CLIPScore cosine). Image decoding and
//! preprocessing are exact (checked below and in the core's parity tests) and the embeddings
//! agree to about 4e-7 (f32 summation order); measured errors are below 2e-5.

use std::path::{Path, PathBuf};

use cidm_diffusion::vae::Rgb8Image;
use cidm_diffusion::SafetensorsWeights;
use cidm_eval::{
    image_files, load_image, read_captions, replace_class_words, ClassWord, ClipScorer, EvalError,
};
use serde_json::Value;

type B = burn::backend::Flex;

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/clip-vit-model")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("clip-metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load_all(paths: &[PathBuf]) -> Vec<Rgb8Image> {
    paths.iter().map(|p| load_image(p).unwrap()).collect()
}

fn close(what: &str, ours: f64, theirs: &Value) {
    let theirs = theirs.as_f64().unwrap();
    eprintln!(
        "{what}: ours {ours}, transformers {theirs}, error {:e}",
        (ours - theirs).abs()
    );
    assert!(
        (ours - theirs).abs() < TOLERANCE,
        "{what}: {ours} vs {theirs}"
    );
}

/// PNG decoding plus transparency handling gives the bytes transformers' `convert_to_rgb`
/// gives (RGB, RGBA composited onto white, grayscale replicated).
#[test]
fn decoded_images_match_transformers_rgb() {
    let io = SafetensorsWeights::open(model_dir().join("../clip-vit-io.safetensors")).unwrap();
    for folder in ["generated", "references"] {
        for path in image_files(&fixtures().join(folder)).unwrap() {
            let name = path.file_stem().unwrap().to_str().unwrap();
            let key = format!("{name}.rgb");
            let shape = io.shape(&key).unwrap().to_vec();
            let expected: Vec<u8> = io
                .read_f32(&key, &shape)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(|v| v as u8)
                .collect();
            let image = load_image(&path).unwrap();
            assert_eq!((image.height, image.width), (shape[0], shape[1]), "{name}");
            assert!(image.pixels == expected, "{name}: decoded bytes differ");
        }
    }
}

#[test]
fn metrics_match_transformers() {
    let expected = expected();
    let scorer = ClipScorer::<B>::from_dir(model_dir(), &Default::default())
        .unwrap()
        .with_batch_size(2); // batches of 2 and a remainder of 1
    let generated_files = image_files(&fixtures().join("generated")).unwrap();
    // File-name order; the script lists the generated images in its own order.
    let order: Vec<String> = expected["generated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let index_of = |path: &Path| {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        order.iter().position(|n| n == stem).unwrap()
    };
    let generated = load_all(&generated_files);
    let references = load_all(&image_files(&fixtures().join("references")).unwrap());

    let ia = scorer.image_alignment(&generated, &references).unwrap();
    close("IA", ia.mean, &expected["image_alignment"]);
    for (path, value) in generated_files.iter().zip(&ia.per_image) {
        close(
            "IA per image",
            *value,
            &expected["image_alignment_per_image"][index_of(path)],
        );
    }

    let class_words: Vec<ClassWord> = expected["class_words"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(word, class)| {
            format!("{word}={}", class.as_str().unwrap())
                .parse()
                .unwrap()
        })
        .collect();
    let prompts: Vec<String> = read_captions(&generated_files)
        .unwrap()
        .expect("the fixture has captions")
        .iter()
        .map(|c| replace_class_words(c, &class_words))
        .collect();
    for (path, prompt) in generated_files.iter().zip(&prompts) {
        assert_eq!(prompt, &expected["prompts"][index_of(path)]);
    }
    let ta = scorer.text_alignment(&generated, &prompts).unwrap();
    close("TA", ta.mean, &expected["text_alignment"]);
    for (path, value) in generated_files.iter().zip(&ta.per_image) {
        let cos = expected["text_cosine_per_image"][index_of(path)]
            .as_f64()
            .unwrap();
        // At least one fixture cosine is negative: its CLIPScore is clamped to zero.
        close("TA per image", *value, &Value::from(250.0 * cos.max(0.0)));
    }
}

#[test]
fn bad_folders_and_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        image_files(&dir.path().join("missing")),
        Err(EvalError::Io { .. })
    ));
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    assert!(matches!(
        image_files(dir.path()),
        Err(EvalError::EmptyFolder { .. })
    ));
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert!(matches!(
        load_image(&broken),
        Err(EvalError::UnreadableImage { .. })
    ));
    assert!(matches!(
        load_image(&dir.path().join("gone.png")),
        Err(EvalError::Io { .. })
    ));
    // One captioned image and one without: the missing caption is named.
    for name in ["a.png", "b.png"] {
        std::fs::copy(
            fixtures().join("references/stripes.png"),
            dir.path().join(name),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("a.txt"), "a dog\n").unwrap();
    let files = image_files(dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    match read_captions(&files[..2]) {
        Err(EvalError::MissingCaption { image, .. }) => assert!(image.ends_with("b.png")),
        other => panic!("expected a missing caption, got {other:?}"),
    }
    assert_eq!(read_captions(&files[1..2]).unwrap(), None);
}

/// A processor whose crop is not the vision model's input size is refused when the scorer is
/// put together, and prompts must pair with images.
#[test]
fn mismatched_parts_are_refused() {
    let device = Default::default();
    let scorer = ClipScorer::<B>::from_dir(model_dir(), &device).unwrap();
    let image = load_image(&fixtures().join("references/stripes.png")).unwrap();
    assert!(matches!(
        scorer.text_alignment(&[image.clone(), image], &["a dog"]),
        Err(EvalError::InvalidInput(_))
    ));
    let mut processor = scorer.processor().clone();
    processor.crop = Some((64, 64));
    let model = cidm_diffusion::CLIPModel::<B>::from_dir(model_dir(), &device).unwrap();
    let result = ClipScorer::new(model, scorer.tokenizer().clone(), processor, &device);
    assert!(matches!(result, Err(EvalError::InvalidInput(_))));
}
