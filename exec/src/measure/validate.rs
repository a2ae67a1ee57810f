//! `validate transfer`: ship real KV caches and image embeddings of a model's exact shapes over
//! each available link, bit-exact, timing every stage; sweep model depth to measure the O(L)
//! ratio D_KV / D_emb for real. Layouts are documented in `kv.rs`.
//!
//! Per (depth, link), each repeat: poison the destination; checksum the source request through
//! its block table; gather into the packed buffer (kernel); send it; scatter into the
//! destination's pool through a different block table (kernel); checksum there. The four
//! checksums (source paged, packed at both ends, destination paged) must be equal, or the run
//! fails. The embedding goes the same way without gather/scatter (it is contiguous).

use crate::cuda::device::{self, DeviceBuffer, Event, Gpu, Stream};
use crate::cuda::kernels::{Kernel, Module, grid_for};
use crate::cuda::staging::{MIB, Stager, staged_chunk};
use crate::error::{Error, Result};
use crate::kargs;
use crate::measure::catalog;
use crate::profile::HardwareProfile;
use crate::serve::kv::{self, ModelShape, PagedGeometry};
use crate::stats;
use crate::util;
use hetsim_sim::catalog::LinkSpec;
use hetsim_sim::compare::error_pct;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Options {
    pub model_name: String,
    pub shape: ModelShape,
    /// model depths to sweep (other dimensions from `shape`)
    pub layers: Vec<usize>,
    /// context tokens s of the request whose KV is shipped
    pub context: usize,
    pub repeats: usize,
    pub src: usize,
    pub dst: usize,
    /// methods to run (None: every one this machine has)
    pub methods: Option<Vec<String>>,
    pub csv: Option<PathBuf>,
    /// folder for the simulator-schema parquet tables (transfers.parquet)
    pub results: Option<PathBuf>,
    pub command: String,
    pub seed: u64,
    /// a calibrated profile of this machine: fills `predicted_us` with its linear link model
    pub profile: Option<HardwareProfile>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            model_name: "llava-1.5-7b".into(),
            shape: ModelShape::LLAVA_15_7B,
            layers: vec![8, 16, 32, 48, 64, 80],
            context: 704,
            repeats: 5,
            src: 0,
            dst: 1,
            methods: None,
            csv: None,
            results: None,
            command: util::command_line(),
            seed: 42,
            profile: None,
        }
    }
}

/// One measured case, in the shared result schema's spirit (`source = exec`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub source: String,
    pub machine: String,
    pub date: String,
    pub model: String,
    pub layers: usize,
    pub context_tokens: usize,
    /// "kv" or "embedding"
    pub payload: String,
    /// catalog link id
    pub link: String,
    /// how it was sent
    pub method: String,
    pub src_gpu: usize,
    pub dst_gpu: usize,
    pub bytes: u64,
    pub checksum_src_us: f64,
    pub gather_us: f64,
    pub transfer_us: f64,
    pub scatter_us: f64,
    pub checksum_dst_us: f64,
    /// gather + transfer + scatter (what the receiver waits for; checksums excluded)
    pub total_us: f64,
    pub transfer_gbs: f64,
    pub checksum: String,
    pub bit_exact: bool,
    pub repeats: usize,
    /// the simulator's link model with the calibrated profile's bandwidth and latency for this
    /// link (NaN: no profile given, or a method the simulator does not model)
    pub predicted_us: f64,
    /// 100 · (predicted − measured) / measured, transfer stage only
    pub error_pct: f64,
    /// the simulator's link model with datasheet × default efficiency (`LinkSpec::transfer_s`)
    pub predicted_datasheet_us: f64,
    pub error_datasheet_pct: f64,
}

pub const CSV_HEADER: &str = "source,machine,date,model,layers,context_tokens,payload,link,method,src_gpu,dst_gpu,bytes,checksum_src_us,gather_us,transfer_us,scatter_us,checksum_dst_us,total_us,transfer_gbs,checksum,bit_exact,repeats,predicted_us,error_pct,predicted_datasheet_us,error_datasheet_pct";

