//! Green contexts: a partition of one GPU's SMs that kernels, cuBLASLt calls and CUDA graphs on
//! its streams are confined to, with the GPU's whole memory shared with the primary context.
//! The project uses them to make a smaller GPU of the same architecture out of a large one
//! (`measure::probes::green` times kernels in them; the replay serves on two of them).
//!
//! Steps (driver API): the device's SM resource → `cuDevSmResourceSplitByCount` (one group of at
//! least `n` SMs, rounded up to the architecture's granularity, and what remains) →
//! `cuDevResourceGenerateDesc` → `cuGreenCtxCreate` → `cuCtxFromGreenCtx`, whose `CUcontext` is
//! used like a primary context: streams, modules and events made while it is current belong to
//! the partition. A green context may be current on one host thread at a time.

use crate::cuda::device::{Gpu, Stream, ck};
use crate::error::{Error, Result};
use cudarc::driver::sys::{
    self, CUcontext, CUdevResource, CUdevResourceDesc, CUdevResourceType, CUgreenCtx, CUstream,
};

/// SM granularity of this device: (total SMs, minimum partition, alignment).
pub fn sm_resource(gpu: &Gpu) -> Result<(CUdevResource, u32, u32, u32)> {
    crate::cuda::device::init()?;
    let mut res: CUdevResource = unsafe { std::mem::zeroed() };
    ck!(
        sys::cuDeviceGetDevResource(
            gpu.dev,
            &mut res,
            CUdevResourceType::CU_DEV_RESOURCE_TYPE_SM
        ),
        "cuDeviceGetDevResource(SM, GPU {})",
        gpu.ordinal
    )?;
    let sm = unsafe { res.__bindgen_anon_1.sm };
    Ok((
        res,
        sm.smCount,
        sm.minSmPartitionSize,
        sm.smCoscheduledAlignment,
    ))
}

pub struct GreenCtx {
    pub raw: CUgreenCtx,
    pub ctx: CUcontext,
    pub stream: Stream,
    pub sms: u32,
}

// SAFETY: a driver context and its streams may be used from any host thread, and a green
// context may be current on one host thread at a time. `GreenCtx` is neither `Sync` nor
// `Clone`, so after a move only the thread that owns it binds it (the interference probe runs a
// load on one partition from its own thread while the caller times the other).
unsafe impl Send for GreenCtx {}

impl GreenCtx {
    /// A green context with at least `min_sms` SMs (the driver rounds up).
    pub fn new(gpu: &Gpu, min_sms: u32) -> Result<GreenCtx> {
        GreenCtx::create(gpu, split_sms(gpu, min_sms)?.0)
    }

    /// The GPU split in two: a green context of at least `min_sms` SMs (the driver rounds up)
    /// and one of the SMs that remain.
    pub fn split(gpu: &Gpu, min_sms: u32) -> Result<(GreenCtx, GreenCtx)> {
        let (group, rest) = split_sms(gpu, min_sms)?;
        Ok((GreenCtx::create(gpu, group)?, GreenCtx::create(gpu, rest)?))
    }
}

/// The SM resource of `gpu` split into a group of at least `min_sms` and the remainder.
fn split_sms(gpu: &Gpu, min_sms: u32) -> Result<(CUdevResource, CUdevResource)> {
    let (input, total, _, _) = sm_resource(gpu)?;
    if min_sms == 0 || min_sms >= total {
        return Err(Error::Invalid(format!(
            "green context of {min_sms} SMs on a GPU with {total}: give 1 to {}",
            total - 1
        )));
    }
    gpu.bind()?; // the primary context should be active first (the driver's advice)
    let mut result: CUdevResource = unsafe { std::mem::zeroed() };
    let mut remaining: CUdevResource = unsafe { std::mem::zeroed() };
    let mut groups: u32 = 1;
    ck!(
        sys::cuDevSmResourceSplitByCount(
            &mut result,
            &mut groups,
            &input,
            &mut remaining,
            0,
            min_sms
        ),
        "cuDevSmResourceSplitByCount(min {min_sms} SMs of {total}, GPU {})",
        gpu.ordinal
    )?;
    if groups < 1 {
        return Err(Error::Invalid(format!(
            "cannot split {min_sms} SMs off GPU {}",
            gpu.ordinal
        )));
    }
    Ok((result, remaining))
}

impl GreenCtx {
    fn create(gpu: &Gpu, mut res: CUdevResource) -> Result<GreenCtx> {
        let sms = unsafe { res.__bindgen_anon_1.sm.smCount };
        let mut desc: CUdevResourceDesc = std::ptr::null_mut();
        ck!(
            sys::cuDevResourceGenerateDesc(&mut desc, &mut res, 1),
            "cuDevResourceGenerateDesc({sms} SMs)"
        )?;
        let mut raw: CUgreenCtx = std::ptr::null_mut();
        let flags = sys::CUgreenCtxCreate_flags::CU_GREEN_CTX_DEFAULT_STREAM as u32;
        ck!(
            sys::cuGreenCtxCreate(&mut raw, desc, gpu.dev, flags),
            "cuGreenCtxCreate({sms} SMs, GPU {})",
            gpu.ordinal
        )?;
        let mut ctx: CUcontext = std::ptr::null_mut();
        ck!(sys::cuCtxFromGreenCtx(&mut ctx, raw), "cuCtxFromGreenCtx")?;
        let mut s: CUstream = std::ptr::null_mut();
        let sflags = sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32;
        ck!(
            sys::cuGreenCtxStreamCreate(&mut s, raw, sflags, 0),
            "cuGreenCtxStreamCreate({sms} SMs)"
        )?;
        let stream = Stream {
            raw: s,
            ctx,
            gpu: gpu.ordinal,
        };
        Ok(GreenCtx {
            raw,
            ctx,
            stream,
            sms,
        })
    }

    pub fn bind(&self) -> Result<()> {
        ck!(
            sys::cuCtxSetCurrent(self.ctx),
            "cuCtxSetCurrent(green context, {} SMs)",
            self.sms
        )
    }

    /// `gpu` as seen from inside this partition: whatever is made through the view (streams,
    /// modules, buffers, an engine) runs on the partition's SMs. It must not outlive `self`.
    pub fn view(&self, gpu: &Gpu) -> Gpu {
        Gpu {
            ordinal: gpu.ordinal,
            dev: gpu.dev,
            ctx: self.ctx,
            info: gpu.info.clone(),
        }
    }
}

impl Drop for GreenCtx {
    fn drop(&mut self) {
        // the stream (a field) is destroyed after this body runs; destroy it first explicitly
        unsafe {
            sys::cuCtxSetCurrent(self.ctx);
            sys::cuStreamDestroy_v2(self.stream.raw);
            self.stream.raw = std::ptr::null_mut();
            sys::cuGreenCtxDestroy(self.raw);
        }
    }
}
