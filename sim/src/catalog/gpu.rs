//! GPUs: datasheet numbers with their sources.
//!
//! Every number comes from `docs/reference/gpus.csv`, which names the page each was read from
//! (NVIDIA/AMD datasheets as quoted by stas00/ml-engineering, ai-dynamo/aiconfigurator, llm-analysis,
//! vendor product briefs); `docs/reference/gpus_SOURCES.md` expands the source keys. Memory is taken as GiB
//! (the "80 GB" card reports 81,920 MiB). Where the sources disagree the CSV's first-named value is
//! used. GeForce cards have no PCIe peer-to-peer: their transfers are staged through host memory.

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

#[allow(clippy::too_many_arguments)] // one row of the table below
const fn gpu(
    name: &'static str,
    arch: &'static str,
    memory_gib: f64,
    mem_bw_gbs: f64,
    tflops_16bit: f64,
    tflops_fp8: Option<f64>,
    power_w: f64,
    price_usd: Option<Quote>,
    cloud_usd_per_hour: Option<Quote>,
    nvlink: Option<&'static str>,
    pcie_gen: u8,
    pcie_p2p: bool,
) -> GpuSpec {
    GpuSpec {
        name,
        arch,
        memory_gib,
        mem_bw_gbs,
        tflops_16bit,
        tflops_fp8,
        power_w,
        price_usd,
        cloud_usd_per_hour,
        nvlink,
        pcie_gen,
        pcie_p2p,
    }
}

