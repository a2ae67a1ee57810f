//! A directory hetsim writes (`run --out`, `validate --out`, `analyze --out`) is complete or
//! absent. Its files are written into a staging directory beside it (`.NAME.staging-PID`), a
//! `manifest.json` listing them goes in last, and one rename puts the whole directory in place;
//! readers (`analyze`) refuse a directory without a manifest. A run killed at any moment leaves
//! only hidden `.NAME.staging-PID`, `.NAME.old-PID` or `.NAME.tmp-PID` entries, which the next
//! run writing beside them removes.
//!
//! Each staging directory and temporary file is locked (`flock`) by the process writing it for
//! as long as it lives: the sweep removes only entries whose lock it can take, so a concurrent
//! run's work in progress is never touched. The kernel drops the lock of a killed process.
//! (Unix only: directories are opened to lock them and entries compared by inode.)
//!
//! On SIGINT or SIGTERM the binary calls `abandon_all_and_exit`: every staging directory and
//! temporary file still registered here is removed before the process exits.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, InputError};

pub const MANIFEST: &str = "manifest.json";

/// What a published directory holds; its manifest says which, so `analyze` neither reads an
/// analysis as results nor replaces a result directory with an analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// The five result tables of `hetsim run` / `hetsim validate` (and validate's CSV files).
    Results,
    /// The tables and figures of `hetsim analyze`.
    Analysis,
}

impl Contents {
    pub fn format(self) -> &'static str {
        match self {
            Contents::Results => "hetsim-results/1",
            Contents::Analysis => "hetsim-analysis/1",
        }
    }
}

/// `manifest.json`: written last into a published directory; its presence means every file it
/// lists was written in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `hetsim-results/1` or `hetsim-analysis/1`.
    pub format: String,
    /// The hetsim version that wrote the directory.
    pub hetsim: String,
    /// The command line that wrote it.
    pub command: Vec<String>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub name: String,
    /// Rows of a result table; absent for other files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl Manifest {
    /// Reads `dir`'s manifest and checks that it is one of `contents` whose files all exist.
    pub fn read(dir: &Path, contents: Contents) -> Result<Manifest, InputError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::NotFound {
                "missing: not a complete hetsim result directory (an interrupted run, or one \
                 written by a hetsim older than manifests); write it again with `hetsim run --out`"
                    .to_string()
            } else {
                e.to_string()
            };
            InputError::new(format!("{}: {why}", path.display()))
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            InputError::new(format!("{}: not a hetsim manifest: {e}", path.display()))
        })?;
        if m.format != contents.format() {
            return Err(InputError::new(format!(
                "{}: format `{}`, expected `{}`",
                path.display(),
                m.format,
                contents.format()
            )));
        }
        if let Some(f) = m.files.iter().find(|f| !dir.join(&f.name).is_file()) {
            return Err(InputError::new(format!(
                "{}: lists {} but {} has no such file",
                path.display(),
                f.name,
                dir.display()
            )));
        }
        Ok(m)
    }
}

/// Staging directories and temporary files of this process not yet published: what a signal
/// handler removes. Publishing holds the lock across its renames, so a signal never removes a
/// directory half moved.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(p: &Path) {
    live().push(p.to_path_buf());
}

fn unregister(live: &mut Vec<PathBuf>, p: &Path) {
    live.retain(|q| q != p);
}

/// Removes every unpublished staging directory and temporary file of this process, then exits
/// with `code`. For the SIGINT/SIGTERM handler: the registry stays locked until exit, so no
/// publish starts meanwhile.
pub fn abandon_all_and_exit(code: i32) -> ! {
    let live = live();
    for p in live.iter() {
        remove_entry(p);
    }
    std::process::exit(code)
}

fn remove_entry(p: &Path) {
    // A writer may still be creating files inside: try again if the directory refilled.
    for _ in 0..3 {
        let gone = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        match gone {
            Err(e) if e.kind() != io::ErrorKind::NotFound => continue,
            _ => return,
        }
    }
}

