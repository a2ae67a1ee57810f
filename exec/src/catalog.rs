//! Map what the driver reports to the simulator's catalog names, with the datasheet limits we
//! compare measurements against. Numbers from ../shared/reference/gpus.csv and links.csv (dense
//! bf16, HBM bandwidth, per-direction link bandwidth). To be replaced by sim's catalog once the
//! harness depends on hetsim-sim.

/// Datasheet facts for one catalog GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    pub catalog: &'static str,
    pub bf16_dense_tflops: f64,
    pub hbm_gbs: f64,
}

const SPECS: &[(&str, GpuSpec)] = &[
    ("H200", GpuSpec { catalog: "H200 SXM", bf16_dense_tflops: 989.0, hbm_gbs: 4800.0 }),
    ("H100 80GB HBM3", GpuSpec { catalog: "H100 SXM", bf16_dense_tflops: 989.0, hbm_gbs: 3350.0 }),
    ("H100 PCIe", GpuSpec { catalog: "H100 PCIe", bf16_dense_tflops: 756.0, hbm_gbs: 2000.0 }),
    ("A100-SXM4-80GB", GpuSpec { catalog: "A100 SXM 80GB", bf16_dense_tflops: 312.0, hbm_gbs: 2039.0 }),
    ("A100-SXM4-40GB", GpuSpec { catalog: "A100 SXM 40GB", bf16_dense_tflops: 312.0, hbm_gbs: 1555.0 }),
    ("A100 80GB PCIe", GpuSpec { catalog: "A100 PCIe 80GB", bf16_dense_tflops: 312.0, hbm_gbs: 1935.0 }),
    ("L40S", GpuSpec { catalog: "L40S", bf16_dense_tflops: 362.0, hbm_gbs: 864.0 }),
    ("RTX 4090", GpuSpec { catalog: "RTX 4090", bf16_dense_tflops: 165.2, hbm_gbs: 1008.0 }),
];

/// The catalog entry for a driver-reported name such as "NVIDIA H200" or "NVIDIA H100 80GB HBM3".
pub fn gpu_spec(reported: &str) -> Option<GpuSpec> {
    SPECS.iter().find(|(pat, _)| reported.contains(pat)).map(|(_, s)| *s)
}

/// Datasheet per-direction bandwidth (GB/s) of a catalog link id.
pub fn link_peak_gbs(link: &str) -> Option<f64> {
    match link {
        "nvlink4" => Some(450.0),
        "nvlink3" => Some(300.0),
        "pcie5_x16" => Some(63.0),
        "pcie4_x16" => Some(31.5),
        _ => None,
    }
}

/// Catalog link id for a measured connection. `kind` is "nvlink" or "pcie"; `cc` the compute
/// capability of the GPUs (Hopper 9.x: NVLink 4 / PCIe Gen5; Ampere 8.0: NVLink 3 / PCIe Gen4).
pub fn link_id(kind: &str, cc: (i32, i32)) -> String {
    match (kind, cc.0) {
        ("nvlink", 9) => "nvlink4".into(),
        ("nvlink", 8) => "nvlink3".into(),
        ("nvlink", _) => "nvlink".into(),
        (_, 9) => "pcie5_x16".into(),
        (_, 8) => "pcie4_x16".into(),
        _ => "pcie".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map() {
        assert_eq!(gpu_spec("NVIDIA H200").unwrap().catalog, "H200 SXM");
        assert_eq!(gpu_spec("NVIDIA H100 80GB HBM3").unwrap().catalog, "H100 SXM");
        assert_eq!(gpu_spec("NVIDIA GeForce RTX 4090").unwrap().catalog, "RTX 4090");
        assert!(gpu_spec("Some Future GPU").is_none());
        assert_eq!(link_id("nvlink", (9, 0)), "nvlink4");
        assert_eq!(link_id("pcie", (9, 0)), "pcie5_x16");
        assert_eq!(link_peak_gbs("nvlink4"), Some(450.0));
    }
}
