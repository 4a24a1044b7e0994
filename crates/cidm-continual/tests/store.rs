//! The task store, filled by `train_task` on the tiny model: two CIDM tasks in sequence, the
//! store round-trips them, resumes an interrupted task, refuses another base model, a second
//! writer and hostile manifests, and exports a task that the PEFT loader reads back.

mod common;

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::Tensor;
use cidm_continual::{
    store::TaskEntry, train_task, write_checkpoint, BaseFingerprint, Error, Method, TaskStore,
    TaskTrainer, TaskWords, TrainEvent, TrainTaskRequest,
};
use cidm_diffusion::{ModelDir, UNet2DConditionModel};
use cidm_lora::LoraAdapter;
use common::{config, context, model, write_images, AB};

fn request(store: &Path, images: &Path, word: &str, class: &str, steps: usize) -> TrainTaskRequest {
    TrainTaskRequest {
        model: model(),
        variant: None,
        store: store.to_path_buf(),
        images: images.to_path_buf(),
        prompt: None,
        words: TaskWords {
            words: vec![word.into()],
            classes: vec![class.into()],
        },
        config: config(Method::Cidm, steps),
        resume: false,
    }
}

fn run(request: &TrainTaskRequest) -> Result<Vec<TrainEvent>, Error> {
    let mut events = Vec::new();
    train_task::<AB>(request, &Default::default(), |e| events.push(e))?;
    Ok(events)
}

