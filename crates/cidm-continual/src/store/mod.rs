//! The task learner store: a directory holding every trained task of one concept stream.
//!
//! ```text
//! store.json                    which tasks exist, in order; base model; method (the commit point)
//! tasks/task-001/manifest.json  how task 1 was trained (words, classes, rank, targets, config)
//! tasks/task-001/learner.safetensors  its LoRA factors and layer-wise token rows
//! r2-001.safetensors            R2's state after the last task (methods with R2)
//! training/<words>.ckpt.safetensors  the checkpoint of a training in progress
//! .lock                         held (advisory lock) by the process that writes
//! ```
//!
//! Nothing the user made is lost: a task is written into a temporary folder that is renamed
//! into place, then `store.json` is replaced atomically; a crash at any point leaves either
//! the old store or the new one. Writers take an exclusive lock on `.lock` (released by the
//! operating system if the process dies), so two processes adding tasks at once cannot
//! interleave: the second gets [`Error::StoreLocked`].

mod fingerprint;
mod learner_file;
mod manifest;

use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

pub use fingerprint::BaseFingerprint;
pub use manifest::{
    check_name, check_word, StoreManifest, TaskEntry, TaskManifest, MAX_WORD_LEN, STORE_FORMAT,
};

use crate::checkpoint::{read_subspace, write_subspace};
use crate::common_subspace::CommonSubspace;
use crate::error::{Error, Result};
use crate::learner::TaskLearner;
use crate::method::Method;
use cidm_diffusion::io::write_atomic;

const STORE_JSON: &str = "store.json";
const TASKS: &str = "tasks";
const TRAINING: &str = "training";
const LOCK: &str = ".lock";
const MANIFEST_JSON: &str = "manifest.json";
const LEARNER_FILE: &str = "learner.safetensors";

/// An opened task store. Opened with [`TaskStore::open`] it only reads; opened with
/// [`TaskStore::open_for_writing`] it holds the store's lock until dropped.
#[derive(Debug)]
pub struct TaskStore {
    root: PathBuf,
    manifest: StoreManifest,
    lock: Option<File>,
}

