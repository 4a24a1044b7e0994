//! `write_atomic` when the disk is full: the write fails with an error that names the file and
//! says why, the previous file is left byte for byte, and no temporary file is left beside it.
//!
//! A full disk is simulated with a file-size limit (`RLIMIT_FSIZE`), which fails a write past
//! the limit with EFBIG exactly where ENOSPC would fail it. The limit must hold in another
//! process (it applies to every thread of the process that sets it), so the test runs itself
//! again under `sh -c 'ulimit -f 8; ...'` with `SIGXFSZ` ignored (an ignored signal stays
//! ignored across `exec`), which turns the signal that would kill the process into an error
//! returned by `write`.

use std::path::Path;
use std::process::Command;

use cidm_diffusion::io::write_atomic;
use cidm_diffusion::Error;

/// Set in the re-run process: the folder to write into.
const CHILD_DIR: &str = "CIDM_FULL_DISK_TEST_DIR";
const TEST_NAME: &str = "a_write_past_the_file_size_limit_fails_clearly_and_keeps_the_old_file";
const OLD: &[u8] = b"the previous version";

/// Under the limit: 8 blocks, 4096 bytes in POSIX shells (512-byte blocks) or 8192 in bash.
fn write_under_the_limit(dir: &Path) {
    let target = dir.join("target.bin");
    // 64 KiB is past either reading of the limit, so the write fails part-way through.
    let err = write_atomic(&target, &vec![7u8; 64 * 1024]).unwrap_err();
    let message = err.to_string();
    match err {
        Error::Io { path, source } => {
            assert_eq!(path, target);
            assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(
        message.starts_with(&target.display().to_string())
            && message.contains("the disk is full or the file is over the size or quota limit")
            && message.contains("the previous version of the file, if any, is unchanged"),
        "{message}"
    );
    // The limit is on file size, not on writing: a small file still goes through.
    write_atomic(&dir.join("small.bin"), b"fits").unwrap();
}

#[test]
fn a_write_past_the_file_size_limit_fails_clearly_and_keeps_the_old_file() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        return write_under_the_limit(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("target.bin"), OLD).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -f 8 && trap '' XFSZ && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the limited run failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(dir.path().join("target.bin")).unwrap(), OLD);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["small.bin", "target.bin"],
        "temporary files were left"
    );
}
