//! Map what the driver reports to the simulator's catalog (hetsim-sim), whose datasheet numbers
//! (docs/reference/gpus.csv, links.csv) every measurement is compared against.

use hetsim_sim::catalog::{GpuSpec, LinkSpec, gpu_by_name, link_by_name};

/// Driver-name patterns → catalog GPU names, most specific first.
const NAMES: &[(&str, &str)] = &[
    ("H200", "H200-SXM"),
    ("H100 PCIe", "H100-PCIe"),
    ("H100", "H100-SXM"),
    ("A100-SXM4-80GB", "A100-SXM-80GB"),
    ("A100-SXM4-40GB", "A100-SXM-40GB"),
    ("A100 80GB PCIe", "A100-PCIe-80GB"),
    ("L40S", "L40S"),
    ("L40", "L40"),
    ("L4", "L4"),
    ("A10G", "A10G"),
    ("A10", "A10"),
    ("A40", "A40"),
    ("RTX 4090", "RTX-4090"),
    ("RTX 3090", "RTX-3090"),
];

/// The catalog entry for a driver-reported name such as "NVIDIA H200" or "NVIDIA H100 80GB HBM3".
pub fn gpu_spec(reported: &str) -> Option<&'static GpuSpec> {
    NAMES
        .iter()
        .find(|(pat, _)| reported.contains(pat))
        .and_then(|(_, name)| gpu_by_name(name))
}

/// Datasheet per-direction bandwidth (GB/s) of a catalog link.
pub fn link_peak_gbs(link: &str) -> Option<f64> {
    link_by_name(link).map(|l| l.peak_gbs)
}

/// The catalog link for how two GPUs of this model reach each other. `kind` is "nvlink" or
/// "pcie"; `host_staged` for copies through pinned host memory. Falls back to Hopper's links
/// (NVLink 4, PCIe Gen5) for a GPU the catalog does not know.
pub fn link_spec(reported_gpu: &str, kind: &str, host_staged: bool) -> &'static LinkSpec {
    let g = gpu_spec(reported_gpu);
    let name = if kind == "nvlink" {
        g.and_then(|g| g.nvlink).unwrap_or("nvlink4").to_string()
    } else {
        format!(
            "pcie{}{}",
            g.map(|g| g.pcie_gen).unwrap_or(5),
            if host_staged { "-host-staged" } else { "" }
        )
    };
    link_by_name(&name).unwrap_or_else(|| {
        link_by_name(if kind == "nvlink" {
            "nvlink4"
        } else if host_staged {
            "pcie5-host-staged"
        } else {
            "pcie5"
        })
        .expect("the sim catalog has nvlink4, pcie5 and pcie5-host-staged")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_sim_catalog() {
        assert_eq!(gpu_spec("NVIDIA H200").unwrap().name, "H200-SXM");
        assert_eq!(gpu_spec("NVIDIA H100 80GB HBM3").unwrap().name, "H100-SXM");
        assert_eq!(gpu_spec("NVIDIA H100 PCIe").unwrap().name, "H100-PCIe");
        assert_eq!(
            gpu_spec("NVIDIA GeForce RTX 4090").unwrap().name,
            "RTX-4090"
        );
        assert!(gpu_spec("Some Future GPU").is_none());
        assert_eq!(link_spec("NVIDIA H200", "nvlink", false).name, "nvlink4");
        assert_eq!(
            link_spec("NVIDIA H200", "pcie", true).name,
            "pcie5-host-staged"
        );
        assert_eq!(link_spec("NVIDIA H200", "pcie", false).name, "pcie5");
        assert_eq!(
            link_spec("NVIDIA A100-SXM4-80GB", "nvlink", false).name,
            "nvlink3"
        );
        assert_eq!(link_spec("unknown", "pcie", true).name, "pcie5-host-staged");
        assert_eq!(link_peak_gbs("nvlink4"), Some(450.0));
    }
}
