//! Reading the user's files with bounded work: regular files only (a FIFO would block forever,
//! `/dev/zero` would never end) and at most a size cap, so a wrong path costs an error, not the
//! machine's memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::InputError;

/// Experiments, plans, profiles and model configs: text files a person writes or a tool emits.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Trace files: the public Azure and Splitwise traces are tens of MiB.
pub const MAX_TRACE_BYTES: u64 = 256 << 20;
/// Parquet tables hetsim wrote and reads back (`hetsim sweep merge`): a million-row sweep is
/// about 200 MiB.
pub const MAX_TABLE_BYTES: u64 = 4 << 30;

/// Opens `path` (a `what`: "experiment", "trace", …) if it is a regular file of at most `cap`
/// bytes; the returned reader stops at `cap` even if the file grows meanwhile.
pub fn open(path: &Path, what: &str, cap: u64) -> Result<std::io::Take<File>, InputError> {
    let fail =
        |e: std::io::Error| InputError::new(format!("cannot read {what} {}: {e}", path.display()));
    // Asked before opening: opening a FIFO blocks until something writes to it.
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_file() {
        return Err(InputError::new(format!(
            "{what} {} is not a regular file (a directory, FIFO or device): give the path of a file",
            path.display()
        )));
    }
    if meta.len() > cap {
        return Err(InputError::new(format!(
            "{what} {} is {} MiB: allowed at most {} MiB",
            path.display(),
            meta.len().div_ceil(1 << 20),
            cap >> 20
        )));
    }
    Ok(File::open(path).map_err(fail)?.take(cap))
}

/// The whole of a config-sized text file.
pub fn read_text(path: &Path, what: &str) -> Result<String, InputError> {
    let mut text = String::new();
    open(path, what, MAX_CONFIG_BYTES)?
        .read_to_string(&mut text)
        .map_err(|e| InputError::new(format!("cannot read {what} {}: {e}", path.display())))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_large_files_are_refused() {
        let e = read_text(Path::new("/dev/zero"), "experiment").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_text(dir.path(), "profile").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let big = dir.path().join("big.yaml");
        File::create(&big)
            .unwrap()
            .set_len(MAX_CONFIG_BYTES + 1)
            .unwrap();
        let e = read_text(&big, "experiment").unwrap_err().to_string();
        assert!(e.contains("17 MiB: allowed at most 16 MiB"), "{e}");
        let e = read_text(&dir.path().join("none.yaml"), "plan").unwrap_err();
        assert!(e.to_string().starts_with("cannot read plan"), "{e}");
    }
}
