//! `calibrate`: run the probes on this machine and write a hardware profile.
//!
//! Each section records its error and the run goes on, so one failing probe (say, green contexts
//! on a driver without them) never costs the others' numbers on a scarce GPU machine.

use crate::cuda::device::{self, Gpu, GpuInfo, PeerInfo};
use crate::cuda::gemm::Lt;
use crate::cuda::staging::{GIB, MIB, Stager};
use crate::error::{Error, Result};
use crate::measure::catalog;
use crate::measure::probes::compute::{
    self, GemmBuffers, GemmPoint, HbmResult, LaunchResult, ProbeKernels,
};
use crate::measure::probes::green::{self, GreenPoint};
use crate::measure::probes::link::{self, LinkBench, LinkCurve, ShareResult};
use crate::profile::{self, HardwareProfile};
use crate::util;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Options {
    /// where to write the profile YAML (None: don't write)
    pub out: Option<PathBuf>,
    /// where to write every measurement as JSON (None: don't write)
    pub json: Option<PathBuf>,
    /// fewer shapes and sizes (a smoke test)
    pub quick: bool,
    pub green: bool,
    pub links: bool,
    pub compute: bool,
    /// GPUs to run compute probes on (None: the first GPU of each distinct model)
    pub gpus: Option<Vec<usize>>,
    /// recorded in the profile
    pub command: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            out: None,
            json: None,
            quick: false,
            green: true,
            links: true,
            compute: true,
            gpus: None,
            command: util::command_line(),
        }
    }
}

/// Everything one calibration measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub machine: String,
    pub date: String,
    pub command: String,
    pub driver_version: i32,
    pub driver: Option<String>,
    pub cublaslt_version: Option<usize>,
    pub gpus: Vec<GpuInfo>,
    pub peers: Vec<PeerInfo>,
    pub compute: Vec<ComputeResult>,
    pub links: Vec<LinkCurve>,
    /// staged copy of 256 MiB: (chunk bytes, GB/s)
    pub chunk_sweep: Vec<(u64, f64)>,
    pub sharing: Vec<ShareResult>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComputeResult {
    pub gpu: usize,
    pub name: String,
    pub catalog_gpu: Option<String>,
    pub datasheet_bf16_tflops: Option<f64>,
    pub datasheet_hbm_gbs: Option<f64>,
    pub gemm_check_rel_err: f64,
    /// 8192³ GEMM
    pub square: Option<GemmPoint>,
    pub gemm: Vec<GemmPoint>,
    pub hbm: Option<HbmResult>,
    pub launch: Option<LaunchResult>,
    pub green: Vec<GreenPoint>,
    pub green_granularity: Option<(u32, u32, u32)>,
}

fn note<T>(errors: &mut Vec<String>, what: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("[calibrate] {what} failed: {e}");
            errors.push(format!("{what}: {e}"));
            None
        }
    }
}

/// Run the probes, write the profile (and JSON) if asked, return the profile.
pub fn run(opts: &Options) -> Result<HardwareProfile> {
    let cal = measure(opts)?;
    let prof = to_profile(&cal);
    if let Some(p) = &opts.json {
        let s =
            serde_json::to_string_pretty(&cal).map_err(|e| Error::Invalid(format!("JSON: {e}")))?;
        hetsim_sim::output::write_atomically(p, s)?;
    }
    if let Some(p) = &opts.out {
        write_profile(&prof, p)?;
    }
    Ok(prof)
}

/// Write a profile atomically (temp file + rename): never a half-written file.
pub fn write_profile(prof: &HardwareProfile, path: &Path) -> Result<()> {
    Ok(hetsim_sim::output::write_atomically(path, prof.to_yaml())?)
}

/// Read a profile with the simulator's own loader (it checks names and ranges).
pub fn read_profile(path: &Path) -> Result<HardwareProfile> {
    HardwareProfile::load(path).map_err(|e| Error::Invalid(e.to_string()))
}