pub(crate) fn out_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output(format!("{}: {e}", path.display()))
}

/// The parent directory and the file name of `target`.
fn split(target: &Path) -> Result<(PathBuf, String), Error> {
    let name = target
        .file_name()
        .ok_or_else(|| InputError::new(format!("{}: not a file name", target.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// The hidden name beside `NAME` that `role` (staging, old, tmp) of this process uses.
fn hidden(parent: &Path, name: &str, role: &str) -> PathBuf {
    parent.join(format!(".{name}.{role}-{}", std::process::id()))
}

/// Removes what killed runs left beside `name` in `parent`: staging directories, set-aside old
/// directories and temporary files whose lock no live process holds.
pub fn sweep(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefixes = ["staging", "old", "tmp"].map(|role| format!(".{name}.{role}-"));
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if !prefixes.iter().any(|p| file_name.starts_with(p.as_str())) {
            continue;
        }
        let path = entry.path();
        // Opening read-only works for files and directories alike; the lock is advisory.
        let Ok(handle) = File::open(&path) else {
            continue;
        };
        if handle.try_lock().is_ok() {
            remove_entry(&path);
        }
    }
}

/// Creates `path` with `make` and locks it. A concurrent sweep may take the lock between the
/// two and remove the entry; then the path no longer names what we locked, and we start over.
fn create_locked(path: &Path, make: impl Fn() -> io::Result<File>) -> io::Result<File> {
    for _ in 0..3 {
        let f = make()?;
        f.lock()?;
        if same_entry(&f, path) {
            return Ok(f);
        }
    }
    Err(io::Error::other(
        "removed three times by a concurrent sweep while being created",
    ))
}

fn same_entry(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Fsyncs a directory, so the renames in it survive a power cut.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| out_err(dir, e))
}

/// A directory being written under a staging name beside its target; `commit` publishes it whole,
/// dropping it unpublished removes it.
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    contents: Contents,
    files: Vec<ManifestFile>,
    // Held until the directory is published or removed: tells the sweep it is alive.
    _lock: File,
    published: bool,
}

impl StagedDir {
    /// Starts writing `target`: refuses one that holds something other than a previous result of
    /// the same kind (those it replaces), sweeps what killed runs left beside it and creates the
    /// staging directory.
    pub fn create(target: &Path, contents: Contents) -> Result<StagedDir, Error> {
        check_replaceable(target, contents)?;
        let (parent, name) = split(target)?;
        std::fs::create_dir_all(&parent).map_err(|e| out_err(&parent, e))?;
        sweep(&parent, &name);
        let staging = hidden(&parent, &name, "staging");
        let lock = create_locked(&staging, || {
            std::fs::create_dir(&staging)?;
            File::open(&staging)
        })
        .map_err(|e| out_err(target, e))?;
        register(&staging);
        Ok(StagedDir {
            target: target.to_path_buf(),
            staging,
            contents,
            files: Vec::new(),
            _lock: lock,
            published: false,
        })
    }

    /// Where files are written until `commit`.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Lists `name` (written into `path()` and flushed) in the manifest.
    pub fn record(&mut self, name: &str, rows: Option<u64>) {
        self.files.push(ManifestFile {
            name: name.to_string(),
            rows,
        });
    }

    /// Writes `bytes` as `name` into the staging directory and lists it.
    pub fn write(&mut self, name: &str, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
        let path = self.staging.join(name);
        let write = || -> io::Result<()> {
            use std::io::Write as _;
            let mut f = File::create(&path)?;
            f.write_all(bytes.as_ref())?;
            f.sync_all()
        };
        write().map_err(|e| out_err(&path, e))?;
        self.record(name, None);
        Ok(())
    }

    /// Writes the manifest, then puts the directory in place of the target (a previous result
    /// there is set aside and removed); returns the published files.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, Error> {
        let manifest = Manifest {
            format: self.contents.format().to_string(),
            hetsim: env!("CARGO_PKG_VERSION").to_string(),
            // Lossy: an argument that is not UTF-8 must not stop the run at its last step.
            command: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            files: self.files.clone(),
        };
        let json = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
        self.write(MANIFEST, json + "\n")?;
        sync_dir(&self.staging)?;
        let mut live = live();
        self.swap_in()?;
        unregister(&mut live, &self.staging);
        self.published = true;
        Ok(manifest
            .files
            .iter()
            .filter(|f| f.name != MANIFEST)
            .map(|f| self.target.join(&f.name))
            .collect())
    }

    fn swap_in(&self) -> Result<(), Error> {
        let (parent, name) = split(&self.target)?;
        // Checked again: the target may have appeared while we wrote.
        check_replaceable(&self.target, self.contents)?;
        let old = hidden(&parent, &name, "old");
        let had_old = match std::fs::rename(&self.target, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(out_err(&self.target, e)),
        };
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            // Another run's result landed meanwhile (or the rename failed): put the old one
            // back, or drop it if the place is taken.
            if had_old && std::fs::rename(&old, &self.target).is_err() {
                remove_entry(&old);
            }
            return Err(out_err(&self.target, e));
        }
        if had_old {
            // The new result is in place: what is left of the old one (a concurrent sweep may
            // be removing it too) is swept by the next run if this fails.
            remove_entry(&old);
        }
        sync_dir(&parent)
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.published {
            let mut live = live();
            remove_entry(&self.staging);
            unregister(&mut live, &self.staging);
        }
    }
}

