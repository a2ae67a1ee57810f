//! Green contexts: run the same kernels on a partition of the GPU's SMs, to emulate a smaller GPU
//! of the same architecture (fewer SMs, same HBM) on a large one.
//!
//! Steps (driver API): the device's SM resource → `cuDevSmResourceSplitByCount` (one group of at
//! least `n` SMs, rounded up to the architecture's granularity) → `cuDevResourceGenerateDesc` →
//! `cuGreenCtxCreate` → a stream in it. Green contexts share the primary context's memory; kernels
//! and cuBLASLt calls on that stream only use the partition's SMs.

use crate::cuda::device::{Gpu, Stream, ck};
use crate::cuda::gemm::Lt;
use crate::error::{Error, Result};
use crate::measure::probes::compute::{self, GemmBuffers, GemmShape, ProbeKernels};
use cudarc::driver::sys::{
    self, CUcontext, CUdevResource, CUdevResourceDesc, CUdevResourceType, CUgreenCtx, CUstream,
};
use serde::{Deserialize, Serialize};

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

impl GreenCtx {
    /// A green context with at least `min_sms` SMs (the driver rounds up).
    pub fn new(gpu: &Gpu, min_sms: u32) -> Result<GreenCtx> {
        let (input, total, _, _) = sm_resource(gpu)?;
        if min_sms == 0 || min_sms > total {
            return Err(Error::Invalid(format!(
                "green context of {min_sms} SMs on a GPU with {total}"
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
        let sms = unsafe { result.__bindgen_anon_1.sm.smCount };
        let mut desc: CUdevResourceDesc = std::ptr::null_mut();
        ck!(
            sys::cuDevResourceGenerateDesc(&mut desc, &mut result, 1),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreenPoint {
    pub requested_sms: u32,
    pub sms: u32,
    pub gemm: Vec<compute::GemmPoint>,
    pub hbm_gbs: f64,
}

/// Time `shapes` and the HBM copy kernel at each SM count (the full GPU through its primary
/// context is measured by the caller). Events and kernels run inside the green context.
pub fn sweep(
    gpu: &Gpu,
    lt: &Lt,
    sm_counts: &[u32],
    shapes: &[GemmShape],
    hbm_bytes: usize,
) -> Result<Vec<GreenPoint>> {
    let mut out = Vec::new();
    for &want in sm_counts {
        let g = GreenCtx::new(gpu, want)?;
        g.bind()?;
        // Events and the module are made while the green context is current, so the timing and
        // the kernels belong to it.
        let gview = Gpu {
            ordinal: gpu.ordinal,
            dev: gpu.dev,
            ctx: g.ctx,
            info: gpu.info.clone(),
        };
        let pk = ProbeKernels::load(&gview)?;
        let mut gemm = Vec::new();
        for shape in shapes {
            let bufs = GemmBuffers::new(&gview, &pk, &g.stream, shape.m, shape.n, shape.k, g.sms)?;
            gview.bind()?;
            gemm.push(compute::time_gemm(&gview, lt, &bufs, &g.stream, shape)?);
        }
        let hbm = compute::hbm_bandwidth(&gview, &pk, &g.stream, hbm_bytes, g.sms)?;
        out.push(GreenPoint {
            requested_sms: want,
            sms: g.sms,
            gemm,
            hbm_gbs: hbm.kernel_gbs,
        });
        drop(pk);
        gpu.bind()?;
    }
    Ok(out)
}