/// The profile whose links a calibration without link probes takes (`--links-from`): read with
/// the simulator's loader, and refused if it has no links to give.
pub fn read_links_from(path: &Path) -> Result<HardwareProfile> {
    let from = read_profile(path)?;
    if from.links.is_empty() {
        return Err(Error::Invalid(format!(
            "--links-from {}: the profile has no links (take one written by `hetsim calibrate` \
             without --no-links)",
            path.display()
        )));
    }
    Ok(from)
}

/// `prof` with the links of `from` (read by `read_links_from` from `from_path`), for a
/// calibration that measured no links: a phase table measured today joins a link calibration of
/// the same machine taken earlier, without re-running the link probes. The links were not
/// measured by `prof`'s command, so the command says where they came from.
pub fn with_links_from(
    mut prof: HardwareProfile,
    from: &HardwareProfile,
    from_path: &Path,
) -> HardwareProfile {
    prof.links = from.links.clone();
    prof.command = format!(
        "{} (links copied from {}: measured {} on {})",
        prof.command,
        from_path.display(),
        from.date,
        from.machine
    );
    prof
}

/// Run the probes and return every measurement.
pub fn measure(opts: &Options) -> Result<Calibration> {
    device::init()?;
    let n = device::device_count()?;
    if n == 0 {
        return Err(Error::NoDriver(
            "the driver loaded but reports no GPU".into(),
        ));
    }
    let gpus: Vec<Gpu> = (0..n).map(Gpu::open).collect::<Result<_>>()?;
    let mut errors = Vec::new();
    let mut peers = Vec::new();
    for a in &gpus {
        for b in &gpus {
            if a.ordinal != b.ordinal
                && let Some(p) = note(&mut errors, "peer info", device::peer_info(a, b))
            {
                peers.push(p);
            }
        }
    }
    let driver = util::nvidia_driver_string();
    let driver_version = device::driver_version()?;
    let mut cal = Calibration {
        machine: machine_string(&gpus, driver.as_deref(), driver_version),
        date: util::now_utc(),
        command: opts.command.clone(),
        driver_version,
        driver,
        cublaslt_version: Lt::version().ok(),
        gpus: gpus.iter().map(|g| g.info.clone()).collect(),
        peers,
        compute: Vec::new(),
        links: Vec::new(),
        chunk_sweep: Vec::new(),
        sharing: Vec::new(),
        errors: Vec::new(),
    };
    eprintln!("[calibrate] {} on {}", cal.machine, cal.date);
    if opts.compute {
        let targets = opts.gpus.clone().unwrap_or_else(|| {
            let mut seen = Vec::<String>::new();
            gpus.iter()
                .filter(|g| {
                    let new = !seen.contains(&g.info.name);
                    seen.push(g.info.name.clone());
                    new
                })
                .map(|g| g.ordinal)
                .collect()
        });
        for t in targets {
            let g = gpus
                .get(t)
                .ok_or_else(|| Error::Invalid(format!("--gpu {t}: this machine has {n} GPU(s)")))?;
            let r = compute_probes(g, opts, &mut errors);
            if let Some(r) = note(&mut errors, &format!("compute probes on GPU {t}"), r) {
                cal.compute.push(r);
            }
        }
    }
    if opts.links {
        let (src, dst) = if n >= 2 {
            (&gpus[0], &gpus[1])
        } else {
            (&gpus[0], &gpus[0])
        };
        let r = link_probes(src, dst, opts, &mut cal, &mut errors);
        note(&mut errors, "link probes", r);
    }
    cal.errors = errors;
    Ok(cal)
}

fn machine_string(gpus: &[Gpu], driver: Option<&str>, v: i32) -> String {
    let name = gpus
        .first()
        .map(|g| g.info.name.clone())
        .unwrap_or_default();
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}x {name} (driver {}, CUDA {}.{}){}",
        gpus.len(),
        driver.unwrap_or("?"),
        v / 1000,
        (v % 1000) / 10,
        if host.is_empty() {
            String::new()
        } else {
            format!(" host {host}")
        }
    )
}

