//! Link probes: bandwidth and latency between GPUs (or a GPU and the host) over message sizes.
//!
//! * `nvlink_peer`: `cuMemcpyPeerAsync` with peer access **enabled** in both directions. Without
//!   peer access the driver cannot let one GPU's copy engine write the other's memory, so it
//!   stages the copy through host memory over PCIe: that is the ~38 GB/s a first probe saw with
//!   a plain device-to-device copy between two contexts. We measure that case too
//!   (`peer_no_p2p`) to show the cause, then enable peer access.
//! * `pcie_staged_pinned`: GPU → pinned host → GPU, chunked, double-buffered (k slots) on two
//!   streams (a D2H stream on the source, an H2D stream on the destination) ordered by events,
//!   so the two PCIe hops overlap.
//! * `pcie_pageable`: the same through pageable memory with synchronous copies (the driver then
//!   stages through its own pinned bounce buffers), for comparison.
//! * `d2h_pinned` / `h2d_pinned`: single-direction baselines.
//! * sharing: several transfers at once on one link, from a common start.

use crate::cuda::device::{self, DeviceBuffer, Event, Gpu, PinnedBuffer, Stream};
use crate::cuda::staging::{GIB, KIB, MIB, Stager, plan_chunks, staged_chunk};
use crate::error::{Error, Result};
use crate::stats;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// 4 KiB, 16 KiB, … 1 GiB (×4 steps).
pub fn default_sizes() -> Vec<usize> {
    let mut v = vec![4 * KIB];
    while *v.last().unwrap() < GIB {
        let n = v.last().unwrap() * 4;
        v.push(n);
    }
    v
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkPoint {
    pub bytes: u64,
    /// median seconds
    pub seconds: f64,
    pub gbs: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub repeats: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkCurve {
    /// how: nvlink_peer, peer_no_p2p, pcie_staged_pinned, pcie_pageable, d2h_pinned, h2d_pinned, ...
    pub method: String,
    /// the simulator catalog's link (see `catalog::link_spec`)
    pub catalog_link: String,
    /// "gpu0", "gpu1", or "host"
    pub src: String,
    pub dst: String,
    pub points: Vec<LinkPoint>,
    /// best median GB/s among messages of 64 MiB and more (or the largest measured)
    pub bandwidth_gbs: f64,
    /// median time of the smallest message, µs
    pub latency_us: f64,
    /// least-squares t = a + bytes/B over all points: a (µs) and B (GB/s)
    pub fit_latency_us: f64,
    pub fit_bandwidth_gbs: f64,
    pub note: String,
}

impl LinkCurve {
    pub fn from_points(
        method: &str,
        catalog_link: &str,
        src: &str,
        dst: &str,
        points: Vec<LinkPoint>,
        note: &str,
    ) -> LinkCurve {
        let big: Vec<&LinkPoint> = points
            .iter()
            .filter(|p| p.bytes >= 64 * MIB as u64)
            .collect();
        let bandwidth_gbs = if big.is_empty() {
            points.last().map(|p| p.gbs).unwrap_or(f64::NAN)
        } else {
            big.iter().map(|p| p.gbs).fold(0.0, f64::max)
        };
        let latency_us = points.first().map(|p| p.seconds * 1e6).unwrap_or(f64::NAN);
        let (a, b) = stats::fit_latency_bandwidth(
            &points
                .iter()
                .map(|p| (p.bytes as f64, p.seconds))
                .collect::<Vec<_>>(),
        );
        LinkCurve {
            method: method.into(),
            catalog_link: catalog_link.into(),
            src: src.into(),
            dst: dst.into(),
            points,
            bandwidth_gbs,
            latency_us,
            fit_latency_us: a * 1e6,
            fit_bandwidth_gbs: b / 1e9,
            note: note.into(),
        }
    }
}

/// Several transfers at once on one link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShareResult {
    pub method: String,
    pub catalog_link: String,
    pub concurrent: usize,
    pub bytes_each: u64,
    /// all bytes / time until the last one finished
    pub aggregate_gbs: f64,
    /// each transfer's bytes / its own finish time (from the common start)
    pub per_transfer_gbs: Vec<f64>,
    /// the same link with one transfer of the same size, for the ratio
    pub single_gbs: f64,
}

impl ShareResult {
    /// From a sharing probe's total time `t` and each transfer's finish times `per` (seconds).
    pub fn new(
        method: &str,
        catalog_link: &str,
        bytes_each: usize,
        (t, per): (f64, Vec<f64>),
        single_gbs: Option<f64>,
    ) -> ShareResult {
        ShareResult {
            method: method.into(),
            catalog_link: catalog_link.into(),
            concurrent: per.len(),
            bytes_each: bytes_each as u64,
            aggregate_gbs: (per.len() * bytes_each) as f64 / t / 1e9,
            per_transfer_gbs: per.iter().map(|x| bytes_each as f64 / x / 1e9).collect(),
            single_gbs: single_gbs.unwrap_or(f64::NAN),
        }
    }
}

/// Time `enqueue` with events on `timer_stream`: warm-up, then `reps` repeats; seconds each.
/// `enqueue(start)` must queue the work so that it starts after `start` and so that
/// `timer_stream` is ordered after all of it.
pub fn time_events(
    gpu: &Gpu,
    timer_stream: &Stream,
    warmup: usize,
    reps: usize,
    mut enqueue: impl FnMut(&Event) -> Result<()>,
) -> Result<Vec<f64>> {
    let start = Event::timing(gpu)?;
    let end = Event::timing(gpu)?;
    let mut out = Vec::with_capacity(reps);
    for i in 0..warmup + reps {
        start.record(timer_stream)?;
        enqueue(&start)?;
        end.record(timer_stream)?;
        let ms = start.elapsed_ms(&end)?;
        if i >= warmup {
            out.push(ms * 1e-3);
        }
    }
    Ok(out)
}

fn point(bytes: usize, secs: &[f64]) -> LinkPoint {
    let med = stats::median(secs);
    let (lo, hi) = stats::min_max(secs);
    LinkPoint {
        bytes: bytes as u64,
        seconds: med,
        gbs: bytes as f64 / med / 1e9,
        min_s: lo,
        max_s: hi,
        repeats: secs.len(),
    }
}

/// Sweep sizes, choosing repeats from the previous size's time so each size costs ~0.15 s.
fn sweep(
    sizes: &[usize],
    mut one: impl FnMut(usize, usize) -> Result<Vec<f64>>,
) -> Result<Vec<LinkPoint>> {
    let mut pts = Vec::new();
    let mut expect = 1e-5;
    for &b in sizes {
        let reps = stats::repeats_for(expect, 0.15, 5, 30);
        let secs = one(b, reps)?;
        let p = point(b, &secs);
        expect = p.seconds * 4.0;
        pts.push(p);
    }
    Ok(pts)
}

/// Buffers reused by all probes between one source and one destination GPU.
pub struct LinkBench<'a> {
    pub src: &'a Gpu,
    pub dst: &'a Gpu,
    pub src_buf: DeviceBuffer,
    pub dst_buf: DeviceBuffer,
    pub s_src: Stream,
    pub s_dst: Stream,
    pub max_bytes: usize,
}

