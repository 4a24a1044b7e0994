//! Writing files so that nothing the user made is lost: every write goes to a temporary file
//! beside the target, is flushed to disk, and replaces the target by an atomic rename. A crash
//! or a full disk leaves either the old file or the new one, never a torn one.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Atomically replaces `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself; directories cannot be fsynced on every platform.
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io(explain_full_disk(e)))
}

/// Spells out what ENOSPC, EFBIG and EDQUOT mean for the user (the OS says only "No space
/// left on device" or "File too large", which reads like a bug in a file the program made),
/// and that the previous file survived. Other errors keep the OS's words; the kind is kept.
fn explain_full_disk(e: std::io::Error) -> std::io::Error {
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded => {
            std::io::Error::new(
                e.kind(),
                format!(
                    "could not be written: the disk is full or the file is over the size or \
                     quota limit ({e}); the previous version of the file, if any, is unchanged"
                ),
            )
        }
        _ => e,
    }
}