/// The simulator's time for one transfer alone on `link` (hetsim-sim `Cluster::startup_s` +
/// bytes / bandwidth) with the bandwidth and latency a calibration measured for that link:
/// latency, plus one staging chunk of pipeline fill for host-staged links, plus bytes / bandwidth.
/// None if the profile has no such link. (Re-stated here: the sim computes it inside `Cluster`.)
pub fn predict_calibrated_us(
    profile: &HardwareProfile,
    link: &LinkSpec,
    bytes: u64,
) -> Option<f64> {
    let l = profile.link(link.name)?;
    Some(link.transfer_with(bytes, l.bandwidth_gbs * 1e9, l.latency_us * 1e-6) * 1e6)
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        String::new()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Row {
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{},{}",
            self.source,
            csv_field(&self.machine),
            self.date,
            csv_field(&self.model),
            self.layers,
            self.context_tokens,
            self.payload,
            self.link,
            self.method,
            self.src_gpu,
            self.dst_gpu,
            self.bytes,
            self.checksum_src_us,
            self.gather_us,
            self.transfer_us,
            self.scatter_us,
            self.checksum_dst_us,
            self.total_us,
            self.transfer_gbs,
            self.checksum,
            self.bit_exact,
            self.repeats,
            num(self.predicted_us),
            num(self.error_pct),
            num(self.predicted_datasheet_us),
            num(self.error_datasheet_pct)
        )
    }
}

pub fn write_csv(rows: &[Row], path: &std::path::Path) -> Result<()> {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&r.csv());
        s.push('\n');
    }
    Ok(hetsim_sim::output::write_atomically(path, s)?)
}

/// Write the rows as the simulator's `transfers` table (hetsim-sim `TransferRecord`, source =
/// `exec`), so predicted and measured transfers are the same rows. One record per row: the
/// transfer stage only (gather/scatter are not in the simulator's model; they stay in the CSV).
/// The scenario names the case: `validate-transfer/<model>/L<layers>/<method>`.
/// The simulator's writer publishes all five tables of a run; the other four are left empty.
pub fn write_transfer_records(rows: &[Row], dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    use hetsim_sim::output::ResultWriter;
    use hetsim_sim::records::{Source, TransferKind, TransferRecord};
    let mut w = ResultWriter::create(dir)?;
    for (i, r) in rows.iter().enumerate() {
        let link = hetsim_sim::catalog::link_by_name(&r.link)
            .map(|l| l.name)
            .unwrap_or("unknown");
        let rec = TransferRecord {
            scenario: format!("validate-transfer/{}/L{}/{}", r.model, r.layers, r.method),
            request_id: i as u64,
            kind: if r.payload == "kv" {
                TransferKind::Kv
            } else {
                TransferKind::Embedding
            },
            src_instance: r.src_gpu as u64,
            dst_instance: r.dst_gpu as u64,
            link,
            bytes: r.bytes,
            flows: 1,
            ready_s: 0.0,
            start_s: 0.0,
            end_s: r.transfer_us * 1e-6,
            source: Source::Exec,
        };
        w.transfers.append(&rec)?;
    }
    Ok(w.commit()?)
}

/// The transfer kernels of one GPU.
struct KvKernels {
    _m: Module,
    gather: Kernel,
    scatter: Kernel,
    cs_paged: Kernel,
    cs_flat: Kernel,
    fill: Kernel,
    sms: u32,
}

impl KvKernels {
    fn load(g: &Gpu) -> Result<KvKernels> {
        let m = Module::load(g, "kv_transfer.cu", kv::KV_SRC)?;
        Ok(KvKernels {
            gather: m.function("kv_gather")?,
            scatter: m.function("kv_scatter")?,
            cs_paged: m.function("kv_checksum_paged")?,
            cs_flat: m.function("checksum_u4")?,
            fill: m.function("fill_random_u32")?,
            sms: g.info.sms,
            _m: m,
        })
    }
}

/// One side's buffers for one depth.
struct Side {
    pool: DeviceBuffer,
    packed: DeviceBuffer,
    table: DeviceBuffer,
    emb: DeviceBuffer,
    sums: DeviceBuffer,
    nblocks: u32,
}

