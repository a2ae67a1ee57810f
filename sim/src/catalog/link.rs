//! Links: per-direction bandwidth, the share of it transfers achieve, and latency.
//!
//! Peak numbers from `docs/reference/links.csv` (PCIe spec arithmetic, NVLink tables of
//! stas00/ml-engineering, IEEE line rates). Efficiencies: PCIe Gen5 pinned host↔device measured
//! 55 GB/s of 63 (0.87) and NVLink 4 peer copy 386–396 GB/s of 450 (0.86–0.88) on this project's
//! H200 machines; networks use the ~80 % rule of thumb in the same reference. Latencies are the
//! software + wire cost of one transfer (a `cudaMemcpyAsync` is a few µs; an RDMA op ~2 µs + IB
//! switch 0.6 µs).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// GPU-to-GPU over PCIe: peer-to-peer, or staged through pinned host memory.
    Pcie,
    NvLink,
    /// Between nodes (Ethernet/RoCE or InfiniBand).
    Network,
    /// Between SM partitions of one GPU: a copy through its own memory (`catalog::partition`).
    OnDevice,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    pub name: &'static str,
    pub kind: LinkKind,
    /// Theoretical bandwidth per direction, GB/s.
    pub peak_gbs: f64,
    /// Achieved / peak for large transfers.
    pub efficiency: f64,
    pub latency_us: f64,
    /// GPU → pinned host buffer → GPU, pipelined in chunks: the first chunk's time is added.
    pub host_staged: bool,
}

/// Chunk of the double-buffered host-staged copy: a quarter of the message in whole 64 KiB (so
/// every chunk starts aligned), 256 KiB to 16 MiB, never more than the message. The one rule: the
/// harness chunks its staged copies with it (`hetsim_exec::cuda::staging::staged_chunk`) and the
/// model charges one chunk of pipeline fill. With a fixed 4 MiB chunk the model over-predicted a
/// 4.7 MB staged embedding by 43 % on 2×H200 (exec/REPORT.md).
pub fn staging_chunk_bytes(bytes: u64) -> u64 {
    bytes
        .div_ceil(4)
        .next_multiple_of(64 << 10)
        .clamp(256 << 10, 16 << 20)
        .min(bytes)
}

const fn link(
    name: &'static str,
    kind: LinkKind,
    peak_gbs: f64,
    efficiency: f64,
    latency_us: f64,
    host_staged: bool,
) -> LinkSpec {
    LinkSpec {
        name,
        kind,
        peak_gbs,
        efficiency,
        latency_us,
        host_staged,
    }
}

use LinkKind::*;

pub static LINKS: [LinkSpec; 17] = [
    // PCIe x16: 8/16/32 GT/s × 16 lanes × 128b/130b.
    link("pcie3", Pcie, 15.75, 0.85, 5.0, false),
    link("pcie4", Pcie, 31.5, 0.85, 5.0, false),
    link("pcie5", Pcie, 63.0, 0.87, 5.0, false),
    link("pcie3-host-staged", Pcie, 15.75, 0.85, 10.0, true),
    link("pcie4-host-staged", Pcie, 31.5, 0.85, 10.0, true),
    link("pcie5-host-staged", Pcie, 63.0, 0.87, 10.0, true),
    // NVLink per-GPU aggregate per direction (through NVSwitch where there are more than two).
    link("nvlink2", NvLink, 150.0, 0.86, 3.0, false),
    link("nvlink3", NvLink, 300.0, 0.86, 3.0, false),
    link("nvlink4", NvLink, 450.0, 0.86, 3.0, false),
    link("nvlink5", NvLink, 900.0, 0.86, 3.0, false),
    link("10gbe", Network, 1.25, 0.8, 10.0, false),
    link("25gbe", Network, 3.125, 0.8, 8.0, false),
    link("100gbe", Network, 12.5, 0.8, 5.0, false),
    link("200gbe", Network, 25.0, 0.8, 5.0, false),
    link("400gbe", Network, 50.0, 0.8, 5.0, false),
    link("ib-hdr", Network, 25.0, 0.8, 2.6, false),
    link("ib-ndr", Network, 50.0, 0.8, 2.6, false),
];

pub fn link_by_name(name: &str) -> Option<&'static LinkSpec> {
    LINKS.iter().find(|l| l.name.eq_ignore_ascii_case(name))
}

impl LinkSpec {
    /// Bandwidth a large transfer achieves, bytes/s.
    pub fn effective_bytes_per_s(&self) -> f64 {
        self.peak_gbs * self.efficiency * 1e9
    }

    /// Fixed cost of one transfer, seconds: latency, plus the pipeline fill of host staging.
    pub fn startup_s(&self, bytes: u64) -> f64 {
        self.startup_with(bytes, self.effective_bytes_per_s(), self.latency_us * 1e-6)
    }

    /// Time of one transfer alone on the link, seconds.
    pub fn transfer_s(&self, bytes: u64) -> f64 {
        self.transfer_with(bytes, self.effective_bytes_per_s(), self.latency_us * 1e-6)
    }

    /// `startup_s` with a measured bandwidth (bytes/s) and latency (s) in place of the datasheet.
    pub fn startup_with(&self, bytes: u64, bytes_per_s: f64, latency_s: f64) -> f64 {
        let fill = if self.host_staged {
            staging_chunk_bytes(bytes) as f64 / bytes_per_s
        } else {
            0.0
        };
        latency_s + fill
    }

    /// `transfer_s` with a measured bandwidth (bytes/s) and latency (s).
    pub fn transfer_with(&self, bytes: u64, bytes_per_s: f64, latency_s: f64) -> f64 {
        self.startup_with(bytes, bytes_per_s, latency_s) + bytes as f64 / bytes_per_s
    }

    /// The PCIe link of a given generation (P2P or host-staged).
    pub fn pcie(generation: u8, host_staged: bool) -> Option<&'static LinkSpec> {
        let name = format!(
            "pcie{generation}{}",
            if host_staged { "-host-staged" } else { "" }
        );
        link_by_name(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llava_embedding_over_pcie4_is_sub_millisecond() {
        let l = link_by_name("pcie4").unwrap();
        let t = l.transfer_s(4_718_592);
        // 4,718,592 B / (31.5e9 · 0.85) = 176.2 µs, + 5 µs latency.
        assert!((t - 181.24e-6).abs() < 0.1e-6, "{t}");
    }

    #[test]
    fn host_staging_adds_one_chunk() {
        let l = link_by_name("pcie5-host-staged").unwrap();
        let bw = 63e9 * 0.87;
        let bytes = 369_098_752;
        let expect = 10e-6 + (16u64 << 20) as f64 / bw + bytes as f64 / bw;
        assert!((l.transfer_s(bytes) - expect).abs() < 1e-9);
        // A 4.7 MB embedding pipelines in quarters.
        assert_eq!(staging_chunk_bytes(4_718_592), 1_179_648);
        assert_eq!(staging_chunk_bytes(100), 100);
        // 5 MB: a quarter is 1,250,000 B, rounded up to 20 × 64 KiB.
        assert_eq!(staging_chunk_bytes(5_000_000), 1_310_720);
    }
}
