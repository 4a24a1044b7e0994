//! Reading tensors from safetensors files (one file, or shards listed by an index JSON), with
//! f16/bf16 widened to f32 and a record of which tensors were taken, so that a loader can report
//! tensors the model did not use.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::TensorData;
use memmap2::Mmap;
use safetensors::Dtype;

use super::json::read_json;
use super::safetensors_checks::{decode_f32, parse_safetensors};
use crate::error::{Error, Result};

/// Where one tensor lives: which mapped file, and the byte range of its data.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A read-only set of named tensors backed by memory-mapped safetensors files.
///
/// Headers are validated once when the files are opened (header length against the file size,
/// offsets, sizes, overlaps and shape overflow via the `safetensors` crate, repeated names
/// here); tensor data is copied out only when asked for, after its shape has been checked
/// against the model's, so opening an SD 1.5 UNet costs no memory beyond the mapping and no
/// allocation is ever sized by a header alone. A NaN or infinite weight fails
/// [`Self::read_f32`] with [`Error::NonFiniteWeight`].
#[derive(Debug)]
pub struct SafetensorsWeights {
    /// What errors name: the file, or the index file for sharded weights.
    path: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    entries: HashMap<String, Entry>,
    taken: Mutex<BTreeSet<String>>,
}

impl SafetensorsWeights {
    /// Opens one `.safetensors` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut weights = Self {
            path: path.clone(),
            files: Vec::new(),
            entries: HashMap::new(),
            taken: Mutex::new(BTreeSet::new()),
        };
        weights.add_file(&path)?;
        Ok(weights)
    }

    /// Opens sharded weights from a diffusers/transformers `*.safetensors.index.json` whose
    /// `weight_map` names the shard of every tensor; shards are looked up beside the index.
    pub fn open_sharded(index: impl AsRef<Path>) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let index = index.as_ref();
        let parsed: Index = read_json(index)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
        let mut weights = Self {
            path: index.to_path_buf(),
            files: Vec::new(),
            entries: HashMap::new(),
            taken: Mutex::new(BTreeSet::new()),
        };
        for shard in &shards {
            if shard.is_empty()
                || shard.contains('/')
                || shard.contains('\\')
                || shard.starts_with('.')
            {
                return Err(Error::config(
                    index,
                    format!("shard name `{shard}` is not a plain file name"),
                ));
            }
            weights.add_file(&dir.join(shard))?;
        }
        // An index that lies about where a tensor is would let a shard shadow another.
        let shard_index: HashMap<&String, usize> =
            shards.iter().enumerate().map(|(i, &s)| (s, i)).collect();
        for (tensor, shard) in &parsed.weight_map {
            let listed = shard_index[shard];
            if weights.entries.get(tensor).map(|e| e.file) != Some(listed) {
                return Err(Error::CorruptWeights {
                    path: index.to_path_buf(),
                    reason: format!("the index puts `{tensor}` in `{shard}`, which lacks it"),
                });
            }
        }
        Ok(weights)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private to this process; the usual caveat of
        // memory maps applies (another process truncating the file while it is mapped).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let parsed = parse_safetensors(&mmap, path)?;
        let base = mmap.as_ptr() as usize;
        let file_index = self.files.len();
        for (name, view) in parsed.iter() {
            let start = view.data().as_ptr() as usize - base;
            let entry = Entry {
                file: file_index,
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                start,
                end: start + view.data().len(),
            };
            if self.entries.insert(name.to_string(), entry).is_some() {
                return Err(Error::CorruptWeights {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}` appears in more than one shard"),
                });
            }
        }
        drop(parsed);
        self.files.push((path.to_path_buf(), mmap));
        Ok(())
    }

    /// The path errors refer to (the file, or the shard index).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of all stored tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The stored shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Reads `name` as f32 data after checking its shape, and marks it as used.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<TensorData> {
        let entry = self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        })?;
        let file_path = &self.files[entry.file].0;
        if entry.shape != expected {
            return Err(Error::ShapeMismatch {
                path: file_path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let bytes = &self.files[entry.file].1[entry.start..entry.end];
        let values = decode_f32(file_path, name, entry.dtype, bytes)?;
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Ok(TensorData::new(values, entry.shape.clone()))
    }

    /// Accepts a stored tensor the model deliberately does not read (a buffer such as CLIP's
    /// int64 `position_ids`), after checking its shape, so that [`Self::ensure_all_used`] does
    /// not report it. Returns whether it was present.
    pub fn skip(&self, name: &str, expected: &[usize]) -> Result<bool> {
        let Some(entry) = self.entries.get(name) else {
            return Ok(false);
        };
        if entry.shape != expected {
            return Err(Error::ShapeMismatch {
                path: self.files[entry.file].0.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Ok(true)
    }

    /// Fails with [`Error::UnusedTensors`] when some stored tensor was never read: the weights
    /// do not belong to the config the model was built from.
    pub fn ensure_all_used(&self) -> Result<()> {
        let taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let mut unused: Vec<&String> = self
            .entries
            .keys()
            .filter(|k| !taken.contains(*k))
            .collect();
        unused.sort_unstable();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(Error::UnusedTensors {
                path: self.path.clone(),
                count: unused.len(),
                first: (*first).clone(),
            }),
        }
    }
}