/// A target may be replaced when it is absent, an empty directory, or a published directory of
/// the same kind; anything else is the user's and is refused.
fn check_replaceable(target: &Path, contents: Contents) -> Result<(), Error> {
    let Ok(meta) = std::fs::symlink_metadata(target) else {
        return Ok(());
    };
    let refuse = |why: &str| -> Result<(), Error> {
        Err(InputError::new(format!(
            "{}: {why}; hetsim replaces only an empty directory or one it wrote (with a {MANIFEST} \
             of {}): give a new directory",
            target.display(),
            contents.format()
        ))
        .into())
    };
    if !meta.is_dir() {
        return refuse("exists and is not a directory");
    }
    let empty = std::fs::read_dir(target)
        .map_err(|e| out_err(target, e))?
        .next()
        .is_none();
    if empty || Manifest::read(target, contents).is_ok() {
        return Ok(());
    }
    let other = std::fs::read_to_string(target.join(MANIFEST))
        .ok()
        .and_then(|t| serde_json::from_str::<Manifest>(&t).ok());
    match other {
        Some(m) => refuse(&format!(
            "holds another kind of hetsim output ({})",
            m.format
        )),
        None => refuse("exists and holds files hetsim did not write"),
    }
}

/// A file being written under a hidden temporary name beside its target (`.NAME.tmp-PID`),
/// locked while it lives; `publish` moves it into place, dropping it unpublished removes it.
pub struct PendingFile {
    tmp: PathBuf,
    path: PathBuf,
    // A second handle on the temporary file keeps the lock while the first is written and closed.
    _lock: File,
    published: bool,
}

impl PendingFile {
    pub fn create(path: &Path) -> Result<(PendingFile, File), Error> {
        let (parent, name) = split(path)?;
        sweep(&parent, &name);
        let tmp = hidden(&parent, &name, "tmp");
        let file = create_locked(&tmp, || {
            OpenOptions::new().write(true).create_new(true).open(&tmp)
        })
        .map_err(|e| out_err(path, e))?;
        let lock = file.try_clone().map_err(|e| out_err(path, e))?;
        register(&tmp);
        let pending = PendingFile {
            tmp,
            path: path.to_path_buf(),
            _lock: lock,
            published: false,
        };
        Ok((pending, file))
    }

    /// Where the file is while it is written, for error messages.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Flushes `file` (this pending file's handle) to disk, so the rename never exposes a file
    /// whose bytes are still only in the page cache.
    pub fn seal(&self, file: File) -> Result<(), Error> {
        file.sync_all().map_err(|e| out_err(&self.tmp, e))
    }

