//! GPUs: datasheet numbers with their sources.
//!
//! Every number comes from `docs/reference/gpus.csv`, which names the page each was read from
//! (NVIDIA/AMD datasheets as quoted by stas00/ml-engineering, ai-dynamo/aiconfigurator, llm-analysis,
//! vendor product briefs); `docs/reference/gpus_SOURCES.md` expands the source keys. Memory is taken as GiB
//! (the "80 GB" card reports 81,920 MiB). Where the sources disagree the CSV's first-named value is
//! used. GeForce cards have no PCIe peer-to-peer: their transfers are staged through host memory.
//!
//! The architecture facts (SMs, clocks, last-level cache) are for a performance model that
//! carries across GPUs: the tensor rate per SM per clock, `tflops_16bit` / (`sm_count` ×
//! `tensor_clock_mhz`), is the architecture's tensor-core width, halved where the part runs
//! 16-bit inputs with FP32 accumulate at half rate (GeForce, L40, A10G); the test below holds
//! every entry to it.

/// One GPU type.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSpec {
    pub name: &'static str,
    pub arch: &'static str,
    pub memory_gib: f64,
    /// HBM/GDDR bandwidth, GB/s (10⁹ bytes/s).
    pub mem_bw_gbs: f64,
    /// Dense 16-bit tensor throughput, TFLOP/s (bf16 where the chip has it, else fp16).
    pub tflops_16bit: f64,
    /// Dense fp8 tensor throughput, where the chip has fp8.
    pub tflops_fp8: Option<f64>,
    pub power_w: f64,
    /// Streaming multiprocessors enabled on the product (AMD: compute units).
    pub sm_count: u32,
    /// The highest boost clock the vendor quotes (nvidia-smi's max SM clock), MHz.
    pub boost_clock_mhz: f64,
    /// The clock `tflops_16bit` is quoted at, MHz: `tflops_16bit` = `sm_count` × the
    /// architecture's dense 16-bit tensor FLOP per SM per clock × this clock. Below the boost
    /// clock where a source gives a lower one (H100 SXM: 1830 against 1980 MHz) or the quoted
    /// rate implies one (H100 PCIe: 1620 against 1755 MHz), else equal to it.
    pub tensor_clock_mhz: f64,
    /// Last-level on-chip cache, MiB: the L2 on NVIDIA parts (H100's "50 MB" is 50 MiB; the
    /// H200, for which no vendor figure was found, as the driver reports it: 60 MiB), the
    /// 256 MiB Infinity Cache on MI300X (whose L2 is 4 MiB per XCD).
    pub l2_mib: f64,
    /// Launch / list price in USD, where a source gave one.
    pub price_usd: Option<Quote>,
    /// On-demand cloud price per GPU-hour, where a source gave one.
    pub cloud_usd_per_hour: Option<Quote>,
    /// NVLink generation of the SXM/OAM parts (a catalog link name).
    pub nvlink: Option<&'static str>,
    /// PCIe generation of the host link (x16).
    pub pcie_gen: u8,
    /// Peer-to-peer over PCIe (datacenter parts); GeForce parts stage through host memory.
    pub pcie_p2p: bool,
    /// The GPU this one is an SM partition of (`catalog::partition`), for catalog GPUs none.
    pub partition_of: Option<&'static GpuSpec>,
}

/// A price with where and when it was read: `source` is a key of
/// `docs/reference/gpus_SOURCES.md`, `date` the date the source gives for it (`n.d.`: none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    pub usd: f64,
    pub source: &'static str,
    pub date: &'static str,
}

const fn quote(usd: f64, source: &'static str, date: &'static str) -> Option<Quote> {
    Some(Quote { usd, source, date })
}