/// The catalog. Source keys refer to `docs/reference/gpus_SOURCES.md`.
pub static GPUS: [GpuSpec; 19] = [
    // [STAS-ACC], [AIC-h200_sxm], [MLC-H200]; MSRP [HFHW-h200] (estimate); $/h [SPHERON-BW].
    gpu(
        "H200-SXM",
        "Hopper",
        141.0,
        4800.0,
        989.0,
        Some(1979.0),
        700.0,
        quote(32000.0, "HFHW-h200", "n.d."),
        quote(4.54, "SPHERON-BW", "2026-03-17"),
        Some("nvlink4"),
        5,
        true,
    ),
    // [STAS-ACC], [AIC-h100_sxm], [GKW]; MSRP [HFHW-h100]; $/h [VIDUR-COST] CoreWeave 2024-02-07.
    gpu(
        "H100-SXM",
        "Hopper",
        80.0,
        3350.0,
        989.0,
        Some(1979.0),
        700.0,
        quote(30000.0, "HFHW-h100", "n.d."),
        quote(4.25, "VIDUR-COST", "2024-02-07"),
        Some("nvlink4"),
        5,
        true,
    ),
    // [AIC-h100_pcie], [H100PCIE-PB]; $/h [SKY-LAMBDA].
    gpu(
        "H100-PCIe",
        "Hopper",
        80.0,
        2000.0,
        756.0,
        Some(1513.0),
        350.0,
        None,
        quote(2.49, "SKY-LAMBDA", "n.d."),
        None,
        5,
        true,
    ),
    // [AIC-a100_sxm], [STAS-ACC]; MSRP [HFHW-a100] (estimate); $/h [VIDUR-COST].
    gpu(
        "A100-SXM-80GB",
        "Ampere",
        80.0,
        2039.0,
        312.0,
        None,
        400.0,
        quote(15000.0, "HFHW-a100", "n.d."),
        quote(2.21, "VIDUR-COST", "2024-02-07"),
        Some("nvlink3"),
        4,
        true,
    ),
    // [LLMA-a100-sxm-40gb], [LAMBDA-CSV]; $/h [SKY-LAMBDA] (8× box / 8).
    gpu(
        "A100-SXM-40GB",
        "Ampere",
        40.0,
        1555.0,
        312.0,
        None,
        400.0,
        None,
        quote(1.29, "SKY-LAMBDA", "n.d."),
        Some("nvlink3"),
        4,
        true,
    ),
    // [AIC-a100_pcie], [STAS-ACC]; $/h [SKY-RP].
    gpu(
        "A100-PCIe-80GB",
        "Ampere",
        80.0,
        1935.0,
        312.0,
        None,
        300.0,
        None,
        quote(1.99, "SKY-RP", "n.d."),
        None,
        4,
        true,
    ),
    // [STAS-ACC], [AIC-l40s]; MSRP [HFHW-l40s] (estimate); $/h [MODAL-L40S] (AWS G6e).
    gpu(
        "L40S",
        "Ada",
        48.0,
        864.0,
        362.0,
        Some(733.0),
        350.0,
        quote(8500.0, "HFHW-l40s", "n.d."),
        quote(1.861, "MODAL-L40S", "2025-08-12"),
        None,
        4,
        true,
    ),
    // [LV], [PL]; TDP from NVIDIA's L40 product brief (300 W) is not in the reference set: 300 W assumed.
    gpu(
        "L40",
        "Ada",
        48.0,
        864.0,
        181.0,
        None,
        300.0,
        None,
        quote(1.14, "SKY-RP", "n.d."),
        None,
        4,
        true,
    ),
    // [AIC-l4]; $/h [SKY-RP].
    gpu(
        "L4",
        "Ada",
        24.0,
        300.0,
        121.0,
        Some(242.0),
        72.0,
        None,
        quote(0.44, "SKY-RP", "n.d."),
        None,
        4,
        true,
    ),
    // [LLMA-a10g-pcie-24gb]; $/h [MEL]. TDP not in sources: 150 W as the A10 it derives from.
    gpu(
        "A10G",
        "Ampere",
        24.0,
        600.0,
        70.0,
        None,
        150.0,
        None,
        quote(1.01, "MEL", "n.d."),
        None,
        4,
        true,
    ),
    // [PL] (A10 datasheet), [TS].
    gpu(
        "A10", "Ampere", 24.0, 600.0, 125.0, None, 150.0, None, None, None, 4, true,
    ),
    // [A40-DS]; MSRP [HFHW-a40]; $/h [VIDUR-COST].
    gpu(
        "A40",
        "Ampere",
        48.0,
        696.0,
        149.7,
        None,
        300.0,
        quote(5500.0, "HFHW-a40", "n.d."),
        quote(1.28, "VIDUR-COST", "2024-02-07"),
        None,
        4,
        true,
    ),
    // [WAREDB-4090], [GIST-MS]; 450 W [TECHGOING]; $1,599 MSRP [PCG]; $/h [SKY-RP]. FP32-accumulate rate.
    gpu(
        "RTX-4090",
        "Ada",
        24.0,
        1008.0,
        165.2,
        Some(330.3),
        450.0,
        quote(1599.0, "PCG", "n.d."),
        quote(0.74, "SKY-RP", "n.d."),
        None,
        4,
        false,
    ),
    // [SPICE], [ARCHD]; $1,499 [TG]; $/h [SKY-RP].
    gpu(
        "RTX-3090",
        "Ampere",
        24.0,
        936.2,
        71.0,
        None,
        350.0,
        quote(1499.0, "TG", "n.d."),
        quote(0.44, "SKY-RP", "n.d."),
        None,
        4,
        false,
    ),
    // [SYSRQ], [LV]; $4,649 [SYSRQ]; $/h [SKY-LAMBDA].
    gpu(
        "RTX-A6000",
        "Ampere",
        48.0,
        768.0,
        154.8,
        None,
        300.0,
        quote(4649.0, "SYSRQ", "n.d."),
        quote(0.80, "SKY-LAMBDA", "n.d."),
        None,
        4,
        true,
    ),
    // [PL] (T4 datasheet): fp16 tensor 65; [SYSRQ-T4]; MSRP [HFHW-t4].
    gpu(
        "T4",
        "Turing",
        16.0,
        320.0,
        65.0,
        None,
        70.0,
        quote(2000.0, "HFHW-t4", "n.d."),
        None,
        None,
        3,
        true,
    ),
    // [PL] (V100 datasheet) fp16 tensor 125; [LLMA-v100-sxm-32gb]; $/h [SKY-LAMBDA] (16 GB part).
    gpu(
        "V100-SXM2-32GB",
        "Volta",
        32.0,
        900.0,
        125.0,
        None,
        300.0,
        None,
        quote(0.55, "SKY-LAMBDA", "n.d."),
        Some("nvlink2"),
        3,
        true,
    ),
    // [STAS-ACC] (DGX B200 datasheet); $/h [SPHERON-BW]. No purchase price in a dated source read.
    gpu(
        "B200",
        "Blackwell",
        180.0,
        8000.0,
        2250.0,
        Some(4500.0),
        1000.0,
        None,
        quote(6.03, "SPHERON-BW", "2026-03-17"),
        Some("nvlink5"),
        5,
        true,
    ),
    // [STAS-ACC], [GENZ]; $/h [CLIFF-MI300X] (Vultr). Infinity Fabric is not NVLink: no NVLink
    // link here. No purchase price in a dated source read.
    gpu(
        "MI300X",
        "CDNA3",
        192.0,
        5300.0,
        1307.0,
        Some(2610.0),
        750.0,
        None,
        quote(1.85, "CLIFF-MI300X", "2026-05-18"),
        None,
        5,
        true,
    ),
];

pub fn gpu_by_name(name: &str) -> Option<&'static GpuSpec> {
    GPUS.iter().find(|g| g.name.eq_ignore_ascii_case(name))
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
}
