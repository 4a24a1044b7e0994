//! SIGKILL at arbitrary points never leaves a store or checkpoint that fails to load, and
//! `--resume` after the kills finishes with exactly the learner of an uninterrupted run.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use burn::backend::Flex;
use cidm::continual::{read_checkpoint, TaskStore};
use common::fixture_model;

fn train(store: &Path, images: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cidm"));
    let model = fixture_model();
    command
        .args(["train-task", "--model", model.to_str().unwrap()])
        .args(["--store", store.to_str().unwrap()])
        .args(["--images", images.to_str().unwrap()])
        .args(["--concept", "<king1>", "--class", "king"])
        .args([
            "--steps",
            "40",
            "--rank",
            "2",
            "--checkpoint-every",
            "1",
            "--seed",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resume {
        command.arg("--resume");
    }
    command
}

fn tokens(store: &Path) -> Vec<f32> {
    let store = TaskStore::open(store).unwrap();
    let learner = store.load_learner::<Flex>(1, &Default::default()).unwrap();
    learner.tokens.to_data().to_vec::<f32>().unwrap()
}

#[test]
fn killed_trainings_leave_loadable_state_and_resume_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..2u32 {
        image::RgbImage::from_fn(16, 16, |x, _| {
            image::Rgb(if x / 4 == i {
                [230, 40, 40]
            } else {
                [120, 120, 120]
            })
        })
        .save(images.join(format!("{i}.png")))
        .unwrap();
    }

    let straight = dir.path().join("straight");
    assert!(train(&straight, &images, false).status().unwrap().success());

    let store = dir.path().join("killed");
    let checkpoint = store.join("training/_king1_.ckpt.safetensors");
    // Delays from a fixed linear congruential sequence: arbitrary points, same every run.
    let mut state = 12345u64;
    let mut kills = 0;
    for attempt in 0..8 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(150 + (state >> 33) % 900);
        let mut child = train(&store, &images, attempt > 0 && checkpoint.exists())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        kills += 1;
        if store.join("store.json").exists() {
            TaskStore::open(&store).expect("the store loads after a kill");
        }
        if checkpoint.exists() {
            let (header, _) = read_checkpoint::<Flex>(&checkpoint, &Default::default())
                .expect("the checkpoint loads after a kill");
            assert!(header.step >= 1 && header.step < 40);
        }
    }
    eprintln!("killed {kills} runs");
    assert!(kills >= 1, "no run was interrupted");
    let done = TaskStore::open(&store)
        .map(|s| s.tasks().len())
        .unwrap_or(0);
    if done == 0 {
        let status = train(&store, &images, checkpoint.exists())
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(
        !checkpoint.exists(),
        "the checkpoint is removed once the task is stored"
    );
    assert_eq!(tokens(&store), tokens(&straight));
}