fn compute_probes(g: &Gpu, opts: &Options, errors: &mut Vec<String>) -> Result<ComputeResult> {
    g.bind()?;
    let spec = catalog::gpu_spec(&g.info.name);
    let pk = ProbeKernels::load(g)?;
    let lt = Lt::new()?;
    let s = g.stream()?;
    let err = compute::check_gemm(g, &lt, &pk, &s)?;
    eprintln!(
        "[calibrate] GPU {}: GEMM check rel err {err:.2e}",
        g.ordinal
    );
    let sq = compute::GemmShape {
        phase: "square".into(),
        op: "8192^3".into(),
        m: 8192,
        n: 8192,
        k: 8192,
    };
    let square = note(
        errors,
        "square GEMM",
        (|| {
            let b = GemmBuffers::new(g, &pk, &s, 8192, 8192, 8192, g.info.sms)?;
            compute::time_gemm(g, &lt, &b, &s, &sq)
        })(),
    );
    if let Some(p) = &square {
        eprintln!(
            "[calibrate] GPU {}: 8192^3 bf16 GEMM {:.1} TFLOP/s",
            g.ordinal, p.tflops
        );
    }
    let shapes = if opts.quick {
        compute::llava_shapes(&[1], &[704], &[1, 64])
    } else {
        compute::llava_shapes(&[1, 8, 32], &[704, 2048, 8192], &[1, 8, 32, 64, 128, 256])
    };
    let mut gemm = Vec::new();
    for shape in &shapes {
        let r = (|| {
            let b = GemmBuffers::new(g, &pk, &s, shape.m, shape.n, shape.k, g.info.sms)?;
            compute::time_gemm(g, &lt, &b, &s, shape)
        })();
        if let Some(p) = note(errors, &format!("GEMM {shape:?}"), r) {
            eprintln!(
                "[calibrate]   {:8} {:8} M={:6} N={:6} K={:6}: {:9.1} us {:7.1} TFLOP/s {:7.0} GB/s",
                p.phase, p.op, p.m, p.n, p.k, p.time_us, p.tflops, p.gbs
            );
            gemm.push(p);
        }
    }
    let hbm = note(
        errors,
        "HBM copy",
        compute::hbm_bandwidth(
            g,
            &pk,
            &s,
            if opts.quick { 256 * MIB } else { GIB },
            g.info.sms,
        ),
    );
    if let Some(h) = &hbm {
        eprintln!(
            "[calibrate] GPU {}: HBM copy kernel {:.0} GB/s, cuMemcpyDtoD {:.0} GB/s",
            g.ordinal, h.kernel_gbs, h.memcpy_gbs
        );
    }
    let launch = note(
        errors,
        "launch overhead",
        compute::launch_overhead(g, &pk, &s),
    );
    if let Some(l) = &launch {
        eprintln!(
            "[calibrate] GPU {}: launch {:.2} us/kernel (host), {:.2} us (device), round trip {:.1} us",
            g.ordinal, l.per_launch_host_us, l.per_launch_device_us, l.round_trip_us
        );
    }
    let mut green_pts = Vec::new();
    let mut gran = None;
    if opts.green {
        gran = note(
            errors,
            "green-context SM resource",
            crate::cuda::green::sm_resource(g).map(|(_, a, b, c)| (a, b, c)),
        );
        if let Some((total, _, _)) = gran {
            let counts: Vec<u32> = if opts.quick {
                vec![total / 4, total / 2]
            } else {
                vec![total / 8, total / 4, total / 2, 3 * total / 4]
            };
            let gshapes = vec![
                compute::GemmShape {
                    phase: "prefill".into(),
                    op: "qkv".into(),
                    m: 2048,
                    n: 12288,
                    k: 4096,
                },
                compute::GemmShape {
                    phase: "decode".into(),
                    op: "qkv".into(),
                    m: 8,
                    n: 12288,
                    k: 4096,
                },
            ];
            if let Some(v) = note(
                errors,
                "green contexts",
                green::sweep(g, &lt, &counts, &gshapes, 512 * MIB),
            ) {
                for p in &v {
                    eprintln!(
                        "[calibrate] green {:3} SMs: prefill qkv {:.1} TFLOP/s, decode qkv {:.0} GB/s, HBM {:.0} GB/s",
                        p.sms, p.gemm[0].tflops, p.gemm[1].gbs, p.hbm_gbs
                    );
                }
                green_pts = v;
            }
        }
    }
    Ok(ComputeResult {
        gpu: g.ordinal,
        name: g.info.name.clone(),
        catalog_gpu: spec.map(|s| s.name.to_string()),
        datasheet_bf16_tflops: spec.map(|s| s.tflops_16bit),
        datasheet_hbm_gbs: spec.map(|s| s.mem_bw_gbs),
        gemm_check_rel_err: err,
        square,
        gemm,
        hbm,
        launch,
        green: green_pts,
        green_granularity: gran,
    })
}

