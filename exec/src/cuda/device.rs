//! The device layer: GPUs, contexts, streams, events, device and pinned host buffers.
//!
//! Built directly on the driver API (cudarc's `driver::sys`) so that every call can be checked
//! and named, and so that multi-GPU work (peer access, cross-device event waits, green contexts)
//! is explicit. Each GPU is used through its *primary* context; all primary contexts of a process
//! share one unified virtual address space, which is what lets `cuMemcpyPeerAsync` and
//! cross-context `cuMemcpyDtoDAsync` go straight over NVLink once peer access is enabled.
//! Primary contexts are retained for the life of the process and never released (the driver
//! tears them down at exit); this keeps buffer/stream drop order free of context lifetimes.

use crate::cuda::libs;
use crate::error::{Error, Result};
use cudarc::driver::sys::{self, CUcontext, CUdevice, CUdeviceptr, CUevent, CUresult, CUstream};
use serde::{Deserialize, Serialize};
use std::ffi::{CStr, c_void};
use std::sync::OnceLock;

/// Check one driver call; `what` names the call and its arguments for the error message.
pub fn check(res: CUresult, what: impl FnOnce() -> String) -> Result<()> {
    if res == CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut name: *const std::ffi::c_char = std::ptr::null();
    let mut msg: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: the driver is loaded (we only get here after a driver call) and returns static
    // strings.
    unsafe {
        sys::cuGetErrorName(res, &mut name);
        sys::cuGetErrorString(res, &mut msg);
    }
    let to_s = |p: *const std::ffi::c_char| {
        if p.is_null() {
            "?".to_string()
        } else {
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    Err(Error::Cuda {
        call: what(),
        code: res as i32,
        name: to_s(name),
        message: to_s(msg),
    })
}

/// Shorthand: `ck!(sys::cuFoo(a, b), "cuFoo({a})")`.
macro_rules! ck {
    ($call:expr, $($fmt:tt)+) => {
        $crate::cuda::device::check(unsafe { $call }, || format!($($fmt)+))
    };
}
pub(crate) use ck;

/// Initialise the driver once. Returns `Error::NoDriver` on a machine without CUDA.
pub fn init() -> Result<()> {
    static R: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    R.get_or_init(|| {
        libs::ensure_driver().map_err(|e| e.to_string())?;
        ck!(sys::cuInit(0), "cuInit(0)").map_err(|e| format!("no CUDA driver found: {e}"))
    })
    .clone()
    .map_err(|m| Error::NoDriver(m.trim_start_matches("no CUDA driver found: ").to_string()))
}

pub fn driver_version() -> Result<i32> {
    init()?;
    let mut v = 0;
    ck!(sys::cuDriverGetVersion(&mut v), "cuDriverGetVersion")?;
    Ok(v)
}

pub fn device_count() -> Result<usize> {
    init()?;
    let mut n = 0;
    ck!(sys::cuDeviceGetCount(&mut n), "cuDeviceGetCount")?;
    Ok(n as usize)
}

/// What we record about one GPU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub sms: u32,
    pub memory_bytes: u64,
    pub pci_bus_id: String,
    pub l2_bytes: u64,
    pub sm_clock_mhz: u32,
    pub mem_clock_mhz: u32,
    pub mem_bus_bits: u32,
}

/// One GPU and its primary context.
pub struct Gpu {
    pub ordinal: usize,
    pub dev: CUdevice,
    pub ctx: CUcontext,
    pub info: GpuInfo,
}

fn attr(dev: CUdevice, a: sys::CUdevice_attribute) -> Result<i32> {
    let mut v = 0;
    ck!(
        sys::cuDeviceGetAttribute(&mut v, a, dev),
        "cuDeviceGetAttribute({a:?}, dev {dev})"
    )?;
    Ok(v)
}

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Gpu> {
        init()?;
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::Invalid(format!(
                "GPU {ordinal} requested but this machine has {n} GPU(s)"
            )));
        }
        let mut dev: CUdevice = 0;
        ck!(
            sys::cuDeviceGet(&mut dev, ordinal as i32),
            "cuDeviceGet({ordinal})"
        )?;
        let mut ctx: CUcontext = std::ptr::null_mut();
        ck!(
            sys::cuDevicePrimaryCtxRetain(&mut ctx, dev),
            "cuDevicePrimaryCtxRetain(GPU {ordinal})"
        )?;
        let mut name = [0 as std::ffi::c_char; 256];
        ck!(
            sys::cuDeviceGetName(name.as_mut_ptr(), 256, dev),
            "cuDeviceGetName(GPU {ordinal})"
        )?;
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut mem = 0usize;
        ck!(
            sys::cuDeviceTotalMem_v2(&mut mem, dev),
            "cuDeviceTotalMem(GPU {ordinal})"
        )?;
        let mut bus = [0 as std::ffi::c_char; 64];
        ck!(
            sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), 64, dev),
            "cuDeviceGetPCIBusId(GPU {ordinal})"
        )?;
        let pci_bus_id = unsafe { CStr::from_ptr(bus.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        use sys::CUdevice_attribute::*;
        let info = GpuInfo {
            ordinal,
            name,
            compute_capability: (
                attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
            sms: attr(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
            memory_bytes: mem as u64,
            pci_bus_id,
            l2_bytes: attr(dev, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64,
            sm_clock_mhz: (attr(dev, CU_DEVICE_ATTRIBUTE_CLOCK_RATE)? / 1000) as u32,
            mem_clock_mhz: (attr(dev, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)? / 1000) as u32,
            mem_bus_bits: attr(dev, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)? as u32,
        };
        Ok(Gpu {
            ordinal,
            dev,
            ctx,
            info,
        })
    }

    /// Make this GPU's primary context current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        ck!(
            sys::cuCtxSetCurrent(self.ctx),
            "cuCtxSetCurrent(GPU {})",
            self.ordinal
        )
    }

    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        ck!(
            sys::cuCtxSynchronize(),
            "cuCtxSynchronize(GPU {})",
            self.ordinal
        )
    }

    pub fn free_memory(&self) -> Result<u64> {
        self.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        ck!(
            sys::cuMemGetInfo_v2(&mut free, &mut total),
            "cuMemGetInfo(GPU {})",
            self.ordinal
        )?;
        Ok(free as u64)
    }

    pub fn stream(&self) -> Result<Stream> {
        Stream::new(self.ctx, self.ordinal)
    }

    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        DeviceBuffer::new(self, bytes)
    }

    /// Enable this context's access to `peer`'s memory (one direction). Idempotent.
    pub fn enable_peer_access(&self, peer: &Gpu) -> Result<()> {
        self.bind()?;
        let r = unsafe { sys::cuCtxEnablePeerAccess(peer.ctx, 0) };
        if r == CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED {
            return Ok(());
        }
        check(r, || {
            format!(
                "cuCtxEnablePeerAccess(GPU {} -> GPU {})",
                self.ordinal, peer.ordinal
            )
        })
    }

    /// Disable it again (used to show what a copy costs without peer access). Idempotent.
    pub fn disable_peer_access(&self, peer: &Gpu) -> Result<()> {
        self.bind()?;
        let r = unsafe { sys::cuCtxDisablePeerAccess(peer.ctx) };
        if r == CUresult::CUDA_ERROR_PEER_ACCESS_NOT_ENABLED {
            return Ok(());
        }
        check(r, || {
            format!(
                "cuCtxDisablePeerAccess(GPU {} -> GPU {})",
                self.ordinal, peer.ordinal
            )
        })
    }
}

