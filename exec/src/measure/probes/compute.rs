//! Compute probes on one GPU: cuBLASLt bf16 GEMM over LLaVA-1.5-7B's shapes, HBM bandwidth with
//! a copy kernel, and kernel launch overhead.

use crate::cuda::device::{self, DeviceBuffer, Event, Gpu, Stream};
use crate::cuda::gemm::{self, Lt};
use crate::cuda::kernels::{Kernel, Module, grid_for};
use crate::error::{Error, Result};
use crate::kargs;
use crate::measure::probes::link::time_events;
use crate::stats;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The probe kernels (`kernels/probe.cu`).
pub const PROBE_SRC: &str = include_str!("../../../../kernels/probe.cu");

/// One GEMM shape and where in the model it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmShape {
    pub phase: String,
    pub op: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

fn sh(phase: &str, op: &str, m: usize, n: usize, k: usize) -> GemmShape {
    GemmShape {
        phase: phase.into(),
        op: op.into(),
        m,
        n,
        k,
    }
}

/// LLaVA-1.5-7B's linear layers.
/// encoder (CLIP ViT-L/14-336, d 1024, MLP 4096, 577 tokens per image): qkv N=3072, out N=1024,
///   fc1 N=4096 (all K=1024), fc2 N=1024 K=4096; M = 577 · images.
/// prefill / decode (Vicuna-7B, d 4096, MLP 11008): qkv N=12288, o N=4096, gate+up N=22016
///   (all K=4096), down N=4096 K=11008; M = prompt tokens (prefill) or batch size (decode).
pub fn llava_shapes(
    encoder_images: &[usize],
    prefill_tokens: &[usize],
    decode_batches: &[usize],
) -> Vec<GemmShape> {
    let mut v = Vec::new();
    for &b in encoder_images {
        let m = 577 * b;
        v.push(sh("encode", "qkv", m, 3072, 1024));
        v.push(sh("encode", "out", m, 1024, 1024));
        v.push(sh("encode", "fc1", m, 4096, 1024));
        v.push(sh("encode", "fc2", m, 1024, 4096));
    }
    for (phase, ms) in [("prefill", prefill_tokens), ("decode", decode_batches)] {
        for &m in ms {
            v.push(sh(phase, "qkv", m, 12288, 4096));
            v.push(sh(phase, "o", m, 4096, 4096));
            v.push(sh(phase, "gate_up", m, 22016, 4096));
            v.push(sh(phase, "down", m, 4096, 11008));
        }
    }
    v
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmPoint {
    pub phase: String,
    pub op: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub time_us: f64,
    pub tflops: f64,
    /// minimum bytes (X, W read once, Y written once) / time
    pub gbs: f64,
    pub repeats: usize,
    /// which of cuBLASLt's heuristic candidates was fastest (0 = its first guess), of how many
    pub algo: (usize, usize),
}

/// The probe kernels of one GPU (or green context).
pub struct ProbeKernels {
    pub module: Module,
    pub empty: Kernel,
    pub copy: Kernel,
    pub fill_bf16: Kernel,
}

impl ProbeKernels {
    pub fn load(gpu: &Gpu) -> Result<ProbeKernels> {
        let module = Module::load(gpu, "probe.cu", PROBE_SRC)?;
        Ok(ProbeKernels {
            empty: module.function("empty_kernel")?,
            copy: module.function("copy_u4")?,
            fill_bf16: module.function("fill_bf16_uniform")?,
            module,
        })
    }

    pub fn fill_bf16(&self, buf: &DeviceBuffer, seed: u64, s: &Stream, sms: u32) -> Result<()> {
        let n = (buf.bytes / 2) as u64;
        let (p, scale) = (buf.ptr, 1.0f32);
        // SAFETY: fill_bf16_uniform(unsigned short* p, u64 n, u64 seed, float scale) over the whole
        // of `buf`, n = its bytes / 2; freeing `buf` (cuMemFree) waits for the device, so the
        // kernel never writes freed memory.
        unsafe {
            self.fill_bf16.launch(
                grid_for(n, 256, sms),
                256,
                s,
                &mut kargs![p, n, seed, scale],
            )
        }
    }
}

/// Operand sets for one GEMM shape, rotated so repeated runs don't hit in L2.
pub struct GemmBuffers {
    pub sets: Vec<(DeviceBuffer, DeviceBuffer, DeviceBuffer)>,
    pub workspace: DeviceBuffer,
}

pub const WORKSPACE: usize = 32 << 20;

impl GemmBuffers {
    pub fn new(
        gpu: &Gpu,
        pk: &ProbeKernels,
        s: &Stream,
        m: usize,
        n: usize,
        k: usize,
        sms: u32,
    ) -> Result<GemmBuffers> {
        let set_bytes = 2 * (m * k + n * k + m * n);
        // enough sets to cover 3× L2, at most 8 and at most 12 GiB in all
        let want = (3 * gpu.info.l2_bytes as usize)
            .div_ceil(set_bytes)
            .clamp(1, 8);
        let nsets = want.min(((12usize << 30) / set_bytes).max(1));
        let mut sets = Vec::new();
        for i in 0..nsets {
            let x = gpu.alloc(2 * m * k)?;
            let w = gpu.alloc(2 * n * k)?;
            let y = gpu.alloc(2 * m * n)?;
            pk.fill_bf16(&x, 1000 + 2 * i as u64, s, sms)?;
            pk.fill_bf16(&w, 1001 + 2 * i as u64, s, sms)?;
            y.memset_async(0xff, s)?; // poison: NaN in bf16
            sets.push((x, w, y));
        }
        let workspace = gpu.alloc(WORKSPACE)?;
        s.synchronize()?;
        Ok(GemmBuffers { sets, workspace })
    }
}

/// Time one GEMM shape on `s` (whose context must be current), median of repeats.
pub fn time_gemm(
    gpu: &Gpu,
    lt: &Lt,
    bufs: &GemmBuffers,
    s: &Stream,
    shape: &GemmShape,
) -> Result<GemmPoint> {
    let (m, n, k) = (shape.m, shape.n, shape.k);
    let mut plan = lt.plan(m, n, k, WORKSPACE, 8)?;
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let mut i = 0usize;
    let best = plan.choose_fastest(|plan| {
        let t = time_events(gpu, s, 2, 3, |_| {
            let (x, w, y) = &bufs.sets[i % bufs.sets.len()];
            i += 1;
            lt.run(plan, x.ptr, w.ptr, y.ptr, bufs.workspace.ptr, s)
        })?;
        Ok(stats::median(&t))
    })?;
    let mut run = |_: &Event| -> Result<()> {
        let (x, w, y) = &bufs.sets[i % bufs.sets.len()];
        i += 1;
        lt.run(&plan, x.ptr, w.ptr, y.ptr, bufs.workspace.ptr, s)
    };
    let reps = stats::repeats_for(best.0, 0.15, 10, 100);
    let t = time_events(gpu, s, 1, reps, &mut run)?;
    let med = stats::median(&t);
    let bytes = 2.0 * (m * k + n * k + m * n) as f64;
    Ok(GemmPoint {
        phase: shape.phase.clone(),
        op: shape.op.clone(),
        m,
        n,
        k,
        time_us: med * 1e6,
        tflops: flops / med / 1e12,
        gbs: bytes / med / 1e9,
        repeats: reps,
        algo: (best.1, plan.candidates()),
    })
}

/// Check the GEMM layout and numerics once against an f64 CPU reference (bf16 operands: the
/// relative error must be well under 1e-2).
pub fn check_gemm(gpu: &Gpu, lt: &Lt, pk: &ProbeKernels, s: &Stream) -> Result<f64> {
    let (m, n, k) = (96, 160, 512);
    let bufs = GemmBuffers::new(gpu, pk, s, m, n, k, gpu.info.sms)?;
    let plan = lt.plan(m, n, k, WORKSPACE, 1)?;
    let (x, w, y) = &bufs.sets[0];
    lt.run(&plan, x.ptr, w.ptr, y.ptr, bufs.workspace.ptr, s)?;
    s.synchronize()?;
    let fetch = |b: &DeviceBuffer| -> Result<Vec<u16>> {
        let mut v = vec![0u8; b.bytes];
        b.copy_to_host(&mut v)?;
        Ok(v.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    };
    let err = gemm::relative_error(&fetch(x)?, &fetch(w)?, &fetch(y)?, m, n, k);
    if err.is_nan() || err >= 1e-2 {
        return Err(Error::Check(format!(
            "cuBLASLt GEMM {m}x{n}x{k} relative error {err} vs f64 reference (want < 1e-2)"
        )));
    }
    Ok(err)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HbmResult {
    pub bytes_copied: u64,
    /// copy kernel, (read + write) / time
    pub kernel_gbs: f64,
    /// cuMemcpyDtoDAsync, (read + write) / time
    pub memcpy_gbs: f64,
    pub repeats: usize,
}

/// HBM bandwidth: copy `bytes` between two buffers; counts bytes read + written.
pub fn hbm_bandwidth(
    gpu: &Gpu,
    pk: &ProbeKernels,
    s: &Stream,
    bytes: usize,
    sms: u32,
) -> Result<HbmResult> {
    let src = gpu.alloc(bytes)?;
    let dst = gpu.alloc(bytes)?;
    src.memset_async(0x3c, s)?;
    dst.memset_async(0, s)?;
    let n = (bytes / 16) as u64;
    let (sp, dp) = (src.ptr, dst.ptr);
    let grid = grid_for(n, 256, sms);
    let reps = 20;
    let tk = time_events(gpu, s, 3, reps, |_| {
        // SAFETY: copy_u4(const uint4* src, uint4* dst, u64 n): src and dst each hold `bytes` =
        // 16·n bytes and outlive time_events, which synchronises.
        unsafe { pk.copy.launch(grid, 256, s, &mut kargs![sp, dp, n]) }
    })?;
    let tm = time_events(gpu, s, 3, reps, |_| {
        device::copy_dtod_async(dp, sp, bytes, s)
    })?;
    let moved = 2.0 * bytes as f64;
    Ok(HbmResult {
        bytes_copied: bytes as u64,
        kernel_gbs: moved / stats::median(&tk) / 1e9,
        memcpy_gbs: moved / stats::median(&tm) / 1e9,
        repeats: reps,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchResult {
    /// back-to-back empty kernels, host clock from the first launch to the end of the last,
    /// per kernel: what a stream of tiny operators costs when the host issues them (µs)
    pub per_launch_host_us: f64,
    /// the same, timed by device events: the GPU-side gap between kernels (µs)
    pub per_launch_device_us: f64,
    /// one launch + synchronize round trip, median (µs)
    pub round_trip_us: f64,
    pub launches: usize,
}

pub fn launch_overhead(gpu: &Gpu, pk: &ProbeKernels, s: &Stream) -> Result<LaunchResult> {
    let n = 5000;
    // SAFETY: empty_kernel takes no parameters.
    let launch = || unsafe { pk.empty.launch(1, 32, s, &mut []) };
    for _ in 0..100 {
        launch()?;
    }
    s.synchronize()?;
    let mut host = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            launch()?;
        }
        s.synchronize()?;
        host.push(t.elapsed().as_secs_f64() / n as f64);
    }
    let dev = time_events(gpu, s, 1, 5, |_| {
        for _ in 0..n {
            launch()?;
        }
        Ok(())
    })?;
    let mut rt = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        launch()?;
        s.synchronize()?;
        rt.push(t.elapsed().as_secs_f64());
    }
    Ok(LaunchResult {
        per_launch_host_us: stats::median(&host) * 1e6,
        per_launch_device_us: stats::median(&dev) / n as f64 * 1e6,
        round_trip_us: stats::median(&rt) * 1e6,
        launches: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_kernels_are_embedded() {
        for k in ["empty_kernel", "copy_u4", "fill_bf16_uniform"] {
            assert!(
                PROBE_SRC.contains(&format!("void {k}(")),
                "{k} missing from probe.cu"
            );
        }
    }

    #[test]
    fn llava_shapes_cover_the_three_phases() {
        let v = llava_shapes(&[1, 8], &[704, 2048], &[1, 64]);
        assert_eq!(v.len(), 4 * 6);
        assert!(
            v.iter()
                .any(|s| s.phase == "encode" && s.m == 577 * 8 && s.n == 3072 && s.k == 1024)
        );
        assert!(
            v.iter()
                .any(|s| s.phase == "prefill" && s.m == 2048 && s.n == 22016 && s.k == 4096)
        );
        assert!(
            v.iter()
                .any(|s| s.phase == "decode" && s.m == 1 && s.n == 4096 && s.k == 11008)
        );
    }
}