    /// Renames the sealed file into place.
    pub fn publish(mut self) -> Result<PathBuf, Error> {
        let mut live = live();
        std::fs::rename(&self.tmp, &self.path).map_err(|e| out_err(&self.path, e))?;
        unregister(&mut live, &self.tmp);
        self.published = true;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.published {
            let mut live = live();
            let _ = std::fs::remove_file(&self.tmp);
            unregister(&mut live, &self.tmp);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The entries of `dir`, sorted (shared with `output`'s tests).
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_directory_appears_whole_with_its_manifest_and_replaces_its_predecessor() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        let mut before = None;
        for text in ["first", "second"] {
            let mut d = StagedDir::create(&target, Contents::Results).unwrap();
            d.write("a.csv", text).unwrap();
            // Until the commit, the target is what it was.
            assert_eq!(std::fs::read_to_string(target.join("a.csv")).ok(), before);
            before = Some(text.to_string());
            assert_eq!(d.commit().unwrap(), [target.join("a.csv")]);
            assert_eq!(std::fs::read_to_string(target.join("a.csv")).unwrap(), text);
        }
        assert_eq!(names(root.path()), ["out"]);
        assert_eq!(names(&target), ["a.csv", "manifest.json"]);
        let m = Manifest::read(&target, Contents::Results).unwrap();
        assert_eq!(m.files.len(), 1);
        // Another kind of directory is neither read as this one nor replaced by it.
        let e = Manifest::read(&target, Contents::Analysis).unwrap_err();
        assert!(e.message().contains("expected `hetsim-analysis/1`"), "{e}");
        let e = StagedDir::create(&target, Contents::Analysis)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("(hetsim-results/1)"), "{e}");
    }

    #[test]
    fn a_directory_of_someone_elses_files_is_refused_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("notes.txt"), "mine").unwrap();
        let e = StagedDir::create(root.path(), Contents::Results)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Input(_)), "{e:?}");
        assert!(e.to_string().contains("hetsim did not write"), "{e}");
        assert_eq!(names(root.path()), ["notes.txt"]);
    }

    #[test]
    fn an_abandoned_directory_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        let mut d = StagedDir::create(&target, Contents::Results).unwrap();
        d.write("a.csv", "x").unwrap();
        drop(d);
        assert!(names(root.path()).is_empty());
    }

    #[test]
    fn the_sweep_removes_dead_leftovers_and_spares_live_ones() {
        let root = tempfile::tempdir().unwrap();
        // What a killed run leaves: unlocked staging, old and temporary entries.
        for dead in [".out.staging-1", ".out.old-2"] {
            std::fs::create_dir(root.path().join(dead)).unwrap();
            std::fs::write(root.path().join(dead).join("t.parquet"), "x").unwrap();
        }
        std::fs::write(root.path().join(".out.tmp-3"), "x").unwrap();
        // A live writer's staging directory (locked by this handle) and an unrelated file.
        let live = root.path().join(".out.staging-4");
        std::fs::create_dir(&live).unwrap();
        let held = File::open(&live).unwrap();
        held.lock().unwrap();
        std::fs::write(root.path().join(".other.tmp-5"), "x").unwrap();
        sweep(root.path(), "out");
        assert_eq!(names(root.path()), [".other.tmp-5", ".out.staging-4"]);
        drop(held);
        sweep(root.path(), "out");
        assert_eq!(names(root.path()), [".other.tmp-5"]);
    }

    #[test]
    fn atomic_write_leaves_the_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.md");
        crate::output::write_atomically(&p, "first").unwrap();
        crate::output::write_atomically(&p, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        assert_eq!(names(dir.path()), ["out.md"]);
        // A folder that does not exist: an output error naming the file, nothing written.
        let bad = dir.path().join("missing").join("out.md");
        let e = crate::output::write_atomically(&bad, "x").unwrap_err();
        assert!(matches!(e, Error::Output(_)), "{e:?}");
        assert!(e.to_string().contains("missing"), "{e}");
        assert_eq!(names(dir.path()), ["out.md"]);
    }
}