/// How two GPUs reach each other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerInfo {
    pub src: usize,
    pub dst: usize,
    /// cuDeviceCanAccessPeer
    pub can_access_peer: bool,
    /// CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED: true over NVLink, false over PCIe P2P.
    pub native_atomics: bool,
    /// CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK (lower is better; relative only).
    pub performance_rank: i32,
    /// Active NVLink links of (src, dst) from NVML, when NVML is loadable.
    pub nvlink_active_links: Option<(u32, u32)>,
    /// "nvlink" or "pcie", from the two facts above.
    pub kind: String,
}

pub fn peer_info(a: &Gpu, b: &Gpu) -> Result<PeerInfo> {
    let mut can = 0;
    ck!(
        sys::cuDeviceCanAccessPeer(&mut can, a.dev, b.dev),
        "cuDeviceCanAccessPeer({}, {})",
        a.ordinal,
        b.ordinal
    )?;
    let p2p = |at: sys::CUdevice_P2PAttribute| -> Result<i32> {
        let mut v = 0;
        ck!(
            sys::cuDeviceGetP2PAttribute(&mut v, at, a.dev, b.dev),
            "cuDeviceGetP2PAttribute({at:?}, {}, {})",
            a.ordinal,
            b.ordinal
        )?;
        Ok(v)
    };
    use sys::CUdevice_P2PAttribute::*;
    let native_atomics = p2p(CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED)? != 0;
    let performance_rank = p2p(CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK)?;
    let nvlink_active_links = match (
        crate::cuda::nvml::active_nvlinks(&a.info.pci_bus_id),
        crate::cuda::nvml::active_nvlinks(&b.info.pci_bus_id),
    ) {
        (Some(x), Some(y)) => Some((x, y)),
        _ => None,
    };
    let by_nvml = nvlink_active_links.map(|(x, y)| x > 0 && y > 0);
    let nvlink = can != 0 && (native_atomics || by_nvml == Some(true));
    Ok(PeerInfo {
        src: a.ordinal,
        dst: b.ordinal,
        can_access_peer: can != 0,
        native_atomics,
        performance_rank,
        nvlink_active_links,
        kind: if nvlink {
            "nvlink".into()
        } else {
            "pcie".into()
        },
    })
}

