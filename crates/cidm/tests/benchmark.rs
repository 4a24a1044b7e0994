//! The benchmark runner on the tiny pipeline fixture: two tasks, three methods, forgetting
//! after each task, a layout with regions; the report folder; rerunning continues from the
//! stores; plans from TOML and their errors.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use cidm::benchmark::{
    run_benchmark, write_report, BenchmarkError, BenchmarkPlan, ConceptEvaluator, LayoutSpec,
    SamplingPlan, TaskSpec,
};
use cidm::continual::{Method, TaskTrainingConfig};
use cidm::shapes::eval::{ConceptScores, RegionScore};
use common::{fixture_model, write_images};
use image::RgbImage;

/// Scores an image by its mean red value (IA) and green value (TA), and records every call,
/// so the test sees exactly what the runner asked to be scored.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<(String, Vec<usize>)>>,
}

impl ConceptEvaluator for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }

    fn score(
        &self,
        task: &TaskSpec,
        generated: &[(usize, RgbImage)],
    ) -> Result<ConceptScores, BenchmarkError> {
        self.calls.borrow_mut().push((
            task.name.clone(),
            generated.iter().map(|(p, _)| *p).collect(),
        ));
        let mean = |c: usize| {
            let (sum, n) = generated.iter().fold((0.0, 0.0), |(s, n), (_, image)| {
                let total: f32 = image.pixels().map(|p| p.0[c] as f32).sum();
                (s + total / image.pixels().len() as f32 / 255.0, n + 1.0)
            });
            sum / n
        };
        Ok(ConceptScores {
            concept: task.name.clone(),
            image_alignment: mean(0),
            text_alignment: mean(1),
            position_accuracy: None,
            samples: generated.len(),
        })
    }

    fn score_layout(
        &self,
        layout: &LayoutSpec,
        _image: &RgbImage,
    ) -> Option<Result<Vec<RegionScore>, BenchmarkError>> {
        Some(Ok(layout
            .regions
            .iter()
            .map(|r| RegionScore {
                concept: r.clone(),
                image_alignment: 1.0,
                best_other: None,
                best_other_alignment: None,
                shows_concept: true,
            })
            .collect()))
    }
}

fn plan(dir: &Path) -> BenchmarkPlan {
    let (kings, lands) = (dir.join("kings"), dir.join("lands"));
    write_images(&kings, [220, 20, 20]);
    write_images(&lands, [20, 220, 20]);
    let task = |name: &str, images: PathBuf, word: &str, class: &str| TaskSpec {
        name: name.into(),
        images,
        words: vec![word.into()],
        classes: vec![class.into()],
        prompts: vec![format!("a {word} {class}"), format!("a red {word} {class}")],
        caption: None,
    };
    BenchmarkPlan {
        model: fixture_model(),
        variant: None,
        methods: vec![Method::Cidm, Method::Finetune, Method::LoraM],
        training: TaskTrainingConfig {
            steps: 2,
            ..TaskTrainingConfig::default()
        },
        sampling: SamplingPlan {
            steps: 2,
            images_per_prompt: 2,
            ..SamplingPlan::default()
        },
        forgetting: true,
        tasks: vec![
            task("king1", kings, "<king1>", "king"),
            task("land1", lands, "<land1>", "land"),
        ],
        layouts: vec![LayoutSpec {
            prompt: "a <king1> king and a <land1> land".into(),
            regions: vec![
                "a <king1> king@0,0,0.5,1".into(),
                "a <land1> land@0.5,0,1,1".into(),
            ],
        }],
    }
}

/// Every method learns both tasks; after task 1 only concept 1 is scored, after task 2 both,
/// each from both prompts with two images each; the report folder holds every file; a second
/// run trains nothing and scores exactly the same (same stores, same seeds).
#[test]
fn runs_every_method_with_forgetting_and_resumes_from_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path());
    let out = dir.path().join("report");
    let recorder = Recorder::default();
    let mut events = 0;
    let results = run_benchmark(&plan, &out, Some(&recorder), &mut |_| events += 1).unwrap();
    assert!(events > 0);
    let expected_calls: Vec<(String, Vec<usize>)> = [vec!["king1"], vec!["king1", "land1"]]
        .iter()
        .flat_map(|names| names.iter().map(|n| (n.to_string(), vec![0, 0, 1, 1])))
        .collect();
    assert_eq!(
        *recorder.calls.borrow(),
        [
            expected_calls.clone(),
            expected_calls.clone(),
            expected_calls
        ]
        .concat()
    );
    assert_eq!(results.methods.len(), 3);
    for run in &results.methods {
        assert_eq!(
            run.history
                .iter()
                .map(|(g, s)| (*g, s.concepts.len()))
                .collect::<Vec<_>>(),
            vec![(1, 1), (2, 2)]
        );
        assert_eq!(run.final_scores.as_ref().unwrap().concepts.len(), 2);
        assert_eq!(run.images.len(), 2);
        assert!(run.images.iter().flatten().flatten().all(|f| f.is_file()));
        assert_eq!(run.layouts.len(), 1);
        assert!(run.layouts[0].image.is_file());
        assert!(run.train_seconds > 0.0);
        assert_eq!(run.final_losses.len(), 2);
        assert!(run
            .final_losses
            .iter()
            .all(|l| l.is_some_and(f32::is_finite)));
    }
    let written = write_report(&plan, &results, &out).unwrap();
    for name in [
        "results.json",
        "report.md",
        "concepts.png",
        "regions.png",
        "forgetting.png",
    ] {
        assert!(written.contains(&out.join(name)), "{name} not written");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| king1 |") && report.contains("LoRA-M IA"),
        "{report}"
    );
    assert!(image::open(out.join("forgetting.png")).unwrap().width() == 640);

    let again = run_benchmark(&plan, &out, Some(&Recorder::default()), &mut |_| {}).unwrap();
    for (first, second) in results.methods.iter().zip(&again.methods) {
        assert_eq!(second.train_seconds, 0.0, "{} trained again", first.method);
        assert_eq!(first.final_scores, second.final_scores);
    }
}

