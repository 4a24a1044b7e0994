//! `cidm eval --clip` end to end on the tiny CLIPModel fixture: the IA and TA it reports are
//! the values tools/clip_eval_fixtures.py computed with transformers (within 1e-4 on the x100
//! scale, as in cidm-eval's tests), and bad input fails with a message, never a panic.

mod common;

use std::path::PathBuf;

use common::{cidm, stderr};
use serde_json::Value;

fn crates() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn clip_model() -> String {
    path("cidm-diffusion/tests/fixtures/clip-vit-model")
}

fn path(relative: &str) -> String {
    crates().join(relative).to_str().unwrap().to_string()
}

fn expected() -> Value {
    let text = std::fs::read_to_string(crates().join("cidm-eval/tests/fixtures/clip-metrics.json"))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn eval_reports_the_transformers_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scores.json");
    let run = cidm(&[
        "eval",
        "--clip",
        &clip_model(),
        "--images",
        &path("cidm-eval/tests/fixtures/generated"),
        "--references",
        &path("cidm-eval/tests/fixtures/references"),
        "--class-word",
        "<dog1>=dog",
        "--batch-size",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let expected = expected();
    let (ia, ta) = (
        expected["image_alignment"].as_f64().unwrap(),
        expected["text_alignment"].as_f64().unwrap(),
    );
    // The printed values, to two decimals.
    assert!(stdout.contains(&format!("IA          {ia:.2}")), "{stdout}");
    assert!(stdout.contains(&format!("TA          {ta:.2}")), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!((report["image_alignment"].as_f64().unwrap() - ia).abs() < 1e-4);
    assert!((report["text_alignment"].as_f64().unwrap() - ta).abs() < 1e-4);
    assert_eq!(report["images"], 3);
    assert_eq!(report["references"], 2);
    let per_image = report["per_image"].as_array().unwrap();
    // File-name order: gradient, gray, rings; prompts have the class word in.
    assert_eq!(per_image[0]["file"], "gradient.png");
    assert_eq!(per_image[0]["prompt"], expected["prompts"][0]);
}

/// `--prompt` replaces the captions; without references only TA is reported.
#[test]
fn one_prompt_for_all_images_gives_text_alignment_only() {
    let run = cidm(&[
        "eval",
        "--clip",
        &clip_model(),
        "--images",
        &path("cidm-eval/tests/fixtures/generated"),
        "--prompt",
        "a photo of a <dog1>",
        "--class-word",
        "<dog1>=dog",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("TA ") && !stdout.contains("IA "),
        "{stdout}"
    );
}

#[test]
fn bad_input_fails_with_a_message() {
    let generated = path("cidm-eval/tests/fixtures/generated");
    let references = path("cidm-eval/tests/fixtures/references");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().to_str().unwrap();
    for (args, message) in [
        // Reference images have no captions: nothing to score.
        (vec!["--images", references.as_str()], "nothing to score"),
        (vec!["--images", empty], "no PNG or JPEG images"),
        (
            vec!["--images", generated.as_str(), "--class-word", "dog"],
            "WORD=CLASS",
        ),
    ] {
        let run = cidm(&[&["eval", "--clip", &clip_model()], &args[..]].concat());
        assert!(!run.status.success(), "{args:?} succeeded");
        let err = stderr(&run);
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let run = cidm(&["eval", "--clip", empty, "--images", &generated]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("config.json"), "{}", stderr(&run));
}