impl TaskStore {
    /// Opens an existing store to read it.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let manifest = read_manifest(&root)?;
        Ok(Self {
            root,
            manifest,
            lock: None,
        })
    }

    /// Opens the store at `root` to add or remove tasks, creating it if it does not exist.
    /// Takes the store's lock first ([`Error::StoreLocked`] if another process has it), then
    /// checks that the store was made for this base model ([`Error::BaseModelMismatch`]) and
    /// method ([`Error::MethodMismatch`]; an empty store takes the new method).
    pub fn open_for_writing(
        root: impl AsRef<Path>,
        base: &BaseFingerprint,
        method: Method,
    ) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(root.join(TASKS)).map_err(io(&root))?;
        let lock_path = root.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::StoreLocked(root)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let mut store = Self {
            manifest: if root.join(STORE_JSON).is_file() {
                read_manifest(&root)?
            } else {
                StoreManifest {
                    format: STORE_FORMAT,
                    base: base.clone(),
                    method,
                    tasks: Vec::new(),
                    subspace: None,
                }
            },
            root,
            lock: Some(lock),
        };
        store.check_base(base)?;
        if store.manifest.method != method {
            if !store.manifest.tasks.is_empty() {
                return Err(Error::MethodMismatch {
                    store: store.manifest.method.to_string(),
                    requested: method.to_string(),
                });
            }
            store.manifest.method = method;
            store.manifest.subspace = None;
        }
        store.write_manifest()?;
        Ok(store)
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `store.json` as read.
    pub fn manifest(&self) -> &StoreManifest {
        &self.manifest
    }

    /// The tasks, in training order.
    pub fn tasks(&self) -> &[TaskEntry] {
        &self.manifest.tasks
    }

    /// The method of the store's tasks.
    pub fn method(&self) -> Method {
        self.manifest.method
    }

    /// Errors unless the store was made for the model with fingerprint `base`.
    pub fn check_base(&self, base: &BaseFingerprint) -> Result<()> {
        if &self.manifest.base == base {
            Ok(())
        } else {
            Err(Error::BaseModelMismatch {
                expected: self.manifest.base.to_string(),
                found: base.to_string(),
            })
        }
    }

    /// Task `index`'s manifest.
    pub fn task_manifest(&self, index: usize) -> Result<TaskManifest> {
        let entry = self.entry(index)?;
        let path = self.task_dir(entry).join(MANIFEST_JSON);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let manifest: TaskManifest = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        manifest.validate()?;
        if manifest.index != index || manifest.words != entry.words {
            return Err(Error::Corrupt {
                path,
                reason: format!(
                    "the manifest describes task {} {:?}, store.json lists task {index} {:?}",
                    manifest.index, manifest.words, entry.words
                ),
            });
        }
        Ok(manifest)
    }

    /// Task `index`'s learner on `device`.
    pub fn load_learner<B: Backend>(
        &self,
        index: usize,
        device: &B::Device,
    ) -> Result<TaskLearner<B>> {
        let manifest = self.task_manifest(index)?;
        let path = self.task_dir(self.entry(index)?).join(LEARNER_FILE);
        learner_file::read(&path, &manifest, device)
    }

    /// Every task's learner, in training order.
    pub fn load_learners<B: Backend>(&self, device: &B::Device) -> Result<Vec<TaskLearner<B>>> {
        self.manifest
            .tasks
            .iter()
            .map(|t| self.load_learner(t.index, device))
            .collect()
    }

    /// R2's state after the last task, for methods with R2.
    pub fn load_subspace<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Option<CommonSubspace<B>>> {
        let Some(file) = &self.manifest.subspace else {
            return Ok(None);
        };
        let subspace = read_subspace(&self.root.join(file), device)?;
        if subspace.tasks() != self.manifest.tasks.len() {
            return Err(Error::Corrupt {
                path: self.root.join(file),
                reason: format!(
                    "R2's state has {} tasks, the store {}",
                    subspace.tasks(),
                    self.manifest.tasks.len()
                ),
            });
        }
        Ok(Some(subspace))
    }

    /// Where the checkpoint of a training of `words` lives (under `training/`, which
    /// [`crate::checkpoint::write_checkpoint`] creates when it first writes there; asking
    /// changes nothing on disk).
    pub fn checkpoint_path(&self, words: &[String]) -> PathBuf {
        let slug: String = words
            .join("-")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.root
            .join(TRAINING)
            .join(format!("{slug}.ckpt.safetensors"))
    }

    /// Adds a trained task: its learner and manifest into `tasks/task-NNN/`, R2's state after
    /// it, then `store.json`, in that order (see the module documentation). Errors when the
    /// store is not open for writing, a word is taken or the manifest does not fit the store.
    pub fn add_task<B: Backend>(
        &mut self,
        learner: &TaskLearner<B>,
        subspace: Option<&CommonSubspace<B>>,
        mut manifest: TaskManifest,
    ) -> Result<TaskManifest> {
        self.ensure_writable()?;
        manifest.index = self.manifest.next_index();
        manifest.base = self.manifest.base.clone();
        manifest.words = learner.words.clone();
        manifest.classes = learner.classes.clone();
        manifest.validate()?;
        if manifest.method != self.manifest.method {
            return Err(Error::MethodMismatch {
                store: self.manifest.method.to_string(),
                requested: manifest.method.to_string(),
            });
        }
        for word in &learner.words {
            if let Some(task) = self.manifest.tasks.iter().find(|t| t.words.contains(word)) {
                return Err(Error::WordTaken {
                    word: word.clone(),
                    task: task.index,
                });
            }
        }
        let dir = format!("task-{:03}", manifest.index);
        let tasks = self.root.join(TASKS);
        let staging = tasks.join(format!(".staging-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let written: Result<()> = (|| {
            learner_file::write(&staging.join(LEARNER_FILE), learner)?;
            write_json(&staging.join(MANIFEST_JSON), &manifest)?;
            sync_dir(&staging);
            let target = tasks.join(&dir);
            // A folder of the same name not listed in store.json is a crashed earlier attempt.
            if target.exists() {
                std::fs::remove_dir_all(&target).map_err(io(&target))?;
            }
            std::fs::rename(&staging, &target).map_err(io(&target))?;
            sync_dir(&tasks);
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        written?;

        // The commit: R2's new state, then `store.json`. The store object changes only once
        // `store.json` is written; if either write fails (a full disk), the new files go and
        // the object still describes the store on disk, so it can be used or retried.
        let mut next = self.manifest.clone();
        let new_subspace = subspace.map(|_| format!("r2-{:03}.safetensors", manifest.index));
        next.subspace = new_subspace.clone();
        next.tasks.push(TaskEntry {
            index: manifest.index,
            dir: dir.clone(),
            words: manifest.words.clone(),
        });
        let committed: Result<()> = (|| {
            if let (Some(subspace), Some(name)) = (subspace, &new_subspace) {
                write_subspace(&self.root.join(name), subspace)?;
            }
            next.validate()?;
            write_json(&self.root.join(STORE_JSON), &next)
        })();
        if let Err(e) = committed {
            if let Some(name) = new_subspace.filter(|n| self.manifest.subspace.as_ref() != Some(n))
            {
                let _ = std::fs::remove_file(self.root.join(name));
            }
            let _ = std::fs::remove_dir_all(tasks.join(&dir));
            return Err(e);
        }
        let old_subspace = std::mem::replace(&mut self.manifest, next).subspace;
        self.remove_stale_subspace(old_subspace);
        Ok(manifest)
    }

    /// Removes task `index`: its entry (and its transform in R2's state) leaves `store.json`
    /// first, then its folder is deleted. Task numbers are not reused. As in
    /// [`Self::add_task`], the store object changes only once `store.json` is written: if
    /// that write fails (a full disk), the new R2 file goes and the object still describes
    /// the store on disk.
    pub fn remove_task<B: Backend>(&mut self, index: usize, device: &B::Device) -> Result<()> {
        self.ensure_writable()?;
        let position = self
            .manifest
            .tasks
            .iter()
            .position(|t| t.index == index)
            .ok_or(Error::UnknownTask(index))?;
        let mut next = self.manifest.clone();
        let entry = next.tasks.remove(position);
        let mut new_subspace = None;
        let committed: Result<()> = (|| {
            if let Some(mut subspace) = self.load_subspace::<B>(device)? {
                subspace.remove_task(position)?;
                next.subspace = if subspace.tasks() == 0 {
                    None
                } else {
                    let name = format!(
                        "r2-{:03}-without-{index:03}.safetensors",
                        self.manifest.next_index() - 1
                    );
                    new_subspace = Some(name.clone());
                    write_subspace(&self.root.join(&name), &subspace)?;
                    Some(name)
                };
            }
            next.validate()?;
            write_json(&self.root.join(STORE_JSON), &next)
        })();
        if let Err(e) = committed {
            if let Some(name) = new_subspace.filter(|n| self.manifest.subspace.as_ref() != Some(n))
            {
                let _ = std::fs::remove_file(self.root.join(name));
            }
            return Err(e);
        }
        let old_subspace = std::mem::replace(&mut self.manifest, next).subspace;
        self.remove_stale_subspace(old_subspace);
        let dir = self.task_dir(&entry);
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        Ok(())
    }

    /// Exports task `index` to `out`: `<dir>.lora.safetensors` in the PEFT / diffusers format
    /// (loadable by diffusers' `load_lora_weights`), `<dir>.tokens.safetensors` with one
    /// `[layers, hidden]` tensor per concept word, and `<dir>.manifest.json`. Returns the
    /// three paths.
    pub fn export_task<B: Backend>(
        &self,
        index: usize,
        out: &Path,
        device: &B::Device,
    ) -> Result<Vec<PathBuf>> {
        let entry = self.entry(index)?;
        let manifest = self.task_manifest(index)?;
        let learner = self.load_learner::<B>(index, device)?;
        std::fs::create_dir_all(out).map_err(io(out))?;
        let lora = out.join(format!("{}.lora.safetensors", entry.dir));
        let tokens = out.join(format!("{}.tokens.safetensors", entry.dir));
        let json = out.join(format!("{}.manifest.json", entry.dir));
        learner.adapter.save(&lora)?;
        learner_file::write_tokens_by_word(&tokens, &learner)?;
        write_json(&json, &manifest)?;
        Ok(vec![lora, tokens, json])
    }

    fn entry(&self, index: usize) -> Result<&TaskEntry> {
        self.manifest
            .tasks
            .iter()
            .find(|t| t.index == index)
            .ok_or(Error::UnknownTask(index))
    }

    fn task_dir(&self, entry: &TaskEntry) -> PathBuf {
        self.root.join(TASKS).join(&entry.dir)
    }

    fn ensure_writable(&self) -> Result<()> {
        if self.lock.is_some() {
            Ok(())
        } else {
            Err(Error::InvalidInput(
                "the store was opened read-only; open it for writing to change it".into(),
            ))
        }
    }

    fn write_manifest(&self) -> Result<()> {
        self.manifest.validate()?;
        write_json(&self.root.join(STORE_JSON), &self.manifest)
    }

    fn remove_stale_subspace(&self, old: Option<String>) {
        if let Some(old) = old {
            if self.manifest.subspace.as_deref() != Some(old.as_str()) {
                let _ = std::fs::remove_file(self.root.join(old));
            }
        }
    }
}

fn read_manifest(root: &Path) -> Result<StoreManifest> {
    let path = root.join(STORE_JSON);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let manifest: StoreManifest = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    manifest.validate().map_err(|e| Error::Corrupt {
        path,
        reason: e.to_string(),
    })?;
    Ok(manifest)
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidInput(format!("serialising {}: {e}", path.display())))?;
    text.push('\n');
    Ok(write_atomic(path, text.as_bytes())?)
}

/// Persists renames inside `dir` where the platform allows fsyncing a directory.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