/// A TOML plan: relative paths resolve against the file's folder, defaults fill the rest,
/// and mistakes are errors that name the problem.
#[test]
fn plans_read_from_toml_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let path = dir.path().join("plan.toml");
        std::fs::write(&path, text).unwrap();
        BenchmarkPlan::from_toml_file(&path)
    };
    let good = r#"
model = "sd"
[training]
steps = 3
[[tasks]]
name = "dog1"
images = "photos/dog1"
words = ["<dog1>"]
classes = ["dog"]
prompts = ["a <dog1> dog"]
"#;
    let plan = write(good).unwrap();
    assert_eq!(plan.model, dir.path().join("sd"));
    assert_eq!(plan.tasks[0].images, dir.path().join("photos/dog1"));
    assert_eq!(
        plan.methods,
        vec![Method::Cidm, Method::Finetune, Method::LoraM]
    );
    assert_eq!((plan.training.steps, plan.sampling.steps), (3, 50));

    for (text, expected) in [
        (good.replace("steps = 3", "stepz = 3"), "stepz"),
        (
            good.replace("classes = [\"dog\"]", "classes = []"),
            "one class per word",
        ),
        (
            format!("methods = [\"cidm\", \"cidm\"]\n{good}"),
            "listed twice",
        ),
        (
            good.replace("name = \"dog1\"", "name = \"../x\""),
            "plain file name",
        ),
        (
            good.replace("prompts = [\"a <dog1> dog\"]", "prompts = []"),
            "no evaluation prompt",
        ),
        ("model = \"sd\"\ntasks = []".to_string(), "no task"),
    ] {
        let err = write(&text).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
    }
}

/// TA scores prompts with concept words replaced as the paper does: `a <dog1> dog` is
/// `a dog`, a concept word alone becomes its class word.
#[test]
fn class_prompts_replace_concept_words() {
    let task = TaskSpec {
        name: "dog1".into(),
        images: PathBuf::new(),
        words: vec!["<dog1>".into(), "<hat1>".into()],
        classes: vec!["dog".into(), "hat".into()],
        prompts: vec![],
        caption: None,
    };
    for (prompt, expected) in [
        ("a <dog1> dog on the beach", "a dog on the beach"),
        ("a photo of <dog1>", "a photo of dog"),
        ("a <dog1> dog wearing a <hat1> hat", "a dog wearing a hat"),
        ("a <dog1> puppy", "a dog puppy"),
    ] {
        assert_eq!(cidm::benchmark::class_prompt(prompt, &task), expected);
    }
}

/// The CLIP evaluator scores a task through the tiny random CLIPModel fixture: its IA and TA
/// are the scorer's (x100) numbers divided by 100, against the task's own image folder and the
/// class-word prompts.
#[test]
fn clip_evaluator_scores_against_the_task_images() {
    type B = burn::backend::Flex;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let clip = fixtures.join("cidm-diffusion/tests/fixtures/clip-vit-model");
    let references = fixtures.join("cidm-eval/tests/fixtures/references");
    let device = Default::default();
    let evaluator = cidm::benchmark::ClipConceptEvaluator::<B>::from_dir(&clip, &device).unwrap();
    let task = TaskSpec {
        name: "dog1".into(),
        images: references.clone(),
        words: vec!["<dog1>".into()],
        classes: vec!["dog".into()],
        prompts: vec!["a <dog1> dog".into()],
        caption: None,
    };
    let generated: Vec<(usize, RgbImage)> = (0..2u8)
        .map(|i| {
            (
                0,
                RgbImage::from_fn(32, 32, |x, y| {
                    image::Rgb([x as u8 * 8, y as u8 * 8, 60 * i])
                }),
            )
        })
        .collect();
    let scores = evaluator.score(&task, &generated).unwrap();
    let scorer = cidm::eval::ClipScorer::<B>::from_dir(&clip, &device).unwrap();
    let as_core = |image: &RgbImage| cidm::diffusion::vae::Rgb8Image {
        width: 32,
        height: 32,
        pixels: image.as_raw().clone(),
    };
    let images: Vec<_> = generated.iter().map(|(_, i)| as_core(i)).collect();
    let refs: Vec<_> = cidm::eval::image_files(&references)
        .unwrap()
        .iter()
        .map(|f| cidm::eval::load_image(f).unwrap())
        .collect();
    let ia = scorer.image_alignment(&images, &refs).unwrap().mean / 100.0;
    let ta = scorer
        .text_alignment(&images, &["a dog", "a dog"])
        .unwrap()
        .mean
        / 100.0;
    assert!(
        (scores.image_alignment as f64 - ia).abs() < 1e-6,
        "{scores:?} vs {ia}"
    );
    assert!(
        (scores.text_alignment as f64 - ta).abs() < 1e-6,
        "{scores:?} vs {ta}"
    );
    assert_eq!(scores.samples, 2);
    let missing = TaskSpec {
        images: fixtures.join("nowhere"),
        ..task
    };
    assert!(evaluator.score(&missing, &generated).is_err());
}