impl Side {
    fn new(g: &Gpu, shape: &ModelShape, s: usize, table: &[i32], nblocks: usize) -> Result<Side> {
        let pool = g.alloc(shape.pool_bytes(nblocks))?;
        let packed = g.alloc(shape.kv_bytes(s))?;
        let tb = g.alloc(table.len() * 4)?;
        tb.copy_from_host(
            &table
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>(),
        )?;
        let emb = g.alloc(shape.emb_bytes())?;
        let sums = g.alloc(8)?;
        Ok(Side {
            pool,
            packed,
            table: tb,
            emb,
            sums,
            nblocks: nblocks as u32,
        })
    }
}

fn checksum_paged(k: &KvKernels, side: &Side, geo: PagedGeometry, st: &Stream) -> Result<()> {
    side.sums.memset_async(0, st)?;
    let (pool, table, out, nb) = (side.pool.ptr, side.table.ptr, side.sums.ptr, side.nblocks);
    let (n, dv, s, h) = (geo.n_vec, geo.dv, geo.s, geo.heads);
    // SAFETY: kv_checksum_paged(pool, table, n_vec, dv, s, heads, nblocks, u64* out): `side`
    // holds the pool of nb blocks, the request's block table and the u64 sum (Side::new), alive
    // as long as the Side; freeing a buffer (cuMemFree) waits for the device anyway.
    unsafe {
        k.cs_paged.launch(
            grid_for(n, 256, k.sms),
            256,
            st,
            &mut kargs![pool, table, n, dv, s, h, nb, out],
        )
    }
}

fn checksum_flat(
    k: &KvKernels,
    buf: u64,
    bytes: usize,
    sums: &DeviceBuffer,
    st: &Stream,
) -> Result<()> {
    sums.memset_async(0, st)?;
    let n = (bytes / 16) as u64;
    let out = sums.ptr;
    // SAFETY: checksum_u4(const uint4* buf, u64 n_vec, u64* out): both callers pass a Side's
    // packed buffer of `bytes` = 16·n bytes; `sums` holds the u64 it adds into.
    unsafe {
        k.cs_flat
            .launch(grid_for(n, 256, k.sms), 256, st, &mut kargs![buf, n, out])
    }
}

fn fill(k: &KvKernels, buf: &DeviceBuffer, seed: u64, st: &Stream) -> Result<()> {
    let n = (buf.bytes / 4) as u64;
    let p = buf.ptr;
    // SAFETY: fill_random_u32(u32* p, u64 n, u64 seed) over the whole of `buf`, n = its bytes / 4;
    // freeing `buf` (cuMemFree) waits for the device, so the kernel never writes freed memory.
    unsafe {
        k.fill
            .launch(grid_for(n, 256, k.sms), 256, st, &mut kargs![p, n, seed])
    }
}

/// Time one stage on `st` with events of `g`; returns seconds.
fn timed(g: &Gpu, st: &Stream, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let a = Event::timing(g)?;
    let b = Event::timing(g)?;
    a.record(st)?;
    f()?;
    b.record(st)?;
    Ok(a.elapsed_ms(&b)? * 1e-3)
}

/// How bytes get from the source GPU to the destination GPU.
enum Method {
    /// cuMemcpyPeerAsync with peer access on (NVLink, or PCIe P2P)
    Peer,
    /// GPU → pinned host → GPU, chunked, double-buffered
    Staged(Stager),
    /// GPU → pageable host → GPU, synchronous
    Pageable(Vec<u8>),
}