/// A stream in one context. Non-blocking: it never syncs with the legacy default stream.
pub struct Stream {
    pub raw: CUstream,
    pub ctx: CUcontext,
    pub gpu: usize,
}

impl Stream {
    /// Makes the stream's context (primary or green) current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        ck!(
            sys::cuCtxSetCurrent(self.ctx),
            "cuCtxSetCurrent(stream context, GPU {})",
            self.gpu
        )
    }

    pub(crate) fn new(ctx: CUcontext, gpu: usize) -> Result<Stream> {
        ck!(sys::cuCtxSetCurrent(ctx), "cuCtxSetCurrent(GPU {gpu})")?;
        let mut raw: CUstream = std::ptr::null_mut();
        let flags = sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32;
        ck!(
            sys::cuStreamCreate(&mut raw, flags),
            "cuStreamCreate(GPU {gpu})"
        )?;
        Ok(Stream { raw, ctx, gpu })
    }
    pub fn synchronize(&self) -> Result<()> {
        ck!(
            sys::cuStreamSynchronize(self.raw),
            "cuStreamSynchronize(GPU {})",
            self.gpu
        )
    }
    /// Make this stream wait for `ev` (which may belong to another GPU).
    pub fn wait(&self, ev: &Event) -> Result<()> {
        ck!(
            sys::cuStreamWaitEvent(self.raw, ev.raw, 0),
            "cuStreamWaitEvent(GPU {} waits on event of GPU {})",
            self.gpu,
            ev.gpu
        )
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        unsafe {
            sys::cuCtxSetCurrent(self.ctx);
            sys::cuStreamDestroy_v2(self.raw);
        }
    }
}

/// A CUDA event. Timing events measure; sync-only events are cheaper for ordering.
pub struct Event {
    pub raw: CUevent,
    pub ctx: CUcontext,
    pub gpu: usize,
}