fn values<const D: usize>(t: &Tensor<Flex, D>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

#[test]
fn two_cidm_tasks_fill_the_store_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (store_dir, kings, lands) = (
        dir.path().join("store"),
        dir.path().join("k"),
        dir.path().join("l"),
    );
    write_images(&kings, [200, 30, 30], 2);
    write_images(&lands, [30, 200, 30], 2);

    let first = run(&request(&store_dir, &kings, "<king1>", "king", 3)).unwrap();
    assert_eq!(
        first[0],
        TrainEvent::Started {
            task: 1,
            done: 0,
            total: 3
        }
    );
    let second = run(&request(&store_dir, &lands, "<land1>", "land", 3)).unwrap();
    assert_eq!(
        second[0],
        TrainEvent::Started {
            task: 2,
            done: 0,
            total: 3
        }
    );
    // From task 2 on, R1 and R2 join the loss.
    assert!(second[1..]
        .iter()
        .all(|e| matches!(e, TrainEvent::Step(r) if r.regularizer > 0.0)));

    let store = TaskStore::open(&store_dir).unwrap();
    let listed: Vec<(usize, Vec<String>)> = store
        .tasks()
        .iter()
        .map(|t| (t.index, t.words.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            (1, vec!["<king1>".to_string()]),
            (2, vec!["<land1>".to_string()])
        ]
    );
    let device = Default::default();
    let learners = store.load_learners::<Flex>(&device).unwrap();
    assert_eq!(learners[1].classes, ["land"]);
    // 4 cross-attention layers in the tiny UNet (down 1, mid 1, up 2), 32-wide text.
    assert_eq!(learners[0].tokens.dims(), [1, 4, 32]);
    assert_eq!(
        store
            .load_subspace::<Flex>(&device)
            .unwrap()
            .unwrap()
            .tasks(),
        2
    );
    let manifest = store.task_manifest(2).unwrap();
    assert_eq!(
        (manifest.method, manifest.steps, manifest.lora.rank),
        (Method::Cidm, 3, 2)
    );
    assert!(manifest.final_loss.is_some_and(f32::is_finite));
    assert!(!store.checkpoint_path(&manifest.words).exists());
    // Asking where a checkpoint would go writes nothing, even for a new word.
    let training = store.root().join("training");
    let _ = std::fs::remove_dir(&training);
    let _ = store.checkpoint_path(&["<new1>".to_string()]);
    assert!(!training.exists());

    // Export: a PEFT file that the LoRA loader reads back to the stored factors exactly.
    let out = dir.path().join("export");
    let files = store.export_task::<Flex>(1, &out, &device).unwrap();
    assert_eq!(files.len(), 3);
    let unet = UNet2DConditionModel::<Flex>::from_model_dir(
        &ModelDir::open(model()).unwrap(),
        None,
        &device,
    )
    .unwrap();
    let exported = LoraAdapter::<Flex>::load(&files[0], &unet, &device).unwrap();
    for ((path, a), (_, b)) in exported.layers().iter().zip(learners[0].adapter.layers()) {
        assert_eq!(values(&a.up), values(&b.up), "{path}");
        assert_eq!(values(&a.down), values(&b.down), "{path}");
    }
    let tokens = safetensors::SafeTensors::deserialize(&std::fs::read(&files[1]).unwrap())
        .unwrap()
        .tensor("<king1>")
        .unwrap()
        .shape()
        .to_vec();
    assert_eq!(tokens, [4, 32]);

    // Removing task 1 drops it and its transform; task 2 still loads.
    let base = store.manifest().base.clone();
    drop(store);
    let mut store = TaskStore::open_for_writing(&store_dir, &base, Method::Cidm).unwrap();
    // A failed commit (here `store.json`'s temporary file cannot be created: a folder holds
    // its name) changes nothing: the object and the disk still have both tasks and the same
    // R2 file, and the new R2 file is taken back.
    let files_before = entries(&store_dir);
    let blocker = store_dir.join(format!(".store.json.tmp-{}", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    assert!(store.remove_task::<Flex>(1, &device).is_err());
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(store.tasks().len(), 2);
    assert_eq!(entries(&store_dir), files_before);
    assert_eq!(TaskStore::open(&store_dir).unwrap().tasks().len(), 2);
    assert!(store_dir.join("tasks/task-001").exists());
    store.remove_task::<Flex>(1, &device).unwrap();
    assert!(matches!(
        store.remove_task::<Flex>(1, &device),
        Err(Error::UnknownTask(1))
    ));
    assert_eq!(store.tasks().len(), 1);
    assert_eq!(
        store
            .load_subspace::<Flex>(&device)
            .unwrap()
            .unwrap()
            .tasks(),
        1
    );
    assert!(store.load_learner::<Flex>(2, &device).is_ok());
    assert!(!store_dir.join("tasks/task-001").exists());
}

/// A checkpoint left by an interrupted run (written here after 2 of 4 steps) blocks a fresh
/// start, and `resume` finishes it to the learner an uninterrupted run stores, bit for bit.
#[test]
fn an_interrupted_task_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_images(&images, [200, 200, 30], 2);
    let straight_store = dir.path().join("straight");
    run(&request(&straight_store, &images, "<king1>", "king", 4)).unwrap();

    let store_dir = dir.path().join("resumed");
    let mut request = request(&store_dir, &images, "<king1>", "king", 4);
    let base = BaseFingerprint::of_model_dir(&model(), None).unwrap();
    let checkpoint = TaskStore::open_for_writing(&store_dir, &base, Method::Cidm)
        .unwrap()
        .checkpoint_path(&request.words.words);
    let mut interrupted = TaskTrainer::new(
        context(&images, "a photo of a <king1> king", &request.config),
        request.words.clone(),
        request.config.clone(),
    )
    .unwrap();
    interrupted.step().unwrap();
    interrupted.step().unwrap();
    write_checkpoint(
        &checkpoint,
        &interrupted.state().unwrap(),
        &request.words,
        &request.config,
    )
    .unwrap();

    assert!(matches!(run(&request), Err(Error::CheckpointExists(_))));
    request.resume = true;
    let events = run(&request).unwrap();
    assert_eq!(
        events[0],
        TrainEvent::Started {
            task: 1,
            done: 2,
            total: 4
        }
    );
    assert_eq!(events.len(), 3);

    let device = Default::default();
    let got = TaskStore::open(&store_dir)
        .unwrap()
        .load_learner::<Flex>(1, &device)
        .unwrap();
    let expected = TaskStore::open(&straight_store)
        .unwrap()
        .load_learner::<Flex>(1, &device)
        .unwrap();
    assert_eq!(values(&got.tokens), values(&expected.tokens));
    for ((path, a), (_, b)) in got.adapter.layers().iter().zip(expected.adapter.layers()) {
        assert_eq!(values(&a.up), values(&b.up), "{path}");
    }
}

#[test]
fn a_store_refuses_other_models_second_writers_and_hostile_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let base = BaseFingerprint::of_model_dir(&model(), None).unwrap();
    // The fingerprint depends on the model's content, not its path: a copy has the same one,
    // and a copy whose UNet config differs has another.
    let copy = dir.path().join("model-copy");
    copy_dir(&model(), &copy);
    assert_eq!(BaseFingerprint::of_model_dir(&copy, None).unwrap(), base);
    let config = copy.join("unet/config.json");
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"norm_eps\": 1e-05", "\"norm_eps\": 1e-06");
    std::fs::write(&config, edited).unwrap();
    assert_ne!(BaseFingerprint::of_model_dir(&copy, None).unwrap(), base);
    let other = BaseFingerprint("f".repeat(64));

    let writer = TaskStore::open_for_writing(&root, &base, Method::Cidm).unwrap();
    assert!(matches!(
        TaskStore::open_for_writing(&root, &base, Method::Cidm),
        Err(Error::StoreLocked(_))
    ));
    drop(writer);
    assert!(matches!(
        TaskStore::open_for_writing(&root, &other, Method::Cidm),
        Err(Error::BaseModelMismatch { .. })
    ));

    // A manifest pointing outside the store, or with a control character in a word, is
    // refused when the store is opened.
    let store = TaskStore::open(&root).unwrap();
    let mut hostile = store.manifest().clone();
    for (dir_name, word) in [
        ("../escape", "<ok>"),
        ("task-001", "<bad\u{7}>"),
        ("/etc", "<ok>"),
    ] {
        hostile.tasks = vec![TaskEntry {
            index: 1,
            dir: dir_name.into(),
            words: vec![word.into()],
        }];
        std::fs::write(
            root.join("store.json"),
            serde_json::to_string(&hostile).unwrap(),
        )
        .unwrap();
        assert!(
            matches!(TaskStore::open(&root), Err(Error::Corrupt { .. })),
            "{dir_name:?} {word:?} was accepted"
        );
    }
    std::fs::write(root.join("store.json"), b"{ not json").unwrap();
    assert!(matches!(TaskStore::open(&root), Err(Error::Corrupt { .. })));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The sorted names in `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