impl Method {
    fn send(
        &mut self,
        src_g: &Gpu,
        dst_g: &Gpu,
        s_src: &Stream,
        src: &DeviceBuffer,
        dst: &DeviceBuffer,
        bytes: usize,
    ) -> Result<f64> {
        match self {
            Method::Peer => timed(src_g, s_src, || {
                device::copy_peer_async(dst, src, bytes, s_src)
            }),
            Method::Staged(st) => {
                let start = Event::timing(dst_g)?;
                let end = Event::timing(dst_g)?;
                start.record(&st.h2d)?;
                st.enqueue(
                    src.ptr,
                    dst.ptr,
                    bytes,
                    staged_chunk(bytes, st.slot_bytes),
                    &start,
                )?;
                end.record(&st.h2d)?;
                Ok(start.elapsed_ms(&end)? * 1e-3)
            }
            Method::Pageable(host) => {
                if host.len() < bytes {
                    host.resize(bytes, 0);
                }
                let t = Instant::now();
                src_g.bind()?;
                device::ck!(
                    cudarc::driver::sys::cuMemcpyDtoH_v2(
                        host.as_mut_ptr() as *mut _,
                        src.ptr,
                        bytes
                    ),
                    "cuMemcpyDtoH(pageable, {bytes} bytes)"
                )?;
                dst_g.bind()?;
                device::ck!(
                    cudarc::driver::sys::cuMemcpyHtoD_v2(dst.ptr, host.as_ptr() as *const _, bytes),
                    "cuMemcpyHtoD(pageable, {bytes} bytes)"
                )?;
                Ok(t.elapsed().as_secs_f64())
            }
        }
    }
}