impl<'a> LinkBench<'a> {
    pub fn new(src: &'a Gpu, dst: &'a Gpu, max_bytes: usize) -> Result<LinkBench<'a>> {
        let src_buf = src.alloc(max_bytes)?;
        let dst_buf = dst.alloc(max_bytes)?;
        // Non-zero contents: some links compress or special-case zeros.
        let s_src = src.stream()?;
        let s_dst = dst.stream()?;
        src_buf.memset_async(0x5a, &s_src)?;
        dst_buf.memset_async(0xa5, &s_dst)?;
        s_src.synchronize()?;
        s_dst.synchronize()?;
        Ok(LinkBench {
            src,
            dst,
            src_buf,
            dst_buf,
            s_src,
            s_dst,
            max_bytes,
        })
    }

    fn check_size(&self, b: usize) -> Result<()> {
        if b > self.max_bytes {
            return Err(Error::Invalid(format!(
                "message of {b} bytes exceeds probe buffers of {}",
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// cuMemcpyPeerAsync src → dst on the source GPU's stream.
    pub fn peer(&self, sizes: &[usize]) -> Result<Vec<LinkPoint>> {
        sweep(sizes, |b, reps| {
            self.check_size(b)?;
            time_events(self.src, &self.s_src, 2, reps, |_| {
                device::copy_peer_async(&self.dst_buf, &self.src_buf, b, &self.s_src)
            })
        })
    }

    /// cuMemcpyDtoDAsync with a destination pointer on the other GPU (works through UVA).
    pub fn dtod_cross(&self, sizes: &[usize]) -> Result<Vec<LinkPoint>> {
        sweep(sizes, |b, reps| {
            self.check_size(b)?;
            time_events(self.src, &self.s_src, 2, reps, |_| {
                device::copy_dtod_async(self.dst_buf.ptr, self.src_buf.ptr, b, &self.s_src)
            })
        })
    }

    /// Single-direction pinned copy, source GPU → host.
    pub fn d2h(&self, pinned: &PinnedBuffer, sizes: &[usize]) -> Result<Vec<LinkPoint>> {
        sweep(sizes, |b, reps| {
            self.check_size(b)?;
            time_events(self.src, &self.s_src, 2, reps, |_| {
                device::copy_dtoh_async(pinned, 0, self.src_buf.ptr, b, &self.s_src)
            })
        })
    }

    /// Single-direction pinned copy, host → destination GPU.
    pub fn h2d(&self, pinned: &PinnedBuffer, sizes: &[usize]) -> Result<Vec<LinkPoint>> {
        sweep(sizes, |b, reps| {
            self.check_size(b)?;
            time_events(self.dst, &self.s_dst, 2, reps, |_| {
                device::copy_htod_async(self.dst_buf.ptr, pinned, 0, b, &self.s_dst)
            })
        })
    }

    /// GPU → pinned host → GPU, chunked and pipelined. `chunk_cap` caps the chunk size (None:
    /// `staged_chunk`), `slots` is how many staging slots of that size are in flight.
    pub fn staged(
        &self,
        stager: &Stager,
        sizes: &[usize],
        chunk_cap: Option<usize>,
    ) -> Result<Vec<LinkPoint>> {
        sweep(sizes, |b, reps| {
            self.check_size(b)?;
            let chunk = chunk_cap
                .map(|c| c.min(b))
                .unwrap_or_else(|| staged_chunk(b, stager.slot_bytes));
            time_events(self.dst, &stager.h2d, 2, reps, |start| {
                stager.enqueue(self.src_buf.ptr, self.dst_buf.ptr, b, chunk, start)
            })
        })
    }

    /// GPU → pageable host → GPU with synchronous copies (host clock).
    pub fn pageable(&self, host: &mut [u8], sizes: &[usize]) -> Result<Vec<LinkPoint>> {
        sweep(sizes, |b, reps| {
            self.check_size(b)?;
            if b > host.len() {
                return Err(Error::Invalid("pageable buffer too small".into()));
            }
            let mut out = Vec::new();
            for i in 0..reps + 1 {
                let t = Instant::now();
                self.src.bind()?;
                device::ck!(
                    cudarc::driver::sys::cuMemcpyDtoH_v2(
                        host.as_mut_ptr() as *mut _,
                        self.src_buf.ptr,
                        b
                    ),
                    "cuMemcpyDtoH(pageable, {b} bytes from GPU {})",
                    self.src.ordinal
                )?;
                self.dst.bind()?;
                device::ck!(
                    cudarc::driver::sys::cuMemcpyHtoD_v2(
                        self.dst_buf.ptr,
                        host.as_ptr() as *const _,
                        b
                    ),
                    "cuMemcpyHtoD(pageable, {b} bytes to GPU {})",
                    self.dst.ordinal
                )?;
                if i > 0 {
                    out.push(t.elapsed().as_secs_f64());
                }
            }
            Ok(out)
        })
    }
}

/// `n` peer copies of `bytes_each` at once, each on its own stream of the source GPU, from
/// disjoint parts of the buffers (the chunked probe with one piece per copy).
pub fn share_peer(
    lb: &LinkBench,
    n: usize,
    bytes_each: usize,
    reps: usize,
) -> Result<(f64, Vec<f64>)> {
    share_peer_chunked(lb, n, bytes_each, bytes_each, reps)
}

/// `n` peer copies of `bytes_each` at once, each cut into `chunk`-byte pieces issued round-robin
/// across the streams (as an engine that ships layer by layer would): do they then share the
/// link fairly, instead of running one after the other?
pub fn share_peer_chunked(
    lb: &LinkBench,
    n: usize,
    bytes_each: usize,
    chunk: usize,
    reps: usize,
) -> Result<(f64, Vec<f64>)> {
    if n * bytes_each > lb.max_bytes {
        return Err(Error::Invalid(
            "sharing probe needs n*bytes_each <= buffer size".into(),
        ));
    }
    let streams = (0..n)
        .map(|_| lb.src.stream())
        .collect::<Result<Vec<_>>>()?;
    let ends = (0..n)
        .map(|_| Event::timing(lb.src))
        .collect::<Result<Vec<_>>>()?;
    let start = Event::timing(lb.src)?;
    let plan = plan_chunks(bytes_each, chunk);
    let mut agg = Vec::new();
    let mut each: Vec<Vec<f64>> = vec![Vec::new(); n];
    for r in 0..reps + 1 {
        start.record(&lb.s_src)?;
        for s in &streams {
            s.wait(&start)?;
        }
        for &(off, len) in &plan {
            for (i, s) in streams.iter().enumerate() {
                let o = (i * bytes_each + off) as u64;
                device::ck!(
                    cudarc::driver::sys::cuMemcpyPeerAsync(
                        lb.dst_buf.ptr + o,
                        lb.dst_buf.ctx,
                        lb.src_buf.ptr + o,
                        lb.src_buf.ctx,
                        len,
                        s.raw
                    ),
                    "cuMemcpyPeerAsync(chunked share {i}/{n})"
                )?;
            }
        }
        for (i, s) in streams.iter().enumerate() {
            ends[i].record(s)?;
        }
        let mut t = Vec::new();
        for e in &ends {
            t.push(start.elapsed_ms(e)? * 1e-3);
        }
        if r > 0 {
            agg.push(t.iter().cloned().fold(0.0, f64::max));
            for (i, x) in t.into_iter().enumerate() {
                each[i].push(x);
            }
        }
    }
    Ok((
        stats::median(&agg),
        each.iter().map(|v| stats::median(v)).collect(),
    ))
}

/// One peer copy each way at once (src → dst and dst → src), both issued on streams of the
/// source GPU so one set of events times them: does the link carry both directions at full rate?
pub fn share_peer_bidir(lb: &LinkBench, bytes: usize, reps: usize) -> Result<(f64, Vec<f64>)> {
    if 2 * bytes > lb.max_bytes {
        return Err(Error::Invalid(
            "bidirectional probe needs 2*bytes <= buffer size".into(),
        ));
    }
    let streams = [lb.src.stream()?, lb.src.stream()?];
    let ends = [Event::timing(lb.src)?, Event::timing(lb.src)?];
    let start = Event::timing(lb.src)?;
    let (mut agg, mut each) = (Vec::new(), vec![Vec::new(), Vec::new()]);
    for r in 0..reps + 1 {
        start.record(&lb.s_src)?;
        for (i, s) in streams.iter().enumerate() {
            s.wait(&start)?;
            // forward uses the first half of the buffers, reverse the second half
            let off = (i * bytes) as u64;
            let (d, dc, sp, sc) = if i == 0 {
                (
                    lb.dst_buf.ptr + off,
                    lb.dst_buf.ctx,
                    lb.src_buf.ptr + off,
                    lb.src_buf.ctx,
                )
            } else {
                (
                    lb.src_buf.ptr + off,
                    lb.src_buf.ctx,
                    lb.dst_buf.ptr + off,
                    lb.dst_buf.ctx,
                )
            };
            device::ck!(
                cudarc::driver::sys::cuMemcpyPeerAsync(d, dc, sp, sc, bytes, s.raw),
                "cuMemcpyPeerAsync(bidirectional, {})",
                if i == 0 { "forward" } else { "reverse" }
            )?;
            ends[i].record(s)?;
        }
        let t = [
            start.elapsed_ms(&ends[0])? * 1e-3,
            start.elapsed_ms(&ends[1])? * 1e-3,
        ];
        if r > 0 {
            agg.push(t[0].max(t[1]));
            each[0].push(t[0]);
            each[1].push(t[1]);
        }
    }
    Ok((
        stats::median(&agg),
        each.iter().map(|v| stats::median(v)).collect(),
    ))
}

/// `n` staged GPU → host → GPU copies at once, each with its own stager (streams and slots).
pub fn share_staged(
    lb: &LinkBench,
    stagers: &[Stager],
    bytes_each: usize,
    reps: usize,
) -> Result<(f64, Vec<f64>)> {
    let n = stagers.len();
    if n * bytes_each > lb.max_bytes {
        return Err(Error::Invalid(
            "sharing probe needs n*bytes_each <= buffer size".into(),
        ));
    }
    let start = Event::timing(lb.dst)?;
    let ends = (0..n)
        .map(|_| Event::timing(lb.dst))
        .collect::<Result<Vec<_>>>()?;
    let mut agg = Vec::new();
    let mut each: Vec<Vec<f64>> = vec![Vec::new(); n];
    for r in 0..reps + 1 {
        start.record(&lb.s_dst)?;
        for (i, st) in stagers.iter().enumerate() {
            let off = (i * bytes_each) as u64;
            let chunk = staged_chunk(bytes_each, st.slot_bytes);
            st.enqueue(
                lb.src_buf.ptr + off,
                lb.dst_buf.ptr + off,
                bytes_each,
                chunk,
                &start,
            )?;
            ends[i].record(&st.h2d)?;
        }
        let mut t = Vec::new();
        for e in &ends {
            t.push(start.elapsed_ms(e)? * 1e-3);
        }
        if r > 0 {
            agg.push(t.iter().cloned().fold(0.0, f64::max));
            for (i, x) in t.into_iter().enumerate() {
                each[i].push(x);
            }
        }
    }
    Ok((
        stats::median(&agg),
        each.iter().map(|v| stats::median(v)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_span_4k_to_1g() {
        let s = default_sizes();
        assert_eq!(s.first(), Some(&(4 * KIB)));
        assert_eq!(s.last(), Some(&GIB));
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn curve_summary() {
        let pts: Vec<LinkPoint> = [4 * KIB, 64 * MIB, 256 * MIB]
            .iter()
            .map(|&b| {
                let s = 10e-6 + b as f64 / 50e9;
                LinkPoint {
                    bytes: b as u64,
                    seconds: s,
                    gbs: b as f64 / s / 1e9,
                    min_s: s,
                    max_s: s,
                    repeats: 3,
                }
            })
            .collect();
        let c = LinkCurve::from_points("x", "pcie5_x16", "gpu0", "gpu1", pts, "");
        assert!((c.fit_bandwidth_gbs - 50.0).abs() < 1e-6);
        assert!((c.fit_latency_us - 10.0).abs() < 1e-6);
        assert!(c.bandwidth_gbs < 50.0 && c.bandwidth_gbs > 49.0);
        assert!((c.latency_us - (10.0 + 4096.0 / 50e3)).abs() < 1e-6);
    }
}
