//! Green contexts as a probe: the same kernels timed on a partition of the GPU's SMs
//! (`cuda::green`), to see what a smaller GPU of the same architecture (fewer SMs, same HBM)
//! made of a large one runs at.

use crate::cuda::device::Gpu;
use crate::cuda::gemm::Lt;
use crate::cuda::green::GreenCtx;
use crate::error::Result;
use crate::measure::probes::compute::{self, GemmBuffers, GemmShape, ProbeKernels};
use serde::{Deserialize, Serialize};

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
        let gview = g.view(gpu);
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