/// Run the sweep; returns the rows (also written to `opts.csv` if set).
pub fn run(opts: &Options) -> Result<Vec<Row>> {
    opts.shape.validate()?;
    if opts.layers.is_empty() || opts.layers.contains(&0) {
        return Err(Error::Invalid(
            "--layers needs one or more positive depths".into(),
        ));
    }
    if opts.context == 0 || opts.repeats == 0 {
        return Err(Error::Invalid(
            "--context and --repeats must be positive".into(),
        ));
    }
    device::init()?;
    let n = device::device_count()?;
    let (si, di) = if n >= 2 { (opts.src, opts.dst) } else { (0, 0) };
    if si >= n || di >= n {
        return Err(Error::Invalid(format!(
            "--src {si} / --dst {di}: this machine has {n} GPU(s)"
        )));
    }
    let src_g = Gpu::open(si)?;
    let dst_g = Gpu::open(di)?;
    let driver = util::nvidia_driver_string().unwrap_or_else(|| "?".into());
    let machine = format!("{}x {} (driver {driver})", n, src_g.info.name);
    let date = util::now_utc();
    let gname = src_g.info.name.clone();
    // Which methods this machine has, and the catalog link each runs on.
    let mut methods: Vec<(String, &'static LinkSpec, Method)> = Vec::new();
    if si != di {
        let info = device::peer_info(&src_g, &dst_g)?;
        if info.can_access_peer {
            src_g.enable_peer_access(&dst_g)?;
            dst_g.enable_peer_access(&src_g)?;
            let name = if info.kind == "nvlink" {
                "nvlink_peer"
            } else {
                "pcie_p2p"
            };
            methods.push((
                name.into(),
                catalog::link_spec(&gname, &info.kind, false),
                Method::Peer,
            ));
        }
    }
    let staged = catalog::link_spec(&gname, "pcie", true);
    methods.push((
        "pcie_staged_pinned".into(),
        staged,
        Method::Staged(Stager::new(&src_g, &dst_g, 16 * MIB, 4)?),
    ));
    methods.push(("pcie_pageable".into(), staged, Method::Pageable(Vec::new())));
    if let Some(want) = &opts.methods {
        for w in want {
            if !methods.iter().any(|m| &m.0 == w) {
                return Err(Error::Invalid(format!(
                    "--method {w} is not available here; available: {}",
                    methods
                        .iter()
                        .map(|m| m.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        methods.retain(|m| want.contains(&m.0));
    }
    let ks = KvKernels::load(&src_g)?;
    let kd = if si == di {
        None
    } else {
        Some(KvKernels::load(&dst_g)?)
    };
    let kd = kd.as_ref().unwrap_or(&ks);
    let s_src = src_g.stream()?;
    let s_dst = dst_g.stream()?;
    let s = opts.context;
    let mut rows = Vec::new();
    eprintln!(
        "[validate] {machine}: {} GPU {si} -> GPU {di}, s = {s}, depths {:?}",
        opts.model_name, opts.layers
    );
    for &layers in &opts.layers {
        let shape = opts.shape.with_layers(layers);
        let nb_req = shape.blocks_for(s);
        let nblocks = 2 * nb_req + 8;
        let t_src = kv::block_table(nb_req, nblocks, opts.seed ^ layers as u64)?;
        let t_dst = kv::block_table(nb_req, nblocks, opts.seed ^ 0xd57 ^ layers as u64)?;
        let a = Side::new(&src_g, &shape, s, &t_src, nblocks)?;
        let b = Side::new(&dst_g, &shape, s, &t_dst, nblocks)?;
        let geo = shape.paged_geometry(s);
        src_g.bind()?;
        fill(&ks, &a.pool, opts.seed.wrapping_add(layers as u64), &s_src)?;
        fill(
            &ks,
            &a.emb,
            opts.seed.wrapping_add(1000 + layers as u64),
            &s_src,
        )?;
        s_src.synchronize()?;
        for (mname, link, method) in methods.iter_mut() {
            for payload in ["kv", "embedding"] {
                let bytes = if payload == "kv" {
                    shape.kv_bytes(s)
                } else {
                    shape.emb_bytes()
                };
                let (mut t_cs, mut t_g, mut t_x, mut t_sc, mut t_cd) =
                    (vec![], vec![], vec![], vec![], vec![]);
                let mut exact = true;
                let mut sum = 0u64;
                for rep in 0..opts.repeats + 1 {
                    // poison the destination so unwritten data cannot pass
                    dst_g.bind()?;
                    b.pool.memset_async(0xff, &s_dst)?;
                    b.packed.memset_async(0xff, &s_dst)?;
                    b.emb.memset_async(0xff, &s_dst)?;
                    s_dst.synchronize()?;
                    src_g.bind()?;
                    let (cs, g, x, sc, cd, sums) = if payload == "kv" {
                        let cs = timed(&src_g, &s_src, || checksum_paged(&ks, &a, geo, &s_src))?;
                        let c_src = a.sums.read_u64()?;
                        let g = timed(&src_g, &s_src, || {
                            // SAFETY: `a`'s pool, packed buffer and block table were sized for
                            // this shape and context in Side::new and outlive `timed`, which
                            // synchronises s_src.
                            unsafe {
                                kv::launch_move(
                                    &ks.gather,
                                    false,
                                    a.pool.ptr,
                                    a.packed.ptr,
                                    a.table.ptr,
                                    a.nblocks,
                                    geo,
                                    ks.sms,
                                    &s_src,
                                )
                            }
                        })?;
                        checksum_flat(&ks, a.packed.ptr, bytes, &a.sums, &s_src)?;
                        s_src.synchronize()?;
                        let c_packed_src = a.sums.read_u64()?;
                        let x = method.send(&src_g, &dst_g, &s_src, &a.packed, &b.packed, bytes)?;
                        dst_g.bind()?;
                        checksum_flat(kd, b.packed.ptr, bytes, &b.sums, &s_dst)?;
                        s_dst.synchronize()?;
                        let c_packed_dst = b.sums.read_u64()?;
                        let sc = timed(&dst_g, &s_dst, || {
                            // SAFETY: `b`'s pool, packed buffer and block table were sized for
                            // this shape and context in Side::new and outlive `timed`, which
                            // synchronises s_dst.
                            unsafe {
                                kv::launch_move(
                                    &kd.scatter,
                                    true,
                                    b.pool.ptr,
                                    b.packed.ptr,
                                    b.table.ptr,
                                    b.nblocks,
                                    geo,
                                    kd.sms,
                                    &s_dst,
                                )
                            }
                        })?;
                        let cd = timed(&dst_g, &s_dst, || checksum_paged(kd, &b, geo, &s_dst))?;
                        let c_dst = b.sums.read_u64()?;
                        (cs, g, x, sc, cd, [c_src, c_packed_src, c_packed_dst, c_dst])
                    } else {
                        let cs = timed(&src_g, &s_src, || {
                            checksum_flat(&ks, a.emb.ptr, bytes, &a.sums, &s_src)
                        })?;
                        let c_src = a.sums.read_u64()?;
                        let x = method.send(&src_g, &dst_g, &s_src, &a.emb, &b.emb, bytes)?;
                        dst_g.bind()?;
                        let cd = timed(&dst_g, &s_dst, || {
                            checksum_flat(kd, b.emb.ptr, bytes, &b.sums, &s_dst)
                        })?;
                        let c_dst = b.sums.read_u64()?;
                        (cs, 0.0, x, 0.0, cd, [c_src, c_src, c_dst, c_dst])
                    };
                    if sums.iter().any(|&c| c != sums[0]) {
                        exact = false;
                        eprintln!(
                            "[validate] MISMATCH L={layers} {payload} {mname}: src {:016x} packed {:016x} -> {:016x} dst {:016x}",
                            sums[0], sums[1], sums[2], sums[3]
                        );
                    }
                    sum = sums[0];
                    if rep > 0 {
                        t_cs.push(cs);
                        t_g.push(g);
                        t_x.push(x);
                        t_sc.push(sc);
                        t_cd.push(cd);
                    }
                }
                let us = |v: &[f64]| stats::median(v) * 1e6;
                let (g, x, sc) = (us(&t_g), us(&t_x), us(&t_sc));
                // The simulator models pinned staging, not pageable copies: no prediction for those.
                let modelled = !matches!(method, Method::Pageable(_));
                let predicted = opts
                    .profile
                    .as_ref()
                    .filter(|_| modelled)
                    .and_then(|p| predict_calibrated_us(p, link, bytes as u64))
                    .unwrap_or(f64::NAN);
                let datasheet = if modelled {
                    link.transfer_s(bytes as u64) * 1e6
                } else {
                    f64::NAN
                };
                let row = Row {
                    source: "exec".into(),
                    machine: machine.clone(),
                    date: date.clone(),
                    model: opts.model_name.clone(),
                    layers,
                    context_tokens: s,
                    payload: payload.into(),
                    link: link.name.to_string(),
                    method: mname.clone(),
                    src_gpu: si,
                    dst_gpu: di,
                    bytes: bytes as u64,
                    checksum_src_us: us(&t_cs),
                    gather_us: g,
                    transfer_us: x,
                    scatter_us: sc,
                    checksum_dst_us: us(&t_cd),
                    total_us: g + x + sc,
                    transfer_gbs: bytes as f64 / (x * 1e-6) / 1e9,
                    checksum: format!("{sum:016x}"),
                    bit_exact: exact,
                    repeats: opts.repeats,
                    predicted_us: predicted,
                    error_pct: error_pct(predicted, x).unwrap_or(f64::NAN),
                    predicted_datasheet_us: datasheet,
                    error_datasheet_pct: error_pct(datasheet, x).unwrap_or(f64::NAN),
                };
                eprintln!(
                    "[validate] L={layers:3} {payload:9} {mname:20} {:>12} B: gather {g:9.1} us, transfer {x:10.1} us ({:7.1} GB/s), scatter {sc:9.1} us, exact {exact}",
                    row.bytes, row.transfer_gbs
                );
                rows.push(row);
            }
        }
    }
    if let Some(p) = &opts.csv {
        write_csv(&rows, p)?;
    }
    if let Some(d) = &opts.results {
        write_transfer_records(&rows, d)?;
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.bit_exact)
        .map(|r| format!("L={} {} {}", r.layers, r.payload, r.method))
        .collect();
    if !bad.is_empty() {
        return Err(Error::Check(format!(
            "checksums differ for: {}",
            bad.join("; ")
        )));
    }
    Ok(rows)
}

/// D_KV / D_emb in bytes and in time, per (depth, method), from the rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ratio {
    pub layers: usize,
    pub method: String,
    pub bytes_ratio: f64,
    pub transfer_time_ratio: f64,
    pub total_time_ratio: f64,
}

pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for kvr in rows.iter().filter(|r| r.payload == "kv") {
        if let Some(e) = rows
            .iter()
            .find(|r| r.payload == "embedding" && r.layers == kvr.layers && r.method == kvr.method)
        {
            out.push(Ratio {
                layers: kvr.layers,
                method: kvr.method.clone(),
                bytes_ratio: kvr.bytes as f64 / e.bytes as f64,
                transfer_time_ratio: kvr.transfer_us / e.transfer_us,
                total_time_ratio: kvr.total_us / e.total_us,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(payload: &str, layers: usize, bytes: u64, t: f64) -> Row {
        Row {
            source: "exec".into(),
            machine: "m, with comma".into(),
            date: "d".into(),
            model: "llava-1.5-7b".into(),
            layers,
            context_tokens: 704,
            payload: payload.into(),
            link: "nvlink4".into(),
            method: "nvlink_peer".into(),
            src_gpu: 0,
            dst_gpu: 1,
            bytes,
            checksum_src_us: 1.0,
            gather_us: 0.0,
            transfer_us: t,
            scatter_us: 0.0,
            checksum_dst_us: 1.0,
            total_us: t,
            transfer_gbs: bytes as f64 / t / 1e3,
            checksum: "00".into(),
            bit_exact: true,
            repeats: 3,
            predicted_us: f64::NAN,
            error_pct: f64::NAN,
            predicted_datasheet_us: f64::NAN,
            error_datasheet_pct: f64::NAN,
        }
    }

    #[test]
    fn csv_has_header_columns_and_quotes() {
        let r = row("kv", 32, 369_098_752, 1000.0);
        let line = r.csv();
        assert!(line.contains("\"m, with comma\""));
        // 22 columns: the quoted field holds one comma
        assert_eq!(line.split(',').count(), CSV_HEADER.split(',').count() + 1);
        assert!(line.starts_with("exec,"));
        assert!(line.ends_with(",3,,,,"), "{line}");
    }

    #[test]
    fn prediction_follows_the_sim_link_model() {
        let p = HardwareProfile {
            machine: "m".into(),
            date: "d".into(),
            command: "c".into(),
            operator_fit: None,
            gpus: vec![],
            links: vec![
                crate::profile::LinkProfile {
                    catalog_link: "nvlink4".into(),
                    bandwidth_gbs: 400.0,
                    latency_us: 10.0,
                    points: vec![],
                },
                crate::profile::LinkProfile {
                    catalog_link: "pcie5-host-staged".into(),
                    bandwidth_gbs: 50.0,
                    latency_us: 20.0,
                    points: vec![],
                },
            ],
            phases: vec![],
        };
        let nv = hetsim_sim::catalog::link_by_name("nvlink4").unwrap();
        let st = hetsim_sim::catalog::link_by_name("pcie5-host-staged").unwrap();
        let p5 = hetsim_sim::catalog::link_by_name("pcie5").unwrap();
        assert!((predict_calibrated_us(&p, nv, 400_000_000).unwrap() - 1010.0).abs() < 1e-9);
        // host-staged: latency + one chunk (a quarter of 100 MB, capped at 16 MiB) + bytes / bandwidth
        let want = 20.0 + (16u64 << 20) as f64 / 50e3 + 1e8 / 50e3;
        assert!((predict_calibrated_us(&p, st, 100_000_000).unwrap() - want).abs() < 1e-6);
        assert_eq!(predict_calibrated_us(&p, p5, 1), None);
    }

    #[test]
    fn transfer_records_in_the_sim_schema() {
        let dir = std::env::temp_dir().join(format!("hetsim-exec-rec-{}", std::process::id()));
        let rows = vec![
            row("kv", 32, 369_098_752, 1000.0),
            row("embedding", 32, 4_718_592, 20.0),
        ];
        let files = write_transfer_records(&rows, &dir).unwrap();
        assert!(files.iter().any(|f| f.ends_with("transfers.parquet")));
        assert!(dir.join("transfers.parquet").metadata().unwrap().len() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ratio_of_rows() {
        let rows = vec![
            row("kv", 32, 369_098_752, 1000.0),
            row("embedding", 32, 4_718_592, 20.0),
        ];
        let r = ratios(&rows);
        assert_eq!(r.len(), 1);
        assert!((r[0].bytes_ratio - 78.22).abs() < 0.01);
        assert!((r[0].transfer_time_ratio - 50.0).abs() < 1e-9);
    }

    #[test]
    fn bad_options_are_invalid_input_before_any_gpu_call() {
        let o = Options {
            layers: vec![],
            ..Default::default()
        };
        assert_eq!(run(&o).unwrap_err().exit_code(), 2);
        let o = Options {
            context: 0,
            ..Default::default()
        };
        assert_eq!(run(&o).unwrap_err().exit_code(), 2);
    }
}
