//! A task learner's tensors on disk: its LoRA factors in the core layout
//! (`lora.<module path>.down|up`) and its token rows (`tokens`, `[words, layers, hidden]`),
//! with the words in the metadata. The manifest beside it says how to read it.

use std::path::Path;

use burn::tensor::backend::Backend;
use cidm_lora::tensor_file::{self, RawFile};

use super::manifest::TaskManifest;
use crate::checkpoint::{corrupt, insert_adapter, raw, take_adapter, take_tensor, tensor};
use crate::error::Result;
use crate::learner::TaskLearner;

const WORDS_KEY: &str = "cidm.words";

/// Writes `learner` to `path` atomically.
pub(crate) fn write<B: Backend>(path: &Path, learner: &TaskLearner<B>) -> Result<()> {
    let mut file = RawFile::default();
    insert_adapter(&mut file, &learner.adapter)?;
    file.tensors.insert("tokens".into(), raw(&learner.tokens)?);
    file.metadata
        .insert(WORDS_KEY.into(), learner.words.join(" "));
    tensor_file::write(path, &file)?;
    Ok(())
}

/// Reads the learner `manifest` describes from `path`, checking the token rows' shape and
/// that no tensor is left over.
pub(crate) fn read<B: Backend>(
    path: &Path,
    manifest: &TaskManifest,
    device: &B::Device,
) -> Result<TaskLearner<B>> {
    let mut file = tensor_file::read(path)?;
    let adapter = take_adapter(path, &mut file.tensors, manifest.lora.clone(), device)?;
    let tokens = tensor::<B, 3>(
        path,
        take_tensor(path, &mut file.tensors, "tokens")?,
        device,
    )?;
    let expected = [manifest.words.len(), manifest.layers, manifest.hidden];
    if tokens.dims() != expected {
        return Err(corrupt(
            path,
            format!(
                "token rows {:?}, the manifest says {expected:?}",
                tokens.dims()
            ),
        ));
    }
    if let Some(extra) = file.tensors.keys().next() {
        return Err(corrupt(path, format!("unexpected tensor {extra:?}")));
    }
    Ok(TaskLearner {
        words: manifest.words.clone(),
        classes: manifest.classes.clone(),
        adapter,
        tokens,
    })
}

/// Writes one `[layers, hidden]` tensor per concept word, named by the word: the export
/// format, readable without this crate.
pub(crate) fn write_tokens_by_word<B: Backend>(
    path: &Path,
    learner: &TaskLearner<B>,
) -> Result<()> {
    let [words, layers, hidden] = learner.tokens.dims();
    let mut file = RawFile::default();
    for (w, word) in learner.words.iter().enumerate().take(words) {
        let rows = learner
            .tokens
            .clone()
            .slice([w..w + 1, 0..layers, 0..hidden])
            .reshape([layers, hidden]);
        file.tensors.insert(word.clone(), raw(&rows)?);
    }
    tensor_file::write(path, &file)?;
    Ok(())
}
