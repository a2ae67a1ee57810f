//! The hardware profile that `calibrate` writes and `hetsim run` reads.
//!
//! Interim type: the simulator's own profile type (sim/src/profile.rs) replaces this one when it
//! lands on main. Field names follow the agreed shape.

use crate::error::{Error, Result, io_err};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareProfile {
    /// what machine the numbers came from (GPU count × name, driver)
    pub machine: String,
    /// UTC date and time of the run (RFC 3339)
    pub date: String,
    /// the exact command line
    pub command: String,
    pub gpus: Vec<GpuProfile>,
    pub links: Vec<LinkProfile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuProfile {
    /// the simulator catalog's GPU name, e.g. "H200 SXM"
    pub catalog_gpu: String,
    /// what the driver calls it, e.g. "NVIDIA H200"
    pub reported_name: String,
    /// best measured bf16 GEMM rate (large square GEMM)
    pub gemm_tflops: f64,
    /// gemm_tflops / datasheet dense bf16 peak
    pub gemm_efficiency: f64,
    /// measured HBM bandwidth: bytes read + written by a device copy (best of our copy kernel
    /// and cuMemcpyDtoD)
    pub hbm_gbs: f64,
    /// hbm_gbs / datasheet bandwidth
    pub memory_efficiency: f64,
    /// per-kernel cost of back-to-back tiny kernels (host launch rate bound), µs
    pub launch_overhead_us: f64,
    pub gemm_points: Vec<GemmPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmPoint {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub tflops: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkProfile {
    /// the simulator catalog's link id, e.g. "nvlink4", "pcie5_x16"
    pub catalog_link: String,
    /// how it was measured (nvlink_peer, pcie_staged_pinned, ...)
    pub method: String,
    pub bandwidth_gbs: f64,
    pub latency_us: f64,
    pub points: Vec<LinkPointProfile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkPointProfile {
    pub bytes: u64,
    pub gbs: f64,
}

impl HardwareProfile {
    pub fn to_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(self).map_err(|e| Error::Invalid(format!("cannot serialise profile: {e}")))
    }
    pub fn from_yaml(s: &str) -> Result<HardwareProfile> {
        serde_saphyr::from_str(s).map_err(|e| Error::Invalid(format!("bad profile YAML: {e}")))
    }
    /// Write atomically (temp file + rename): never a half-written profile.
    pub fn write(&self, path: &Path) -> Result<()> {
        let y = self.to_yaml()?;
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, y).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    }
    pub fn read(path: &Path) -> Result<HardwareProfile> {
        let s = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        Self::from_yaml(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_round_trip() {
        let p = HardwareProfile {
            machine: "1x NVIDIA H200".into(),
            date: "2026-11-21T00:00:00Z".into(),
            command: "hetsim-exec calibrate --out p.yaml".into(),
            gpus: vec![GpuProfile {
                catalog_gpu: "H200 SXM".into(),
                reported_name: "NVIDIA H200".into(),
                gemm_tflops: 780.5,
                gemm_efficiency: 0.789,
                hbm_gbs: 4300.0,
                memory_efficiency: 0.896,
                launch_overhead_us: 2.5,
                gemm_points: vec![GemmPoint { m: 1, n: 4096, k: 4096, tflops: 3.2 }],
            }],
            links: vec![LinkProfile {
                catalog_link: "nvlink4".into(),
                method: "nvlink_peer".into(),
                bandwidth_gbs: 390.0,
                latency_us: 9.5,
                points: vec![LinkPointProfile { bytes: 4096, gbs: 0.4 }],
            }],
        };
        let y = p.to_yaml().unwrap();
        assert_eq!(HardwareProfile::from_yaml(&y).unwrap(), p);
        let dir = std::env::temp_dir().join(format!("hetsim-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.yaml");
        p.write(&f).unwrap();
        assert_eq!(HardwareProfile::read(&f).unwrap(), p);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_yaml_is_invalid_input() {
        let e = HardwareProfile::from_yaml("machine: [").unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