fn log_curve(c: &LinkCurve) {
    eprintln!(
        "[calibrate] {:22} {} -> {}: {:7.1} GB/s, small-message {:7.1} us (fit {:.1} us, {:.1} GB/s)",
        c.method,
        c.src,
        c.dst,
        c.bandwidth_gbs,
        c.latency_us,
        c.fit_latency_us,
        c.fit_bandwidth_gbs
    );
}

fn link_probes(
    src: &Gpu,
    dst: &Gpu,
    opts: &Options,
    cal: &mut Calibration,
    errors: &mut Vec<String>,
) -> Result<()> {
    let sizes: Vec<usize> = if opts.quick {
        vec![4 << 10, 1 << 20, 64 << 20, 256 << 20]
    } else {
        link::default_sizes()
    };
    let max = *sizes.iter().max().unwrap();
    let lb = LinkBench::new(src, dst, max)?;
    let gname = src.info.name.clone();
    let pcie = catalog::link_spec(&gname, "pcie", false).name;
    let staged = catalog::link_spec(&gname, "pcie", true).name;
    let two = src.ordinal != dst.ordinal;
    let (a, b) = (format!("gpu{}", src.ordinal), format!("gpu{}", dst.ordinal));
    let (a, b) = (a.as_str(), b.as_str());
    let push = |cal: &mut Calibration, c: LinkCurve| {
        log_curve(&c);
        cal.links.push(c);
    };
    let mut peer_bw = None;
    if two {
        let info = device::peer_info(src, dst)?;
        let nv = catalog::link_spec(&gname, &info.kind, false).name;
        // 1. Without peer access: what a plain copy between two contexts gets.
        let few: Vec<usize> = sizes
            .iter()
            .copied()
            .filter(|s| (1 << 20..=256 << 20).contains(s))
            .collect();
        src.disable_peer_access(dst)?;
        dst.disable_peer_access(src)?;
        if let Some(p) = note(errors, "peer copy without peer access", lb.peer(&few)) {
            push(
                cal,
                LinkCurve::from_points(
                    "peer_no_p2p",
                    nv,
                    a,
                    b,
                    p,
                    "cuMemcpyPeerAsync with peer access NOT enabled: the driver stages it",
                ),
            );
        }
        if let Some(p) = note(
            errors,
            "cross-context DtoD without peer access",
            lb.dtod_cross(&few),
        ) {
            push(
                cal,
                LinkCurve::from_points(
                    "dtod_no_p2p",
                    nv,
                    a,
                    b,
                    p,
                    "cuMemcpyDtoDAsync across GPUs, peer access NOT enabled",
                ),
            );
        }
        // 2. With peer access.
        if info.can_access_peer {
            src.enable_peer_access(dst)?;
            dst.enable_peer_access(src)?;
            if let Some(p) = note(errors, "peer copy", lb.peer(&sizes)) {
                let c = LinkCurve::from_points(
                    if info.kind == "nvlink" {
                        "nvlink_peer"
                    } else {
                        "pcie_p2p"
                    },
                    nv,
                    a,
                    b,
                    p,
                    "cuMemcpyPeerAsync, peer access enabled both ways",
                );
                peer_bw = Some(c.bandwidth_gbs);
                push(cal, c);
            }
            if let Some(p) = note(
                errors,
                "cross-context DtoD with peer access",
                lb.dtod_cross(&few),
            ) {
                push(
                    cal,
                    LinkCurve::from_points(
                        "dtod_p2p",
                        nv,
                        a,
                        b,
                        p,
                        "cuMemcpyDtoDAsync across GPUs, peer access enabled",
                    ),
                );
            }
        } else {
            errors.push(format!(
                "GPU {a} cannot access GPU {b} as a peer: no direct copy measured"
            ));
        }
    }
    // Single-direction pinned baselines.
    let pinned = device::PinnedBuffer::new(src, max)?;
    if let Some(p) = note(errors, "D2H pinned", lb.d2h(&pinned, &sizes)) {
        push(
            cal,
            LinkCurve::from_points(
                "d2h_pinned",
                pcie,
                a,
                "host",
                p,
                "GPU -> pinned host, one direction",
            ),
        );
    }
    if let Some(p) = note(errors, "H2D pinned", lb.h2d(&pinned, &sizes)) {
        push(
            cal,
            LinkCurve::from_points(
                "h2d_pinned",
                pcie,
                "host",
                b,
                p,
                "pinned host -> GPU, one direction",
            ),
        );
    }
    drop(pinned);
    // Staged through pinned host memory.
    let slot = 16 * MIB;
    let stager = Stager::new(src, dst, slot, 4)?;
    if let Some(p) = note(errors, "staged pinned", lb.staged(&stager, &sizes, None)) {
        push(
            cal,
            LinkCurve::from_points(
                "pcie_staged_pinned",
                staged,
                a,
                b,
                p,
                "GPU -> pinned host -> GPU, chunks <= 16 MiB, 4 slots, 2 streams + events",
            ),
        );
    }
    let probe = (256 * MIB).min(max);
    for chunk in [MIB, 2 * MIB, 4 * MIB, 8 * MIB, 16 * MIB] {
        if let Some(p) = note(
            errors,
            "chunk sweep",
            lb.staged(&stager, &[probe], Some(chunk)),
        ) {
            cal.chunk_sweep.push((chunk as u64, p[0].gbs));
        }
    }
    // Pageable staging.
    let mut host = vec![0x11u8; max];
    if let Some(p) = note(errors, "pageable", lb.pageable(&mut host, &sizes)) {
        push(
            cal,
            LinkCurve::from_points(
                "pcie_pageable",
                staged,
                a,
                b,
                p,
                "GPU -> pageable host -> GPU, synchronous cuMemcpyDtoH + cuMemcpyHtoD",
            ),
        );
    }
    drop(host);
    // Sharing: several transfers at once on one link.
    let each = (256 * MIB).min(max / 4);
    if two && peer_bw.is_some() {
        let nv = catalog::link_spec(&gname, &device::peer_info(src, dst)?.kind, false)
            .name
            .to_string();
        let single = note(errors, "share peer 1", link::share_peer(&lb, 1, each, 5))
            .map(|r| each as f64 / r.0 / 1e9);
        for k in [2usize, 4] {
            if let Some((t, per)) = note(errors, "share peer", link::share_peer(&lb, k, each, 5)) {
                log_share(
                    cal,
                    ShareResult::new("nvlink_peer", &nv, each, (t, per), single),
                    &format!("{k} concurrent peer copies"),
                );
            }
        }
        if let Some((t, per)) = note(
            errors,
            "share peer chunked",
            link::share_peer_chunked(&lb, 2, each, 4 * MIB, 5),
        ) {
            log_share(
                cal,
                ShareResult::new("nvlink_peer_chunked_4MiB", &nv, each, (t, per), single),
                "2 peer copies in 4 MiB pieces, round-robin",
            );
        }
        if let Some((t, per)) = note(
            errors,
            "peer bidirectional",
            link::share_peer_bidir(&lb, each, 5),
        ) {
            log_share(
                cal,
                ShareResult::new("nvlink_peer_bidirectional", &nv, each, (t, per), single),
                "peer copies both ways",
            );
        }
    }
    let stagers: Vec<Stager> = (0..2)
        .map(|_| Stager::new(src, dst, slot, 4))
        .collect::<Result<_>>()?;
    let single = note(
        errors,
        "share staged 1",
        link::share_staged(&lb, &stagers[..1], each, 5),
    )
    .map(|r| each as f64 / r.0 / 1e9);
    if let Some((t, per)) = note(
        errors,
        "share staged",
        link::share_staged(&lb, &stagers, each, 5),
    ) {
        log_share(
            cal,
            ShareResult::new("pcie_staged_pinned", staged, each, (t, per), single),
            "2 concurrent staged copies",
        );
    }
    Ok(())
}

