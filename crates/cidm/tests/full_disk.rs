//! A full disk while a new task is saved leaves the previous store intact: `cidm train-task`
//! exits with a clear error (no panic), the store opens and lists exactly the tasks it had,
//! every file it had is unchanged byte for byte (so its learners load as before), and nothing
//! of the failed task (staging folder, task folder, R2 state, temporary file) is left.
//!
//! The full disk is a file-size limit (`ulimit -f`) on the training process, with `SIGXFSZ`
//! ignored so that the write past the limit fails with EFBIG instead of killing the process.
//! A task of the tiny fixture saves a learner of about 10 kB, then R2's state (about 65 kB),
//! then `store.json` (under 1 kB). Two limits stop the save at two points:
//! - 8 blocks (4096 bytes in POSIX shells, 8192 in bash): the learner, written into the
//!   staging folder, fails part-way;
//! - 32 blocks (16 or 32 kB): the learner and manifest are written and the task folder is in
//!   place, then R2's state fails, so the save must also take the task folder back.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use burn::backend::Flex;
use cidm::continual::TaskStore;
use common::{fixture_model, write_images};

/// `cidm train-task` for one concept, two steps, under a file-size limit of `blocks` when
/// given.
fn train(store: &Path, images: &Path, word: &str, class: &str, blocks: Option<u32>) -> Output {
    let mut command = match blocks {
        Some(blocks) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    r#"ulimit -f {blocks} && trap '' XFSZ && exec "$0" "$@""#
                ))
                .arg(env!("CARGO_BIN_EXE_cidm"));
            sh
        }
        None => Command::new(env!("CARGO_BIN_EXE_cidm")),
    };
    let model = fixture_model();
    command
        .args(["train-task", "--model", model.to_str().unwrap()])
        .args(["--store", store.to_str().unwrap()])
        .args(["--images", images.to_str().unwrap()])
        .args(["--concept", word, "--class", class])
        .args(["--steps", "2", "--rank", "2", "--seed", "5"])
        .output()
        .expect("the binary runs")
}

/// Every file under `root` (relative path -> bytes), the lock file excepted (it is empty and
/// only locked).
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if name != ".lock" {
                    out.insert(name, std::fs::read(&path).unwrap());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn learner_values(store: &TaskStore, index: usize) -> Vec<Vec<f32>> {
    let learner = store
        .load_learner::<Flex>(index, &Default::default())
        .unwrap();
    let mut values = vec![learner.tokens.to_data().to_vec::<f32>().unwrap()];
    for factors in learner.adapter.layers().values() {
        values.push(factors.down.to_data().to_vec::<f32>().unwrap());
        values.push(factors.up.to_data().to_vec::<f32>().unwrap());
    }
    values
}

#[test]
fn a_full_disk_while_saving_a_task_leaves_the_previous_store_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (kings, lands) = (dir.path().join("kings"), dir.path().join("lands"));
    write_images(&kings, [220, 20, 20]);
    write_images(&lands, [20, 220, 20]);
    let base = dir.path().join("base");
    let first = train(&base, &kings, "<king1>", "king", None);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = snapshot(&base);
    let learner_before = learner_values(&TaskStore::open(&base).unwrap(), 1);

    for (blocks, failing_file) in [(8, "learner.safetensors"), (32, "r2-002.safetensors")] {
        let store = dir.path().join(format!("limited-{blocks}"));
        std::fs::create_dir_all(store.join("tasks/task-001")).unwrap();
        std::fs::create_dir_all(store.join("training")).unwrap();
        for (name, bytes) in &before {
            std::fs::write(store.join(name), bytes).unwrap();
        }

        let run = train(&store, &lands, "<land1>", "land", Some(blocks));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "limit {blocks}: the save succeeded");
        assert!(!stderr.contains("panicked"), "limit {blocks}: {stderr}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("limit {blocks}: no error line in {stderr}"));
        assert!(
            error.contains(failing_file)
                && error.contains("could not be written: the disk is full or the file is over")
                && error.contains("File too large"),
            "limit {blocks}: {error}"
        );

        let opened = TaskStore::open(&store).expect("the store opens after the failed save");
        let words: Vec<_> = opened.tasks().iter().map(|t| t.words.clone()).collect();
        assert_eq!(words, [["<king1>".to_string()]], "limit {blocks}");
        assert_eq!(learner_values(&opened, 1), learner_before, "limit {blocks}");
        assert!(
            snapshot(&store) == before,
            "limit {blocks}: the store's files changed"
        );
        assert_eq!(
            entries(&store.join("tasks")),
            ["task-001"],
            "limit {blocks}"
        );
        let list = Command::new(env!("CARGO_BIN_EXE_cidm"))
            .args(["store", "list", "--store", store.to_str().unwrap()])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&list.stdout);
        assert!(
            list.status.success() && listed.contains("1 task(s)"),
            "{listed}"
        );
        assert!(!listed.contains("<land1>"), "{listed}");

        // Once there is room again, the same save goes through.
        let again = train(&store, &lands, "<land1>", "land", None);
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(TaskStore::open(&store).unwrap().tasks().len(), 2);
    }
}

/// The library side of the same guarantee: when the commit of `add_task` fails (here R2's
/// state cannot replace a folder squatting on its name), the `TaskStore` object still
/// describes the store on disk, R2's state included, so the caller can retry with it.
#[test]
fn a_failed_commit_leaves_the_store_object_usable() {
    let dir = tempfile::tempdir().unwrap();
    let kings = dir.path().join("kings");
    write_images(&kings, [220, 20, 20]);
    let root = dir.path().join("store");
    let first = train(&root, &kings, "<king1>", "king", None);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let device = Default::default();
    let reader = TaskStore::open(&root).unwrap();
    let mut learner = reader.load_learner::<Flex>(1, &device).unwrap();
    learner.words = vec!["<king2>".into()];
    let manifest = reader.task_manifest(1).unwrap();
    let mut subspace = reader
        .load_subspace::<Flex>(&device)
        .unwrap()
        .expect("R2 state");
    subspace.add_task(9);
    let (base, method) = (reader.manifest().base.clone(), reader.method());
    drop(reader);

    let mut store = TaskStore::open_for_writing(&root, &base, method).unwrap();
    let before = store.manifest().clone();
    let blocker = root.join("r2-002.safetensors");
    std::fs::create_dir_all(blocker.join("occupied")).unwrap();
    let err = store
        .add_task(&learner, Some(&subspace), manifest.clone())
        .unwrap_err();
    assert!(err.to_string().contains("r2-002.safetensors"), "{err}");
    assert_eq!(store.manifest(), &before);
    assert_eq!(entries(&root.join("tasks")), ["task-001"]);

    std::fs::remove_dir_all(&blocker).unwrap();
    store.add_task(&learner, Some(&subspace), manifest).unwrap();
    drop(store);
    let reopened = TaskStore::open(&root).unwrap();
    assert_eq!(reopened.tasks().len(), 2);
    assert_eq!(
        reopened.manifest().subspace.as_deref(),
        Some("r2-002.safetensors")
    );
    assert_eq!(
        reopened
            .load_subspace::<Flex>(&device)
            .unwrap()
            .unwrap()
            .tasks(),
        2
    );
    assert!(
        !root.join("r2-001.safetensors").exists(),
        "the old R2 state is removed"
    );
}
