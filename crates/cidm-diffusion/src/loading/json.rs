//! Reading text and JSON files with errors that name the file.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The whole file as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The file parsed as JSON into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_str(&read_text(path)?).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
