//! Finding the CUDA libraries at run time.
//!
//! cudarc loads libcuda / libnvrtc / libcublasLt with `dlopen` by bare name and *panics* when it
//! cannot. We check first and turn absence into `Error::NoDriver`. Because the toolkit libraries
//! (NVRTC, cuBLASLt) often live outside the loader's path (in /usr/local/cuda/lib64 or in
//! PyTorch's pip wheels), we look for them in the usual places and `dlopen` them by full path with
//! RTLD_GLOBAL first: glibc then satisfies cudarc's later `dlopen("libnvrtc.so.13")` from the
//! already-loaded object by its soname.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Libraries we opened by path; kept open for the life of the process.
static OPENED: OnceLock<Mutex<Vec<libloading::os::unix::Library>>> = OnceLock::new();

/// Directories searched for CUDA toolkit libraries, in order. `HETSIM_CUDA_LIB_DIRS`
/// (colon-separated) comes first so a user can always point at the right place.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(v) = std::env::var("HETSIM_CUDA_LIB_DIRS") {
        dirs.extend(v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Ok(v) = std::env::var(var) {
            dirs.push(Path::new(&v).join("lib64"));
            dirs.push(Path::new(&v).join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    if let Ok(rd) = std::fs::read_dir("/usr/local") {
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cuda-"))
            })
            .collect();
        v.sort();
        v.reverse(); // newest first
        for p in v {
            dirs.push(p.join("lib64"));
            dirs.push(p.join("targets/x86_64-linux/lib"));
        }
    }
    dirs.push("/usr/local/nvidia/lib64".into());
    dirs.push("/usr/lib/x86_64-linux-gnu".into());
    // pip wheels (PyTorch's CUDA runtime): site-packages/nvidia/<pkg>/lib and nvidia/cu13/lib
    for site in python_site_dirs() {
        let nv = site.join("nvidia");
        if let Ok(rd) = std::fs::read_dir(&nv) {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path().join("lib")))
                .collect();
            v.sort();
            dirs.extend(v);
        }
    }
    dirs
}

fn python_site_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in ["/opt/torch/.venv/lib", "/usr/local/lib", "/usr/lib"] {
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                let p = e.path();
                if p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3"))
                {
                    out.push(p.join("site-packages"));
                    out.push(p.join("dist-packages"));
                }
            }
        }
    }
    out
}

/// Can the dynamic loader open `name` as it is (from LD_LIBRARY_PATH / ld.so.cache)?
fn loadable(name: &str) -> bool {
    // SAFETY: loading a CUDA library runs its initialisers, which is what using it requires anyway.
    unsafe { libloading::Library::new(name).is_ok() }
}

/// Find a file in the search dirs whose name starts with `prefix` (e.g. "libnvrtc.so.13").
fn find_file(prefix: &str) -> Option<PathBuf> {
    for d in search_dirs() {
        let exact = d.join(prefix);
        if exact.is_file() {
            return Some(exact);
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect();
            v.sort();
            if let Some(p) = v.pop() {
                return Some(p);
            }
        }
    }
    None
}

fn open_global(path: &Path) -> Result<()> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: see `loadable`.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| {
        Error::NoDriver(format!(
            "found {} but could not load it: {e}",
            path.display()
        ))
    })?;
    OPENED
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .expect("library list lock")
        .push(lib);
    Ok(())
}

/// Make sure library `soname` (e.g. "libnvrtc.so.13") can be opened by name. `companions` are
/// libraries it loads itself at run time from its own folder (NVRTC's builtins).
fn ensure(soname: &str, what: &str, companions: &[&str]) -> Result<()> {
    if loadable(soname) {
        return Ok(());
    }
    let path = find_file(soname).ok_or_else(|| {
        Error::NoDriver(format!(
            "{what} ({soname}) is neither on the loader path nor in any of: {}. \
             Set HETSIM_CUDA_LIB_DIRS to the folder that holds it.",
            search_dirs()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if let Some(dir) = path.parent() {
        for c in companions {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(c))
                    {
                        open_global(&p)?;
                        break;
                    }
                }
            }
        }
    }
    open_global(&path)?;
    if loadable(soname) {
        Ok(())
    } else {
        Err(Error::NoDriver(format!(
            "loaded {} but {soname} still does not resolve by name",
            path.display()
        )))
    }
}

/// The CUDA major version our bindings were generated for (cudarc feature cuda-13000).
pub const CUDA_MAJOR: u32 = 13;

/// The driver (libcuda.so.1). Checked before any driver call, so no cudarc panic can happen.
pub fn ensure_driver() -> Result<()> {
    static R: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    R.get_or_init(|| {
        // SAFETY: only probes whether the library can be opened.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return Ok(());
        }
        match ensure("libcuda.so.1", "the CUDA driver library", &[]) {
            Ok(()) if unsafe { cudarc::driver::sys::is_culib_present() } => Ok(()),
            Ok(()) => Err("libcuda.so.1 loaded but cudarc still cannot open libcuda".into()),
            Err(e) => Err(match e {
                Error::NoDriver(m) => m,
                other => other.to_string(),
            }),
        }
    })
    .clone()
    .map_err(Error::NoDriver)
}

/// NVRTC, for compiling kernels/*.cu at run time.
pub fn ensure_nvrtc() -> Result<()> {
    static R: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    R.get_or_init(|| {
        let soname = format!("libnvrtc.so.{CUDA_MAJOR}");
        ensure(&soname, "NVRTC", &["libnvrtc-builtins.so"]).map_err(|e| e.to_string())?;
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(format!("{soname} found but cudarc cannot open NVRTC"))
        }
    })
    .clone()
    .map_err(Error::NoDriver)
}

/// cuBLASLt, for the GEMM probes.
pub fn ensure_cublaslt() -> Result<()> {
    static R: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    R.get_or_init(|| {
        let soname = format!("libcublasLt.so.{CUDA_MAJOR}");
        ensure(&soname, "cuBLASLt", &[]).map_err(|e| e.to_string())?;
        if unsafe { cudarc::cublaslt::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(format!("{soname} found but cudarc cannot open cuBLASLt"))
        }
    })
    .clone()
    .map_err(Error::NoDriver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_dirs_honour_env_first() {
        // SAFETY: tests in this module do not read this variable concurrently elsewhere.
        unsafe { std::env::set_var("HETSIM_CUDA_LIB_DIRS", "/nonexistent/a:/nonexistent/b") };
        let d = search_dirs();
        assert_eq!(d[0], PathBuf::from("/nonexistent/a"));
        assert_eq!(d[1], PathBuf::from("/nonexistent/b"));
        unsafe { std::env::remove_var("HETSIM_CUDA_LIB_DIRS") };
    }

    #[test]
    fn missing_library_is_an_error_not_a_panic() {
        let e = ensure("libdefinitely-not-a-cuda-lib.so.99", "test lib", &[]).unwrap_err();
        assert!(matches!(e, Error::NoDriver(_)));
        assert!(e.to_string().starts_with("no CUDA driver found"));
    }
}
