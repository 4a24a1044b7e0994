//! The store's JSON files: `store.json` (which tasks exist, in order, and for which base model
//! and method) and each task's `manifest.json` (everything about how it was trained). Both
//! are validated on reading, because a store may come from someone else: folder names must be
//! plain names inside the store, words must be printable.

use serde::{Deserialize, Serialize};

use super::fingerprint::BaseFingerprint;
use crate::error::{Error, Result};
use crate::method::Method;
use crate::training_config::TaskTrainingConfig;
use cidm_lora::LoraConfig;

/// The current version of the store layout.
pub const STORE_FORMAT: u32 = 1;
/// Longest concept or class word accepted.
pub const MAX_WORD_LEN: usize = 64;

/// `store.json`: the store's tasks in training order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreManifest {
    /// Layout version ([`STORE_FORMAT`]).
    pub format: u32,
    /// The base model every task was trained on.
    pub base: BaseFingerprint,
    /// The method of every task.
    pub method: Method,
    /// The tasks, in training order.
    pub tasks: Vec<TaskEntry>,
    /// File (in the store's root) holding R2's state after the last task, for methods with R2.
    pub subspace: Option<String>,
}

/// One task's line in `store.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    /// The task's number (1-based, never reused).
    pub index: usize,
    /// Its folder under `tasks/`.
    pub dir: String,
    /// Its concept words.
    pub words: Vec<String>,
}

/// A task's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskManifest {
    /// The task's number (1-based).
    pub index: usize,
    /// Concept words.
    pub words: Vec<String>,
    /// Class words, one per concept word.
    pub classes: Vec<String>,
    /// The method it was trained with.
    pub method: Method,
    /// Its LoRA's config (rank, alpha, targets, init seed).
    pub lora: LoraConfig,
    /// Token rows per word (cross-attention layers of the base UNet).
    pub layers: usize,
    /// Width of a token row (the text encoder's hidden size).
    pub hidden: usize,
    /// The base model.
    pub base: BaseFingerprint,
    /// The training config.
    pub training: TaskTrainingConfig,
    /// Steps trained.
    pub steps: usize,
    /// Mean denoising loss of the last steps, if recorded.
    pub final_loss: Option<f32>,
}

impl StoreManifest {
    /// Checks the format version, folder and file names, task numbers (increasing) and words.
    pub fn validate(&self) -> Result<()> {
        if self.format != STORE_FORMAT {
            return Err(Error::InvalidInput(format!(
                "store format {} is not supported (this version reads {STORE_FORMAT})",
                self.format
            )));
        }
        let mut last = 0;
        for task in &self.tasks {
            if task.index <= last {
                return Err(Error::InvalidInput(format!(
                    "task numbers must increase: {} after {last}",
                    task.index
                )));
            }
            last = task.index;
            check_name(&task.dir)?;
            task.words.iter().try_for_each(|w| check_word(w))?;
        }
        if let Some(file) = &self.subspace {
            check_name(file)?;
        }
        Ok(())
    }

    /// The next task's number.
    pub fn next_index(&self) -> usize {
        self.tasks.last().map_or(1, |t| t.index + 1)
    }
}

impl TaskManifest {
    /// Checks words, classes and sizes.
    pub fn validate(&self) -> Result<()> {
        if self.words.is_empty() || self.words.len() != self.classes.len() {
            return Err(Error::InvalidInput(format!(
                "task {}: {} concept words and {} class words",
                self.index,
                self.words.len(),
                self.classes.len()
            )));
        }
        self.words.iter().try_for_each(|w| check_word(w))?;
        self.classes.iter().try_for_each(|w| check_word(w))?;
        if self.layers == 0 || self.hidden == 0 {
            return Err(Error::InvalidInput(format!(
                "task {}: token rows of {} layers x {} values",
                self.index, self.layers, self.hidden
            )));
        }
        self.lora.validate()?;
        Ok(())
    }
}

/// A folder or file name inside the store: one plain component, ASCII letters, digits, `-`,
/// `_` and `.`, not starting with `.`, so it can neither escape the store (`../`, `/`,
/// `C:\`) nor hide.
pub fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{name:?} is not a plain file name inside the store"
        )))
    }
}

/// A concept or class word: 1 to [`MAX_WORD_LEN`] characters, no whitespace, no control
/// characters (they would be invisible in listings and split by the tokenizer).
pub fn check_word(word: &str) -> Result<()> {
    let ok = !word.is_empty()
        && word.chars().count() <= MAX_WORD_LEN
        && !word.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{word:?} is not a usable word: 1 to {MAX_WORD_LEN} characters without spaces or \
             control characters"
        )))
    }
}
