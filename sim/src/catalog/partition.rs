//! SM partitions of one GPU as GPU types of their own: the smaller GPU a CUDA green context
//! makes of a large one (`exec`'s `GreenCtx`), named `<GPU>@<SMs>sm`, e.g. `H200-SXM@40sm`.
//!
//! A partition has its share of the SMs and so of the tensor and vector rate, and keeps the
//! whole GPU's memory system: HBM bandwidth, L2 and clocks are the parent's. That is what the
//! project's H200 measured (exec/REPORT.md, "Green contexts", 2026-11-21): GEMM throughput
//! scaled with the SMs, while a copy kernel on 40 of 132 SMs already moved 3568 GB/s, 92 % of
//! the whole GPU's 3881, and 98 % on 104 SMs; on 16 SMs it reached only 39 %. So a partition
//! must hold at least [`MIN_SHARE`] of the SMs, where the shared-bandwidth premise was measured
//! to hold. Memory capacity, power and price are split by the SM share, so the partitions of
//! one GPU add up to it (the real engine's pools are sized by what is free, not by a share:
//! docs/experiment.md says where that differs).
//!
//! Partitions of one GPU reach each other through its memory: [`on_device_link`] is the
//! `cuMemcpyDtoDAsync` the replay hands embeddings over with. The driver runs it on a copy
//! engine, not at HBM speed: on the H200 a 4,718,592-byte copy took 37.3–39.7 µs on the GPU
//! (CUDA events, medians of 120 and 240 copies) and 67.1–71.2 µs between the host's clock
//! readings around it and its synchronisation (exec/results/2026-12-03-h200-green-split/).
//! The link is that measurement, on every GPU: 4,718,592 B / 38.5 µs = 122.6 GB/s and 30 µs of
//! start-up (the wall time less the GPU time).

use std::sync::Mutex;

use super::gpu::{GPUS, GpuSpec};
use super::link::{LinkKind, LinkSpec};
use crate::error::{InputError, unknown_name};

/// The least share of its parent's SMs a partition may have (40 of 132 on an H200 is 0.303).
pub const MIN_SHARE: f64 = 0.30;

/// The on-device copy's rate, GB/s, and start-up, µs (H200, 2026-12-03: see above).
const COPY_GBS: f64 = 122.6;
const COPY_LATENCY_US: f64 = 30.0;

static PARTITIONS: Mutex<Vec<&'static GpuSpec>> = Mutex::new(Vec::new());
static DEVICE_LINKS: Mutex<Vec<&'static LinkSpec>> = Mutex::new(Vec::new());

/// The partition of `sms` SMs of `parent`. The same partition is the same `&'static` value every
/// time (at most one per parent and SM count is ever made).
pub fn partition(parent: &'static GpuSpec, sms: u32) -> Result<&'static GpuSpec, InputError> {
    if let Some(p) = parent.partition_of {
        return Err(InputError::new(format!(
            "{} is already a partition of {}: partition the whole GPU",
            parent.name, p.name
        )));
    }
    let least = (MIN_SHARE * f64::from(parent.sm_count)).ceil() as u32;
    if sms < least || sms >= parent.sm_count {
        return Err(InputError::new(format!(
            "a partition of {} SMs of {}: allowed {least} to {} (a partition keeps the GPU's HBM \
             bandwidth only from {:.0} % of its SMs up, as measured on an H200)",
            sms,
            parent.name,
            parent.sm_count - 1,
            MIN_SHARE * 100.0
        )));
    }
    let mut made = PARTITIONS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = made
        .iter()
        .find(|p| p.sm_count == sms && p.partition_of.is_some_and(|q| q.name == parent.name))
    {
        return Ok(p);
    }
    let share = f64::from(sms) / f64::from(parent.sm_count);
    let split = |q: Option<super::gpu::Quote>| {
        q.map(|q| super::gpu::Quote {
            usd: q.usd * share,
            ..q
        })
    };
    let spec: &'static GpuSpec = Box::leak(Box::new(GpuSpec {
        name: Box::leak(format!("{}@{sms}sm", parent.name).into_boxed_str()),
        memory_gib: parent.memory_gib * share,
        tflops_16bit: parent.tflops_16bit * share,
        tflops_fp8: parent.tflops_fp8.map(|t| t * share),
        power_w: parent.power_w * share,
        sm_count: sms,
        price_usd: split(parent.price_usd),
        cloud_usd_per_hour: split(parent.cloud_usd_per_hour),
        partition_of: Some(parent),
        ..parent.clone()
    }));
    made.push(spec);
    Ok(spec)
}

