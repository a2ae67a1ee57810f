//! Just enough NVML (loaded at run time, optional) to count a GPU's active NVLink links.
//! When NVML is absent the caller falls back to the driver's P2P attributes and to measurement.

use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

type InitFn = unsafe extern "C" fn() -> c_int;
type HandleByPciFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
type LinkStateFn = unsafe extern "C" fn(*mut c_void, c_uint, *mut c_int) -> c_int;

struct Nvml {
    _lib: libloading::Library,
    by_pci: HandleByPciFn,
    link_state: LinkStateFn,
}

fn nvml() -> Option<&'static Nvml> {
    static N: OnceLock<Option<Nvml>> = OnceLock::new();
    N.get_or_init(|| unsafe {
        let lib = libloading::Library::new("libnvidia-ml.so.1").ok()?;
        let init: InitFn = *lib.get::<InitFn>(b"nvmlInit_v2\0").ok()?;
        let by_pci: HandleByPciFn = *lib
            .get::<HandleByPciFn>(b"nvmlDeviceGetHandleByPciBusId_v2\0")
            .ok()?;
        let link_state: LinkStateFn =
            *lib.get::<LinkStateFn>(b"nvmlDeviceGetNvLinkState\0").ok()?;
        if init() != 0 {
            return None;
        }
        Some(Nvml {
            _lib: lib,
            by_pci,
            link_state,
        })
    })
    .as_ref()
}

/// Number of active NVLink links of the GPU at `pci_bus_id`, or None if NVML cannot say.
pub fn active_nvlinks(pci_bus_id: &str) -> Option<u32> {
    let n = nvml()?;
    let id = CString::new(pci_bus_id).ok()?;
    let mut h: *mut c_void = std::ptr::null_mut();
    // SAFETY: NVML initialised; pointers valid for the call.
    if unsafe { (n.by_pci)(id.as_ptr(), &mut h) } != 0 {
        return None;
    }
    let mut active = 0;
    for link in 0..18u32 {
        // NVML_NVLINK_MAX_LINKS = 18 on Hopper; links that don't exist return an error.
        let mut state: c_int = 0;
        if unsafe { (n.link_state)(h, link, &mut state) } == 0 && state == 1 {
            active += 1;
        }
    }
    Some(active)
}
