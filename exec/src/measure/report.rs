//! Markdown tables of measured numbers, each against its physical limit.

use crate::measure::calibrate::Calibration;
use crate::measure::catalog;
use crate::measure::validate::{self, Row};
use std::fmt::Write;

fn human_bytes(b: u64) -> String {
    const U: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < 3 {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.2} {}", U[i])
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1} %", 100.0 * x)
    } else {
        "–".into()
    }
}

pub fn calibration_markdown(c: &Calibration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {}  \nDate: {}  \nCommand: `{}`  \nCUDA driver API {}, cuBLASLt {:?}\n",
        c.machine, c.date, c.command, c.driver_version, c.cublaslt_version
    );
    let _ = writeln!(
        s,
        "| GPU | name | SMs | memory | L2 | PCI bus | CC |\n|---|---|---|---|---|---|---|"
    );
    for g in &c.gpus {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {}.{} |",
            g.ordinal,
            g.name,
            g.sms,
            human_bytes(g.memory_bytes),
            human_bytes(g.l2_bytes),
            g.pci_bus_id,
            g.compute_capability.0,
            g.compute_capability.1
        );
    }
    if !c.peers.is_empty() {
        let _ = writeln!(
            s,
            "\n| pair | peer access | native atomics | perf rank | NVLink links active (NVML) | kind |\n|---|---|---|---|---|---|"
        );
        for p in &c.peers {
            let _ = writeln!(
                s,
                "| {} → {} | {} | {} | {} | {:?} | {} |",
                p.src,
                p.dst,
                p.can_access_peer,
                p.native_atomics,
                p.performance_rank,
                p.nvlink_active_links,
                p.kind
            );
        }
    }
    for r in &c.compute {
        let _ = writeln!(s, "\n### Compute, GPU {} ({})\n", r.gpu, r.name);
        let peak = r.datasheet_bf16_tflops.unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "GEMM check against an f64 CPU reference: relative error {:.2e}.\n",
            r.gemm_check_rel_err
        );
        if let Some(q) = &r.square {
            let _ = writeln!(
                s,
                "bf16 GEMM 8192³: **{:.1} TFLOP/s** = {} of the {:.0} TFLOP/s dense datasheet peak.\n",
                q.tflops,
                pct(q.tflops / peak),
                peak
            );
        }
        if let Some(h) = &r.hbm {
            let bw = r.datasheet_hbm_gbs.unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "HBM copy ({} copied, read + write counted): kernel **{:.0} GB/s** = {} of {:.0} GB/s datasheet; cuMemcpyDtoD {:.0} GB/s.\n",
                human_bytes(h.bytes_copied),
                h.kernel_gbs,
                pct(h.kernel_gbs / bw),
                bw,
                h.memcpy_gbs
            );
        }
        if let Some(l) = &r.launch {
            let _ = writeln!(
                s,
                "Launch overhead ({} back-to-back empty kernels): {:.2} µs per kernel by host clock, {:.2} µs by device events; launch + sync round trip {:.1} µs.\n",
                l.launches, l.per_launch_host_us, l.per_launch_device_us, l.round_trip_us
            );
        }
        let bw = r.datasheet_hbm_gbs.unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| phase | op | M | N | K | time µs | TFLOP/s | % of peak | GB/s (min bytes) | % of HBM |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for p in &r.gemm {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {:.0} | {} |",
                p.phase,
                p.op,
                p.m,
                p.n,
                p.k,
                p.time_us,
                p.tflops,
                pct(p.tflops / peak),
                p.gbs,
                pct(p.gbs / bw)
            );
        }
        if !r.green.is_empty() {
            let full_pf = r
                .gemm
                .iter()
                .find(|p| p.phase == "prefill" && p.op == "qkv" && p.m == 2048)
                .map(|p| p.tflops);
            let _ = writeln!(
                s,
                "\nGreen contexts (SM partitions; granularity: total, min partition, alignment = {:?}). Same kernels as above; full GPU = {} SMs.\n",
                r.green_granularity,
                c.gpus.get(r.gpu).map(|g| g.sms).unwrap_or(0)
            );
            let _ = writeln!(
                s,
                "| SMs asked | SMs got | prefill qkv 2048×12288×4096 TFLOP/s | per-SM vs full GPU | decode qkv M=8 GB/s | HBM copy GB/s |\n|---|---|---|---|---|---|"
            );
            let full_sms = c.gpus.get(r.gpu).map(|g| g.sms as f64).unwrap_or(f64::NAN);
            for g in &r.green {
                let t = g.gemm.first().map(|p| p.tflops).unwrap_or(f64::NAN);
                let rel = full_pf
                    .map(|f| (t / g.sms as f64) / (f / full_sms))
                    .unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1} | {} | {:.0} | {:.0} |",
                    g.requested_sms,
                    g.sms,
                    t,
                    pct(rel),
                    g.gemm.get(1).map(|p| p.gbs).unwrap_or(f64::NAN),
                    g.hbm_gbs
                );
            }
        }
    }
    if !c.links.is_empty() {
        let _ = writeln!(s, "\n### Links\n");
        let _ = writeln!(
            s,
            "| method | link | from → to | bandwidth GB/s (≥64 MiB) | % of datasheet | 4 KiB time µs | fit latency µs | fit GB/s |\n|---|---|---|---|---|---|---|---|"
        );
        for l in &c.links {
            let peak = catalog::link_peak_gbs(&l.catalog_link).unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "| {} | {} | {} → {} | {:.1} | {} | {:.1} | {:.1} | {:.1} |",
                l.method,
                l.catalog_link,
                l.src,
                l.dst,
                l.bandwidth_gbs,
                pct(l.bandwidth_gbs / peak),
                l.latency_us,
                l.fit_latency_us,
                l.fit_bandwidth_gbs
            );
        }
        // size sweep, one column per method
        let sizes: Vec<u64> = {
            let mut v: Vec<u64> = c
                .links
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.bytes))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let _ = write!(s, "\nGB/s by message size (median of repeats):\n\n| size |");
        for l in &c.links {
            let _ = write!(s, " {} |", l.method);
        }
        let _ = write!(s, "\n|---|");
        for _ in &c.links {
            let _ = write!(s, "---|");
        }
        let _ = writeln!(s);
        for b in sizes {
            let _ = write!(s, "| {} |", human_bytes(b));
            for l in &c.links {
                match l.points.iter().find(|p| p.bytes == b) {
                    Some(p) => {
                        let _ = write!(s, " {:.2} |", p.gbs);
                    }
                    None => {
                        let _ = write!(s, " |");
                    }
                }
            }
            let _ = writeln!(s);
        }
        let base = c
            .links
            .iter()
            .filter(|l| l.method == "d2h_pinned" || l.method == "h2d_pinned")
            .map(|l| l.bandwidth_gbs)
            .fold(f64::INFINITY, f64::min);
        if let Some(st) = c.links.iter().find(|l| l.method == "pcie_staged_pinned") {
            let _ = writeln!(
                s,
                "\nStaged GPU → host → GPU reaches {:.1} GB/s = {} of the slower single-direction pinned copy ({:.1} GB/s).",
                st.bandwidth_gbs,
                pct(st.bandwidth_gbs / base),
                base
            );
        }
        if !c.chunk_sweep.is_empty() {
            let _ = writeln!(
                s,
                "\nStaged copy of 256 MiB by chunk size (4 slots): {}",
                c.chunk_sweep
                    .iter()
                    .map(|(ch, g)| format!("{} → {:.1} GB/s", human_bytes(*ch), g))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !c.sharing.is_empty() {
        let _ = writeln!(
            s,
            "\n| sharing: method | concurrent | each | alone GB/s | together GB/s | each GB/s |\n|---|---|---|---|---|---|"
        );
        for r in &c.sharing {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {:.1} | {} |",
                r.method,
                r.concurrent,
                human_bytes(r.bytes_each),
                r.single_gbs,
                r.aggregate_gbs,
                r.per_transfer_gbs
                    .iter()
                    .map(|x| format!("{x:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !c.errors.is_empty() {
        let _ = writeln!(s, "\nProbes that failed:\n");
        for e in &c.errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    s
}

pub fn validate_markdown(rows: &[Row], command: &str) -> String {
    let mut s = String::new();
    if let Some(r) = rows.first() {
        let _ = writeln!(
            s,
            "Machine: {}  \nDate: {}  \nCommand: `{command}`  \nModel: {}, context s = {} tokens, GPU {} → GPU {}, median of {} repeats\n",
            r.machine, r.date, r.model, r.context_tokens, r.src_gpu, r.dst_gpu, r.repeats
        );
    }
    let _ = writeln!(
        s,
        "| L | payload | method | bytes | gather µs | transfer µs | GB/s | scatter µs | total µs | checksum src/dst µs | bit-exact | sim (calibrated) µs | error % | sim (datasheet) µs | error % |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let fmt = |p: f64, e: f64| {
            if p.is_finite() {
                (format!("{p:.1}"), format!("{e:+.1}"))
            } else {
                ("–".to_string(), "–".to_string())
            }
        };
        let (p, e) = fmt(r.predicted_us, r.error_pct);
        let (pd, ed) = fmt(r.predicted_datasheet_us, r.error_datasheet_pct);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {} | {p} | {e} | {pd} | {ed} |",
            r.layers,
            r.payload,
            r.method,
            r.bytes,
            r.gather_us,
            r.transfer_us,
            r.transfer_gbs,
            r.scatter_us,
            r.total_us,
            r.checksum_src_us,
            r.checksum_dst_us,
            r.bit_exact
        );
    }
    let rs = validate::ratios(rows);
    if !rs.is_empty() {
        let _ = writeln!(
            s,
            "\nO(L): D_KV / D_emb by depth, in bytes and in measured time:\n\n| L | method | bytes ratio | transfer-time ratio | total-time ratio (gather+send+scatter) |\n|---|---|---|---|---|"
        );
        for r in rs {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.1} |",
                r.layers, r.method, r.bytes_ratio, r.transfer_time_ratio, r.total_time_ratio
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(4096), "4 KiB");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(4_718_592), "4.50 MiB");
        assert_eq!(human_bytes(100), "100 B");
    }

    #[test]
    fn empty_calibration_renders() {
        let c = Calibration {
            machine: "m".into(),
            date: "d".into(),
            command: "c".into(),
            driver_version: 13000,
            driver: None,
            cublaslt_version: None,
            gpus: vec![],
            peers: vec![],
            compute: vec![],
            links: vec![],
            chunk_sweep: vec![],
            sharing: vec![],
            errors: vec!["x: y".into()],
        };
        let md = calibration_markdown(&c);
        assert!(md.contains("Machine: m"));
        assert!(md.contains("- x: y"));
    }
}