impl Event {
    pub fn timing(gpu: &Gpu) -> Result<Event> {
        Self::with_flags(gpu, sys::CUevent_flags::CU_EVENT_DEFAULT as u32)
    }
    /// A timing event in the context of stream `s`.
    pub fn timing_on(s: &Stream) -> Result<Event> {
        ck!(
            sys::cuCtxSetCurrent(s.ctx),
            "cuCtxSetCurrent(GPU {})",
            s.gpu
        )?;
        let mut raw: CUevent = std::ptr::null_mut();
        ck!(
            sys::cuEventCreate(&mut raw, sys::CUevent_flags::CU_EVENT_DEFAULT as u32),
            "cuEventCreate(GPU {})",
            s.gpu
        )?;
        Ok(Event {
            raw,
            ctx: s.ctx,
            gpu: s.gpu,
        })
    }
    pub fn sync_only(gpu: &Gpu) -> Result<Event> {
        Self::with_flags(gpu, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
    }
    fn with_flags(gpu: &Gpu, flags: u32) -> Result<Event> {
        gpu.bind()?;
        let mut raw: CUevent = std::ptr::null_mut();
        ck!(
            sys::cuEventCreate(&mut raw, flags),
            "cuEventCreate(GPU {})",
            gpu.ordinal
        )?;
        Ok(Event {
            raw,
            ctx: gpu.ctx,
            gpu: gpu.ordinal,
        })
    }
    pub fn record(&self, s: &Stream) -> Result<()> {
        ck!(
            sys::cuEventRecord(self.raw, s.raw),
            "cuEventRecord(GPU {} on stream of GPU {})",
            self.gpu,
            s.gpu
        )
    }
    pub fn synchronize(&self) -> Result<()> {
        ck!(
            sys::cuEventSynchronize(self.raw),
            "cuEventSynchronize(GPU {})",
            self.gpu
        )
    }
    /// Milliseconds from `self` to `end` (both recorded, same GPU); waits for `end`.
    pub fn elapsed_ms(&self, end: &Event) -> Result<f64> {
        end.synchronize()?;
        let mut ms = 0f32;
        ck!(
            sys::cuEventElapsedTime_v2(&mut ms, self.raw, end.raw),
            "cuEventElapsedTime(GPU {})",
            self.gpu
        )?;
        Ok(ms as f64)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        unsafe {
            sys::cuCtxSetCurrent(self.ctx);
            sys::cuEventDestroy_v2(self.raw);
        }
    }
}

/// Device memory on one GPU (cuMemAlloc: plain allocations, never managed memory).
pub struct DeviceBuffer {
    pub ptr: CUdeviceptr,
    pub bytes: usize,
    pub ctx: CUcontext,
    pub gpu: usize,
}

/// cuMemAlloc calls so far in this process. The replay's step log reads it around each step: an
/// allocation while serving (a scratch buffer growing for a batch larger than any before) costs
/// the step milliseconds that no phase table measured.
static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Device allocations made so far by this process (all GPUs).
pub fn allocations_so_far() -> u64 {
    ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

impl DeviceBuffer {
    pub fn new(gpu: &Gpu, bytes: usize) -> Result<DeviceBuffer> {
        gpu.bind()?;
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut ptr: CUdeviceptr = 0;
        ck!(
            sys::cuMemAlloc_v2(&mut ptr, bytes.max(1)),
            "cuMemAlloc({bytes} bytes on GPU {})",
            gpu.ordinal
        )?;
        Ok(DeviceBuffer {
            ptr,
            bytes,
            ctx: gpu.ctx,
            gpu: gpu.ordinal,
        })
    }
    /// Byte fill on `s` (used to poison destinations before a run).
    pub fn memset_async(&self, byte: u8, s: &Stream) -> Result<()> {
        ck!(
            sys::cuMemsetD8Async(self.ptr, byte, self.bytes, s.raw),
            "cuMemsetD8Async({} bytes on GPU {})",
            self.bytes,
            self.gpu
        )
    }
    pub fn copy_from_host(&self, src: &[u8]) -> Result<()> {
        if src.len() > self.bytes {
            return Err(Error::Invalid(format!(
                "host slice of {} bytes into buffer of {}",
                src.len(),
                self.bytes
            )));
        }
        ck!(
            sys::cuCtxSetCurrent(self.ctx),
            "cuCtxSetCurrent(GPU {})",
            self.gpu
        )?;
        ck!(
            sys::cuMemcpyHtoD_v2(self.ptr, src.as_ptr() as *const c_void, src.len()),
            "cuMemcpyHtoD({} bytes to GPU {})",
            src.len(),
            self.gpu
        )
    }
    pub fn copy_to_host(&self, dst: &mut [u8]) -> Result<()> {
        let n = dst.len().min(self.bytes);
        ck!(
            sys::cuCtxSetCurrent(self.ctx),
            "cuCtxSetCurrent(GPU {})",
            self.gpu
        )?;
        ck!(
            sys::cuMemcpyDtoH_v2(dst.as_mut_ptr() as *mut c_void, self.ptr, n),
            "cuMemcpyDtoH({n} bytes from GPU {})",
            self.gpu
        )
    }
    pub fn read_u64(&self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.copy_to_host(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        unsafe {
            sys::cuCtxSetCurrent(self.ctx);
            sys::cuMemFree_v2(self.ptr);
        }
    }
}

/// Page-locked host memory, portable (usable from every context), for DMA at full PCIe speed.
pub struct PinnedBuffer {
    pub ptr: *mut c_void,
    pub bytes: usize,
}

impl PinnedBuffer {
    pub fn new(gpu: &Gpu, bytes: usize) -> Result<PinnedBuffer> {
        gpu.bind()?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let flags = sys::CU_MEMHOSTALLOC_PORTABLE;
        ck!(
            sys::cuMemHostAlloc(&mut ptr, bytes.max(1), flags),
            "cuMemHostAlloc({bytes} bytes, portable)"
        )?;
        Ok(PinnedBuffer { ptr, bytes })
    }
    /// Address of byte `off`.
    pub fn at(&self, off: usize) -> *mut c_void {
        debug_assert!(off <= self.bytes);
        unsafe { (self.ptr as *mut u8).add(off) as *mut c_void }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        unsafe {
            sys::cuMemFreeHost(self.ptr);
        }
    }
}

fn check_host_range(h: &PinnedBuffer, off: usize, bytes: usize) -> Result<()> {
    if off.checked_add(bytes).is_none_or(|end| end > h.bytes) {
        return Err(Error::Invalid(format!(
            "host range {off}+{bytes} outside pinned buffer of {}",
            h.bytes
        )));
    }
    Ok(())
}

/// Async copy of `bytes` from device address `src` into pinned `dst` at byte `off`.
pub fn copy_dtoh_async(
    dst: &PinnedBuffer,
    off: usize,
    src: CUdeviceptr,
    bytes: usize,
    s: &Stream,
) -> Result<()> {
    check_host_range(dst, off, bytes)?;
    ck!(
        sys::cuMemcpyDtoHAsync_v2(dst.at(off), src, bytes, s.raw),
        "cuMemcpyDtoHAsync({bytes} bytes from GPU {})",
        s.gpu
    )
}

/// Async copy of `bytes` from pinned `src` at byte `off` to device address `dst`.
pub fn copy_htod_async(
    dst: CUdeviceptr,
    src: &PinnedBuffer,
    off: usize,
    bytes: usize,
    s: &Stream,
) -> Result<()> {
    check_host_range(src, off, bytes)?;
    ck!(
        sys::cuMemcpyHtoDAsync_v2(dst, src.at(off), bytes, s.raw),
        "cuMemcpyHtoDAsync({bytes} bytes to GPU {})",
        s.gpu
    )
}

pub fn copy_dtod_async(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, s: &Stream) -> Result<()> {
    ck!(
        sys::cuMemcpyDtoDAsync_v2(dst, src, bytes, s.raw),
        "cuMemcpyDtoDAsync({bytes} bytes on stream of GPU {})",
        s.gpu
    )
}
/// A copy between buffers of one GPU (of any of its contexts, green ones included: they share
/// its memory), on `s`, whose context the caller has made current.
pub fn copy_async(dst: &DeviceBuffer, src: &DeviceBuffer, bytes: usize, s: &Stream) -> Result<()> {
    ck!(
        sys::cuMemcpyDtoDAsync_v2(dst.ptr, src.ptr, bytes, s.raw),
        "cuMemcpyDtoDAsync({bytes} bytes on GPU {})",
        src.gpu
    )
}

pub fn copy_peer_async(
    dst: &DeviceBuffer,
    src: &DeviceBuffer,
    bytes: usize,
    s: &Stream,
) -> Result<()> {
    ck!(
        sys::cuMemcpyPeerAsync(dst.ptr, dst.ctx, src.ptr, src.ctx, bytes, s.raw),
        "cuMemcpyPeerAsync({bytes} bytes GPU {} -> GPU {})",
        src.gpu,
        dst.gpu
    )
}