/// The catalog. Source keys refer to `docs/reference/gpus_SOURCES.md`.
pub static GPUS: [GpuSpec; 19] = [
    // [STAS-ACC], [AIC-h200_sxm], [MLC-H200]; MSRP [HFHW-h200] (estimate); $/h [SPHERON-BW].
    // arch [HETSIM-CAL], [TORCH-PROPS], [GKW].
    GpuSpec {
        name: "H200-SXM",
        arch: "Hopper",
        memory_gib: 141.0,
        mem_bw_gbs: 4800.0,
        tflops_16bit: 989.0,
        tflops_fp8: Some(1979.0),
        power_w: 700.0,
        sm_count: 132,
        boost_clock_mhz: 1980.0,
        tensor_clock_mhz: 1830.0,
        l2_mib: 60.0,
        price_usd: quote(32000.0, "HFHW-h200", "n.d."),
        cloud_usd_per_hour: quote(4.54, "SPHERON-BW", "2026-03-17"),
        nvlink: Some("nvlink4"),
        pcie_gen: 5,
        pcie_p2p: true,
        partition_of: None,
    },
    // [STAS-ACC], [AIC-h100_sxm], [GKW]; MSRP [HFHW-h100]; $/h [VIDUR-COST] CoreWeave 2024-02-07.
    // arch [HPCTECH-H100], [GKW], [HETSIM-CAL], [DEVQ].
    GpuSpec {
        name: "H100-SXM",
        arch: "Hopper",
        memory_gib: 80.0,
        mem_bw_gbs: 3350.0,
        tflops_16bit: 989.0,
        tflops_fp8: Some(1979.0),
        power_w: 700.0,
        sm_count: 132,
        boost_clock_mhz: 1980.0,
        tensor_clock_mhz: 1830.0,
        l2_mib: 50.0,
        price_usd: quote(30000.0, "HFHW-h100", "n.d."),
        cloud_usd_per_hour: quote(4.25, "VIDUR-COST", "2024-02-07"),
        nvlink: Some("nvlink4"),
        pcie_gen: 5,
        pcie_p2p: true,
        partition_of: None,
    },
    // [AIC-h100_pcie], [H100PCIE-PB]; $/h [SKY-LAMBDA].
    // arch [HPCTECH-H100], [CNC-H100]; tensor clock [TENSOR-IMPLIED].
    GpuSpec {
        name: "H100-PCIe",
        arch: "Hopper",
        memory_gib: 80.0,
        mem_bw_gbs: 2000.0,
        tflops_16bit: 756.0,
        tflops_fp8: Some(1513.0),
        power_w: 350.0,
        sm_count: 114,
        boost_clock_mhz: 1755.0,
        tensor_clock_mhz: 1620.0,
        l2_mib: 50.0,
        price_usd: None,
        cloud_usd_per_hour: quote(2.49, "SKY-LAMBDA", "n.d."),
        nvlink: None,
        pcie_gen: 5,
        pcie_p2p: true,
        partition_of: None,
    },
    // [AIC-a100_sxm], [STAS-ACC]; MSRP [HFHW-a100] (estimate); $/h [VIDUR-COST].
    // arch [TORCH-PROPS], [GKW-A100], [TPU-A100].
    GpuSpec {
        name: "A100-SXM-80GB",
        arch: "Ampere",
        memory_gib: 80.0,
        mem_bw_gbs: 2039.0,
        tflops_16bit: 312.0,
        tflops_fp8: None,
        power_w: 400.0,
        sm_count: 108,
        boost_clock_mhz: 1410.0,
        tensor_clock_mhz: 1410.0,
        l2_mib: 40.0,
        price_usd: quote(15000.0, "HFHW-a100", "n.d."),
        cloud_usd_per_hour: quote(2.21, "VIDUR-COST", "2024-02-07"),
        nvlink: Some("nvlink3"),
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [LLMA-a100-sxm-40gb], [LAMBDA-CSV]; $/h [SKY-LAMBDA] (8× box / 8).
    // arch [TPU-A100], [CNC-H100].
    GpuSpec {
        name: "A100-SXM-40GB",
        arch: "Ampere",
        memory_gib: 40.0,
        mem_bw_gbs: 1555.0,
        tflops_16bit: 312.0,
        tflops_fp8: None,
        power_w: 400.0,
        sm_count: 108,
        boost_clock_mhz: 1410.0,
        tensor_clock_mhz: 1410.0,
        l2_mib: 40.0,
        price_usd: None,
        cloud_usd_per_hour: quote(1.29, "SKY-LAMBDA", "n.d."),
        nvlink: Some("nvlink3"),
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [AIC-a100_pcie], [STAS-ACC]; $/h [SKY-RP].
    // arch [DEVQ], [SYSRQ-A100PCIE].
    GpuSpec {
        name: "A100-PCIe-80GB",
        arch: "Ampere",
        memory_gib: 80.0,
        mem_bw_gbs: 1935.0,
        tflops_16bit: 312.0,
        tflops_fp8: None,
        power_w: 300.0,
        sm_count: 108,
        boost_clock_mhz: 1410.0,
        tensor_clock_mhz: 1410.0,
        l2_mib: 40.0,
        price_usd: None,
        cloud_usd_per_hour: quote(1.99, "SKY-RP", "n.d."),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [STAS-ACC], [AIC-l40s]; MSRP [HFHW-l40s] (estimate); $/h [MODAL-L40S] (AWS G6e).
    // arch [DEVQ], [TORCH-PROPS], [TPU-L40S].
    GpuSpec {
        name: "L40S",
        arch: "Ada",
        memory_gib: 48.0,
        mem_bw_gbs: 864.0,
        tflops_16bit: 362.0,
        tflops_fp8: Some(733.0),
        power_w: 350.0,
        sm_count: 142,
        boost_clock_mhz: 2520.0,
        tensor_clock_mhz: 2520.0,
        l2_mib: 96.0,
        price_usd: quote(8500.0, "HFHW-l40s", "n.d."),
        cloud_usd_per_hour: quote(1.861, "MODAL-L40S", "2025-08-12"),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [LV], [PL]; TDP from NVIDIA's L40 product brief (300 W) is not in the reference set: 300 W assumed.
    // arch [ARXIV-L40], [TOPCPU-L40], [PCPARTDB-L40].
    GpuSpec {
        name: "L40",
        arch: "Ada",
        memory_gib: 48.0,
        mem_bw_gbs: 864.0,
        tflops_16bit: 181.0,
        tflops_fp8: None,
        power_w: 300.0,
        sm_count: 142,
        boost_clock_mhz: 2490.0,
        tensor_clock_mhz: 2490.0,
        l2_mib: 96.0,
        price_usd: None,
        cloud_usd_per_hour: quote(1.14, "SKY-RP", "n.d."),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [AIC-l4]; $/h [SKY-RP].
    // arch [DEVQ], [FPSBENCH-L4].
    GpuSpec {
        name: "L4",
        arch: "Ada",
        memory_gib: 24.0,
        mem_bw_gbs: 300.0,
        tflops_16bit: 121.0,
        tflops_fp8: Some(242.0),
        power_w: 72.0,
        sm_count: 58,
        boost_clock_mhz: 2040.0,
        tensor_clock_mhz: 2040.0,
        l2_mib: 48.0,
        price_usd: None,
        cloud_usd_per_hour: quote(0.44, "SKY-RP", "n.d."),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [LLMA-a10g-pcie-24gb]; $/h [MEL]. TDP not in sources: 150 W as the A10 it derives from.
    // arch [TORCH-PROPS], [DEVQ].
    GpuSpec {
        name: "A10G",
        arch: "Ampere",
        memory_gib: 24.0,
        mem_bw_gbs: 600.0,
        tflops_16bit: 70.0,
        tflops_fp8: None,
        power_w: 150.0,
        sm_count: 80,
        boost_clock_mhz: 1710.0,
        tensor_clock_mhz: 1710.0,
        l2_mib: 6.0,
        price_usd: None,
        cloud_usd_per_hour: quote(1.01, "MEL", "n.d."),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [PL] (A10 datasheet), [TS].
    // arch [SYSRQ-A10], [DEVQ].
    GpuSpec {
        name: "A10",
        arch: "Ampere",
        memory_gib: 24.0,
        mem_bw_gbs: 600.0,
        tflops_16bit: 125.0,
        tflops_fp8: None,
        power_w: 150.0,
        sm_count: 72,
        boost_clock_mhz: 1695.0,
        tensor_clock_mhz: 1695.0,
        l2_mib: 6.0,
        price_usd: None,
        cloud_usd_per_hour: None,
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [A40-DS]; MSRP [HFHW-a40]; $/h [VIDUR-COST].
    // arch [A40-DS], [HMC-A40], [GA10X-GIST].
    GpuSpec {
        name: "A40",
        arch: "Ampere",
        memory_gib: 48.0,
        mem_bw_gbs: 696.0,
        tflops_16bit: 149.7,
        tflops_fp8: None,
        power_w: 300.0,
        sm_count: 84,
        boost_clock_mhz: 1740.0,
        tensor_clock_mhz: 1740.0,
        l2_mib: 6.0,
        price_usd: quote(5500.0, "HFHW-a40", "n.d."),
        cloud_usd_per_hour: quote(1.28, "VIDUR-COST", "2024-02-07"),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [WAREDB-4090], [GIST-MS]; 450 W [TECHGOING]; $1,599 MSRP [PCG]; $/h [SKY-RP]. FP32-accumulate rate.
    // arch [TORCH-PROPS], [TH-4090].
    GpuSpec {
        name: "RTX-4090",
        arch: "Ada",
        memory_gib: 24.0,
        mem_bw_gbs: 1008.0,
        tflops_16bit: 165.2,
        tflops_fp8: Some(330.3),
        power_w: 450.0,
        sm_count: 128,
        boost_clock_mhz: 2520.0,
        tensor_clock_mhz: 2520.0,
        l2_mib: 72.0,
        price_usd: quote(1599.0, "PCG", "n.d."),
        cloud_usd_per_hour: quote(0.74, "SKY-RP", "n.d."),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: false,
        partition_of: None,
    },
    // [SPICE], [ARCHD]; $1,499 [TG]; $/h [SKY-RP].
    // arch [TH-3090].
    GpuSpec {
        name: "RTX-3090",
        arch: "Ampere",
        memory_gib: 24.0,
        mem_bw_gbs: 936.2,
        tflops_16bit: 71.0,
        tflops_fp8: None,
        power_w: 350.0,
        sm_count: 82,
        boost_clock_mhz: 1695.0,
        tensor_clock_mhz: 1695.0,
        l2_mib: 6.0,
        price_usd: quote(1499.0, "TG", "n.d."),
        cloud_usd_per_hour: quote(0.44, "SKY-RP", "n.d."),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: false,
        partition_of: None,
    },
    // [SYSRQ], [LV]; $4,649 [SYSRQ]; $/h [SKY-LAMBDA].
    // arch [SYSRQ].
    GpuSpec {
        name: "RTX-A6000",
        arch: "Ampere",
        memory_gib: 48.0,
        mem_bw_gbs: 768.0,
        tflops_16bit: 154.8,
        tflops_fp8: None,
        power_w: 300.0,
        sm_count: 84,
        boost_clock_mhz: 1800.0,
        tensor_clock_mhz: 1800.0,
        l2_mib: 6.0,
        price_usd: quote(4649.0, "SYSRQ", "n.d."),
        cloud_usd_per_hour: quote(0.80, "SKY-LAMBDA", "n.d."),
        nvlink: None,
        pcie_gen: 4,
        pcie_p2p: true,
        partition_of: None,
    },
    // [PL] (T4 datasheet): fp16 tensor 65; [SYSRQ-T4]; MSRP [HFHW-t4].
    // arch [DEVQ-T4].
    GpuSpec {
        name: "T4",
        arch: "Turing",
        memory_gib: 16.0,
        mem_bw_gbs: 320.0,
        tflops_16bit: 65.0,
        tflops_fp8: None,
        power_w: 70.0,
        sm_count: 40,
        boost_clock_mhz: 1590.0,
        tensor_clock_mhz: 1590.0,
        l2_mib: 4.0,
        price_usd: quote(2000.0, "HFHW-t4", "n.d."),
        cloud_usd_per_hour: None,
        nvlink: None,
        pcie_gen: 3,
        pcie_p2p: true,
        partition_of: None,
    },
    // [PL] (V100 datasheet) fp16 tensor 125; [LLMA-v100-sxm-32gb]; $/h [SKY-LAMBDA] (16 GB part).
    // arch [DEVQ], [TECHRIVAL-V100].
    GpuSpec {
        name: "V100-SXM2-32GB",
        arch: "Volta",
        memory_gib: 32.0,
        mem_bw_gbs: 900.0,
        tflops_16bit: 125.0,
        tflops_fp8: None,
        power_w: 300.0,
        sm_count: 80,
        boost_clock_mhz: 1530.0,
        tensor_clock_mhz: 1530.0,
        l2_mib: 6.0,
        price_usd: None,
        cloud_usd_per_hour: quote(0.55, "SKY-LAMBDA", "n.d."),
        nvlink: Some("nvlink2"),
        pcie_gen: 3,
        pcie_p2p: true,
        partition_of: None,
    },
    // [STAS-ACC] (DGX B200 datasheet); $/h [SPHERON-BW]. No purchase price in a dated source read.
    // arch [TORCH-PROPS], [CNC-B200], [HMC-B200].
    GpuSpec {
        name: "B200",
        arch: "Blackwell",
        memory_gib: 180.0,
        mem_bw_gbs: 8000.0,
        tflops_16bit: 2250.0,
        tflops_fp8: Some(4500.0),
        power_w: 1000.0,
        sm_count: 148,
        boost_clock_mhz: 1980.0,
        tensor_clock_mhz: 1860.0,
        l2_mib: 126.0,
        price_usd: None,
        cloud_usd_per_hour: quote(6.03, "SPHERON-BW", "2026-03-17"),
        nvlink: Some("nvlink5"),
        pcie_gen: 5,
        pcie_p2p: true,
        partition_of: None,
    },
    // [STAS-ACC], [GENZ]; $/h [CLIFF-MI300X] (Vultr). Infinity Fabric is not NVLink: no NVLink
    // link here. No purchase price in a dated source read.
    // arch [ROCMINFO], [ROCM-MI300], [STH-MI300X].
    GpuSpec {
        name: "MI300X",
        arch: "CDNA3",
        memory_gib: 192.0,
        mem_bw_gbs: 5300.0,
        tflops_16bit: 1307.0,
        tflops_fp8: Some(2610.0),
        power_w: 750.0,
        sm_count: 304,
        boost_clock_mhz: 2100.0,
        tensor_clock_mhz: 2100.0,
        l2_mib: 256.0,
        price_usd: None,
        cloud_usd_per_hour: quote(1.85, "CLIFF-MI300X", "2026-05-18"),
        nvlink: None,
        pcie_gen: 5,
        pcie_p2p: true,
        partition_of: None,
    },
];

/// A catalog GPU, or an SM partition of one named `<GPU>@<SMs>sm` (`catalog::partition`).
pub fn gpu_by_name(name: &str) -> Option<&'static GpuSpec> {
    match name.split_once('@') {
        Some(_) => super::partition::by_name(name).ok(),
        None => GPUS.iter().find(|g| g.name.eq_ignore_ascii_case(name)),
    }
}

impl GpuSpec {
    pub fn memory_bytes(&self) -> f64 {
        self.memory_gib * (1u64 << 30) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/reference/gpus.csv`, the datasheet table with sources: one row per GPU, the
    /// columns up to `cloud_usd_per_hour` (the last column, free text with commas, is left out).
    fn datasheet() -> Vec<std::collections::BTreeMap<String, String>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference/gpus.csv");
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let kept = header.iter().position(|h| *h == "source_notes").unwrap();
        lines
            .map(|l| {
                header[..kept]
                    .iter()
                    .zip(l.splitn(kept + 1, ','))
                    .map(|(h, v)| (h.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    fn number(row: &std::collections::BTreeMap<String, String>, field: &str) -> Option<f64> {
        row[field].parse().ok()
    }

    /// Every catalog number that the datasheet table states is the table's number, and every
    /// GPU of the table is in the catalog but the one the sources give no tensor rate for; where
    /// the table is silent the catalog says why in a comment (e.g. the A10G's power).
    #[test]
    fn catalog_agrees_with_the_datasheet_table() {
        const NO_TENSOR_RATE: &str = "RTX 6000 Ada";
        let rows = datasheet();
        let sources = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/reference/gpus_SOURCES.md"
        ))
        .unwrap();
        assert_eq!(
            rows.len(),
            GPUS.len() + 1,
            "one catalog entry per datasheet row"
        );
        for row in rows.iter().filter(|r| r["name"] != NO_TENSOR_RATE) {
            let g = gpu_by_name(&row["name"].replace(' ', "-")).unwrap_or_else(|| {
                panic!("{} is in the datasheet table, not the catalog", row["name"])
            });
            let n = g.name;
            let checks = [
                ("memory_gb", Some(g.memory_gib)),
                ("mem_bw_gbps", Some(g.mem_bw_gbs)),
                ("fp8_dense_tflops", g.tflops_fp8),
                ("tdp_w", Some(g.power_w)),
            ];
            for (field, ours) in checks {
                if let Some(v) = number(row, field) {
                    assert_eq!(ours, Some(v), "{n}: {field}");
                }
            }
            // The architecture facts are in the table for every catalog GPU, with sources.
            let arch = [
                ("sm_count", f64::from(g.sm_count)),
                ("boost_clock_mhz", g.boost_clock_mhz),
                ("tensor_clock_mhz", g.tensor_clock_mhz),
                ("l2_mib", g.l2_mib),
            ];
            for (field, ours) in arch {
                assert_eq!(number(row, field), Some(ours), "{n}: {field}");
            }
            let arch_sources: Vec<&str> = row["arch_sources"].split_whitespace().collect();
            assert!(!arch_sources.is_empty(), "{n}: no arch_sources");
            for key in arch_sources {
                assert!(
                    sources.contains(&format!("[{key}]")),
                    "{n}: arch source [{key}] not in gpus_SOURCES.md"
                );
            }
            // A price is in the catalog exactly when the table has one, with its source and date.
            let prices = [
                ("launch_price_usd", "price", g.price_usd),
                ("cloud_usd_per_hour", "cloud", g.cloud_usd_per_hour),
            ];
            for (field, prefix, ours) in prices {
                let theirs = number(row, field).map(|usd| {
                    (
                        usd,
                        row[&format!("{prefix}_source")].clone(),
                        row[&format!("{prefix}_date")].clone(),
                    )
                });
                let ours = ours.map(|q| (q.usd, q.source.to_string(), q.date.to_string()));
                assert_eq!(ours, theirs, "{n}: {field}");
                // A key is listed itself or as a family, `[HFHW-<x>]` for `HFHW-h200`.
                if let Some((_, key, _)) = theirs {
                    let family = key.split('-').next().unwrap_or_default();
                    assert!(
                        sources.contains(&format!("[{key}]"))
                            || sources.contains(&format!("[{family}-<x>]")),
                        "{n}: source [{key}] not in gpus_SOURCES.md"
                    );
                }
            }
            let tensor = number(row, "bf16_dense_tflops").or(number(row, "fp16_dense_tflops"));
            if let Some(v) = tensor {
                assert_eq!(g.tflops_16bit, v, "{n}: 16-bit dense TFLOP/s");
            }
        }
    }

    /// Dense 16-bit tensor FLOP per SM per clock of the entry's architecture, as the rates in
    /// the architecture documents give it (gpus.csv `ARCH:` notes): Volta and Turing 8 tensor
    /// cores × 64 FMA; Ampere GA100 (A100) 2048 and GA10x 1024 (RTX 3090's 142 TFLOPS with FP16
    /// accumulate = 82 × 1024 × 1695 MHz); Ada 1024 (RTX 4090's 330 = 128 × 1024 × 2520);
    /// Hopper 4096 (989.4 = 132 × 4096 × 1830); Blackwell 8192 (B200 at its 1860 MHz tensor
    /// clock); CDNA3 2048 per CU (MI300A's 980.6 = 228 × 2048 × 2100). Parts that run 16-bit
    /// inputs with FP32 accumulate at half rate are quoted at half: the GeForce cards, and by
    /// their own spec sheets the L40 (half the L40S on the same die) and the A10G.
    fn tensor_flop_per_sm_clock(g: &GpuSpec) -> f64 {
        let full = match g.arch {
            "Volta" | "Turing" | "Ada" => 1024.0,
            "Ampere" if g.name.starts_with("A100") => 2048.0,
            "Ampere" => 1024.0,
            "Hopper" => 4096.0,
            "Blackwell" => 8192.0,
            "CDNA3" => 2048.0,
            other => panic!("{}: no tensor width known for {other}", g.name),
        };
        let half_rate_fp32_accumulate = matches!(g.name, "RTX-4090" | "RTX-3090" | "L40" | "A10G");
        if half_rate_fp32_accumulate {
            full / 2.0
        } else {
            full
        }
    }

    /// Every catalog tensor rate is its SMs × its architecture's tensor width × its tensor
    /// clock within 2 %, and no tensor clock is above the boost clock. A tensor clock that no
    /// source states (`[TENSOR-IMPLIED]` in the table) was back-computed from this width, so
    /// it is held only to the boost clock.
    #[test]
    fn tensor_rate_is_sms_times_width_times_clock() {
        let rows = datasheet();
        for g in &GPUS {
            let n = g.name;
            assert!(
                g.tensor_clock_mhz <= g.boost_clock_mhz,
                "{n}: tensor clock {} MHz above the boost clock {} MHz",
                g.tensor_clock_mhz,
                g.boost_clock_mhz
            );
            let row = rows
                .iter()
                .find(|r| r["name"].replace(' ', "-").eq_ignore_ascii_case(n))
                .unwrap_or_else(|| panic!("{n} is not in the datasheet table"));
            if row["arch_sources"]
                .split_whitespace()
                .any(|k| k == "TENSOR-IMPLIED")
            {
                continue;
            }
            let per_sm_clock =
                g.tflops_16bit * 1e12 / (f64::from(g.sm_count) * g.tensor_clock_mhz * 1e6);
            let width = tensor_flop_per_sm_clock(g);
            assert!(
                (per_sm_clock / width - 1.0).abs() <= 0.02,
                "{n}: {per_sm_clock:.0} dense 16-bit FLOP per SM per clock, {width} for its architecture"
            );
        }
    }
}