/// Records a sharing probe and says what it found.
fn log_share(cal: &mut Calibration, r: ShareResult, what: &str) {
    eprintln!(
        "[calibrate] {what}: {:.1} GB/s together, each {:?}",
        r.aggregate_gbs, r.per_transfer_gbs
    );
    cal.sharing.push(r);
}

/// The profile the simulator reads, from a calibration. One entry per catalog link:
/// `nvlink4` ← the peer copy with peer access on; `pcie5-host-staged` ← the pipelined copy through
/// pinned host memory; `pcie5` ← the slower of the single-direction pinned copies (the x16 link's
/// own rate; these machines have no PCIe peer-to-peer path to measure). GPUs the catalog does not
/// know, and probes that failed, are left out (the simulator's loader would refuse them).
pub fn to_profile(cal: &Calibration) -> HardwareProfile {
    let gpus = cal
        .compute
        .iter()
        .filter_map(|c| {
            let catalog_gpu = c.catalog_gpu.clone()?;
            let tf = c.square.as_ref()?.tflops;
            // best of the copy kernel and the driver's device copy: both read and write once
            let hbm = c.hbm.as_ref().map(|h| h.kernel_gbs.max(h.memcpy_gbs))?;
            Some(profile::GpuProfile {
                catalog_gpu,
                reported_name: c.name.clone(),
                gemm_tflops: tf,
                gemm_efficiency: tf / c.datasheet_bf16_tflops?,
                hbm_gbs: hbm,
                memory_efficiency: hbm / c.datasheet_hbm_gbs?,
                launch_overhead_us: c.launch.as_ref()?.per_launch_host_us,
                gemm_points: c
                    .gemm
                    .iter()
                    .map(|p| profile::GemmPoint {
                        m: p.m as u64,
                        n: p.n as u64,
                        k: p.k as u64,
                        tflops: p.tflops,
                    })
                    .collect(),
            })
        })
        .collect();
    let mut links: Vec<profile::LinkProfile> = Vec::new();
    let mut add = |c: &LinkCurve| {
        if c.bandwidth_gbs.is_finite()
            && c.bandwidth_gbs > 0.0
            && !links.iter().any(|l| l.catalog_link == c.catalog_link)
        {
            links.push(profile::LinkProfile {
                catalog_link: c.catalog_link.clone(),
                bandwidth_gbs: c.bandwidth_gbs,
                latency_us: c.latency_us,
                points: c
                    .points
                    .iter()
                    .map(|p| profile::LinkPoint {
                        bytes: p.bytes,
                        gbs: p.gbs,
                    })
                    .collect(),
            });
        }
    };
    for m in ["nvlink_peer", "pcie_p2p", "pcie_staged_pinned"] {
        if let Some(c) = cal.links.iter().find(|c| c.method == m) {
            add(c);
        }
    }
    let one_way = cal
        .links
        .iter()
        .filter(|c| c.method == "d2h_pinned" || c.method == "h2d_pinned")
        .min_by(|a, b| a.bandwidth_gbs.total_cmp(&b.bandwidth_gbs));
    if let Some(c) = one_way {
        add(c);
    }
    HardwareProfile {
        machine: cal.machine.clone(),
        date: cal.date.clone(),
        command: cal.command.clone(),
        gpus,
        links,
        phases: Vec::new(),
        operator_fit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of the repository, from its root.
    fn repo(f: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(f)
    }

    #[test]
    fn measured_profiles_load_in_the_simulator() {
        // The simulator's own loader checks catalog names and ranges.
        for f in [
            "profiles/h200x2-2026-11-21.yaml",
            "profiles/h100-2026-11-21.yaml",
        ] {
            let p = read_profile(&repo(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(p.gpus.len(), 1, "{f}");
            assert!(p.link("pcie5-host-staged").is_some(), "{f}");
        }
        let p = read_profile(&repo("profiles/h200x2-2026-11-21.yaml")).unwrap();
        assert_eq!(p.gpus[0].catalog_gpu, "H200-SXM");
        assert!(p.link("nvlink4").unwrap().bandwidth_gbs > 350.0);
    }

    #[test]
    fn profile_is_derived_from_the_measurements() {
        let s =
            std::fs::read_to_string(repo("exec/results/2026-11-21-h200x2-probes/calibrate.json"))
                .unwrap();
        let cal: Calibration = serde_json::from_str(&s).unwrap();
        let p = to_profile(&cal);
        let names: Vec<&str> = p.links.iter().map(|l| l.catalog_link.as_str()).collect();
        assert_eq!(names, ["nvlink4", "pcie5-host-staged", "pcie5"]);
        // Same numbers as the profile the run wrote (JSON and YAML may round the last digit).
        let q = read_profile(&repo("profiles/h200x2-2026-11-21.yaml")).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        assert_eq!((p.gpus.len(), p.links.len()), (q.gpus.len(), q.links.len()));
        for (a, b) in p.gpus.iter().zip(&q.gpus) {
            assert_eq!(a.catalog_gpu, b.catalog_gpu);
            for (x, y) in [
                (a.gemm_tflops, b.gemm_tflops),
                (a.hbm_gbs, b.hbm_gbs),
                (a.launch_overhead_us, b.launch_overhead_us),
            ] {
                assert!(close(x, y), "{x} vs {y}");
            }
            assert_eq!(a.gemm_points.len(), b.gemm_points.len());
        }
        for (a, b) in p.links.iter().zip(&q.links) {
            assert_eq!(a.catalog_link, b.catalog_link);
            assert!(close(a.bandwidth_gbs, b.bandwidth_gbs) && close(a.latency_us, b.latency_us));
            assert_eq!(a.points.len(), b.points.len());
        }
        // the report renders from the same data
        assert!(crate::measure::report::calibration_markdown(&cal).contains("nvlink_peer"));
    }
    #[test]
    fn links_from_joins_a_phase_table_with_a_link_calibration() {
        // The 4×H200 validation profile was joined by hand (sed) from its phase table, measured
        // with --no-links, and the 2×H200 link calibration; the option gives the same profile.
        let run = "exec/results/2026-11-21-h200x4-validate";
        let links_path = repo("profiles/h200x2-2026-11-21.yaml");
        let phases = read_profile(&repo(&format!("{run}/phases.yaml"))).unwrap();
        let from = read_links_from(&links_path).unwrap();
        assert!(phases.links.is_empty());
        let joined = with_links_from(phases.clone(), &from, &links_path);
        let shipped = read_profile(&repo("profiles/h200x4-2026-11-21-llava-1.5-7b.yaml")).unwrap();
        assert_eq!(joined.links, shipped.links);
        assert_eq!(
            (&joined.gpus, &joined.phases),
            (&shipped.gpus, &shipped.phases)
        );
        // NVLink peer copy of the 2×H200 calibration at 04:27 UTC, as its report prints it.
        assert_eq!(joined.link("nvlink4").unwrap().bandwidth_gbs.round(), 396.0);
        assert!(joined.command.starts_with(&phases.command));
        assert!(joined.command.ends_with(
            "measured 2026-11-21T04:27:46Z on 2x NVIDIA H200 (driver 580.159.04, CUDA 13.0) host vm)"
        ));
        // What it writes, the simulator reads.
        let dir = std::env::temp_dir().join(format!("hetsim-links-from-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("p.yaml");
        write_profile(&joined, &out).unwrap();
        assert_eq!(read_profile(&out).unwrap(), joined);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_from_a_profile_without_links_is_bad_input() {
        let path = repo("profiles/h100-2026-11-21-llava-1.5-7b.yaml");
        let e = read_links_from(&path).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("has no links"), "{e}");
    }
}
