//! Reading text and JSON files with errors that name the file, and with a size limit checked
//! before reading, so that a hostile path (a multi-gigabyte "config", `/dev/zero`) cannot make
//! a loader allocate without bound.

use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The largest text or JSON file any loader reads: 64 MiB. The largest such files of a model
/// directory are tokenizer files (CLIP's `tokenizer.json` is 3.6 MB, `vocab.json` 1 MB); the
/// configs are a few kB. serde_json's nesting limit (128) bounds the recursion.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// The whole file as UTF-8 text, if it holds at most [`MAX_TEXT_BYTES`].
pub fn read_text(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // `take` bounds the read even where the length the file system reports is wrong (pipes,
    // device files); the buffer grows only with bytes actually read.
    let mut text = String::new();
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_TEXT_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than the {MAX_TEXT_BYTES}-byte limit of text and JSON files"),
        )));
    }
    Ok(text)
}

/// The file parsed as JSON into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_str(&read_text(path)?).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