/// `<GPU>@<SMs>sm`, as `gpu_by_name` and experiments name a partition.
pub fn by_name(name: &str) -> Result<&'static GpuSpec, InputError> {
    let bad = || {
        InputError::new(format!(
            "GPU `{name}`: a partition is named `<GPU>@<SMs>sm`, e.g. `H200-SXM@40sm`"
        ))
    };
    let (parent, sms) = name.split_once('@').ok_or_else(bad)?;
    let sms: u32 = sms
        .strip_suffix("sm")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let parent = GPUS
        .iter()
        .find(|g| g.name.eq_ignore_ascii_case(parent))
        .ok_or_else(|| unknown_name("GPU", parent, GPUS.iter().map(|g| g.name)))?;
    partition(parent, sms)
}

/// The copy between partitions of `gpu` (a partition or the whole GPU): through its memory.
pub fn on_device_link(gpu: &'static GpuSpec) -> &'static LinkSpec {
    let parent = gpu.partition_of.unwrap_or(gpu);
    let name = format!("{}-on-device", parent.name);
    let mut made = DEVICE_LINKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = made.iter().find(|l| l.name == name) {
        return l;
    }
    let link: &'static LinkSpec = Box::leak(Box::new(LinkSpec {
        name: Box::leak(name.into_boxed_str()),
        kind: LinkKind::OnDevice,
        peak_gbs: COPY_GBS,
        efficiency: 1.0,
        latency_us: COPY_LATENCY_US,
        host_staged: false,
    }));
    made.push(link);
    link
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gpu_by_name;

    #[test]
    fn a_partition_has_its_share_of_compute_and_the_whole_memory_system() {
        let h200 = gpu_by_name("H200-SXM").unwrap();
        let p = gpu_by_name("h200-sxm@40sm").unwrap();
        assert_eq!(p.name, "H200-SXM@40sm");
        assert_eq!(p.sm_count, 40);
        // 989 × 40 / 132 = 299.70 TFLOP/s; memory 141 × 40 / 132 = 42.73 GiB.
        assert!(
            (p.tflops_16bit - 299.697).abs() < 1e-3,
            "{}",
            p.tflops_16bit
        );
        assert!((p.memory_gib - 42.727).abs() < 1e-3);
        assert_eq!(
            (p.mem_bw_gbs, p.l2_mib, p.boost_clock_mhz),
            (4800.0, 60.0, 1980.0)
        );
        assert_eq!(p.partition_of.unwrap().name, h200.name);
        // The same partition is one value.
        assert!(std::ptr::eq(p, partition(h200, 40).unwrap()));
        // Two partitions cost what the GPU does: 32,000 × (40 + 92) / 132.
        let q = partition(h200, 92).unwrap();
        let sum = p.price_usd.unwrap().usd + q.price_usd.unwrap().usd;
        assert!((sum - 32_000.0).abs() < 1e-6);
    }

    #[test]
    fn partitions_outside_the_measured_range_are_refused() {
        let h200 = gpu_by_name("H200-SXM").unwrap();
        // 0.3 × 132 = 39.6 → at least 40.
        let e = partition(h200, 39).unwrap_err().to_string();
        assert!(e.contains("allowed 40 to 131"), "{e}");
        assert!(partition(h200, 132).is_err());
        let p = partition(h200, 66).unwrap();
        assert!(
            partition(p, 40)
                .unwrap_err()
                .to_string()
                .contains("already")
        );
        for bad in ["H200-SXM@40", "H200-SXM@sm", "H200-SXM@-4sm", "Nope@40sm"] {
            assert!(by_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_on_device_copy_is_the_measured_copy_engine_rate() {
        let p = gpu_by_name("H200-SXM@40sm").unwrap();
        let l = on_device_link(p);
        assert_eq!(l.name, "H200-SXM-on-device");
        assert!(std::ptr::eq(
            l,
            on_device_link(gpu_by_name("H200-SXM").unwrap())
        ));
        // 4,718,592 B at 122.6 GB/s = 38.49 µs, + 30 µs: the measured 67–71 µs wall.
        let t = l.transfer_s(4_718_592);
        assert!((t - 68.487e-6).abs() < 1e-9, "{t}");
    }
}
