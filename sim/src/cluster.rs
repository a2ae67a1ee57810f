//! Cluster topology: nodes of GPUs, the fabric inside a node, the network between nodes, and the
//! instances placed on them. A transfer's path and its links follow from where its ends sit.
//!
//! Every GPU has a PCIe port (two directions) and, on NVLink nodes, an NVLink port (two
//! directions, through NVSwitch: the per-GPU port is the bottleneck); SM partitions of one GPU
//! (a node of its own) have an on-device copy port instead. Every node has a NIC (two
//! directions). These ports are the resources concurrent transfers share.

use crate::catalog::{GpuSpec, LinkKind, LinkSpec};

/// What an instance does for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Vision encoder + projector only.
    Encoder,
    /// Prefill and decode (an LLM fed with embeddings).
    Llm,
    /// Prefill only; encodes too where there is no encoder pool.
    Prefill,
    /// Decode only.
    Decode,
    /// Everything: encode, prefill, decode.
    All,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Encoder => "encoder",
            Role::Llm => "llm",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
            Role::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// GPU-to-GPU inside the node. On an NVLink node, GPUs without that NVLink (a consumer card
    /// in a PCIe slot) reach the others over PCIe.
    pub fabric: &'static LinkSpec,
    pub gpus: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Gpu {
    pub spec: &'static GpuSpec,
    pub node: usize,
    /// The GPU's own host link (its PCIe generation, peer-to-peer or staged like the fabric).
    pub pcie: &'static LinkSpec,
}

#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub id: usize,
    pub role: Role,
    pub gpu: &'static GpuSpec,
    pub node: usize,
    /// GPUs of the tensor-parallel group (all on `node`).
    pub gpus: Vec<usize>,
}

impl InstanceSpec {
    pub fn tp(&self) -> u64 {
        self.gpus.len() as u64
    }
}

/// A shared port a transfer crosses.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub link: &'static LinkSpec,
    /// Bytes per second, after a calibration profile if one was given.
    pub bytes_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub gpus: Vec<Gpu>,
    pub network: &'static LinkSpec,
    pub instances: Vec<InstanceSpec>,
    pub ports: Vec<Port>,
    /// Calibrated (bytes/s, latency s) per catalog link name, replacing the datasheet model.
    pub calibrated: Vec<(&'static str, f64, f64)>,
    /// How concurrent transfers share a port.
    pub sharing: crate::network::Sharing,
}

/// Port indices of one GPU and one node, in `Cluster::ports`.
const GPU_PORTS: usize = 4; // pcie up, pcie down, nvlink out, nvlink in
const NODE_PORTS: usize = 2; // nic out, nic in

/// A transfer route: the ports it crosses and its fixed start-up cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub ports: Vec<usize>,
    /// The link that names the route (the fabric, or the network between nodes).
    pub link: &'static LinkSpec,
    pub startup_s: f64,
}

impl Cluster {
    /// Builds the port table; `calibrated` links use measured bandwidth and latency instead of
    /// datasheet × efficiency.
    pub fn new(
        nodes: Vec<Node>,
        gpus: Vec<Gpu>,
        network: &'static LinkSpec,
        instances: Vec<InstanceSpec>,
        calibrated: Vec<(&'static str, f64, f64)>,
    ) -> Cluster {
        let bandwidth = |l: &LinkSpec| {
            calibrated
                .iter()
                .find(|c| c.0 == l.name)
                .map_or(l.effective_bytes_per_s(), |c| c.1)
        };
        let mut ports = Vec::with_capacity(gpus.len() * GPU_PORTS + nodes.len() * NODE_PORTS);
        for (i, g) in gpus.iter().enumerate() {
            let node = &nodes[g.node];
            // Partitions of one GPU copy through its memory in the NVLink slots' place.
            let nvlink = if matches!(node.fabric.kind, LinkKind::NvLink | LinkKind::OnDevice) {
                node.fabric
            } else {
                g.pcie
            };
            let port = |dir: &str, link: &'static LinkSpec| Port {
                name: format!("{}/gpu{i}/{}-{dir}", node.name, link.name),
                link,
                bytes_per_s: bandwidth(link),
            };
            ports.push(port("up", g.pcie));
            ports.push(port("down", g.pcie));
            ports.push(port("out", nvlink));
            ports.push(port("in", nvlink));
        }
        for n in &nodes {
            for dir in ["out", "in"] {
                ports.push(Port {
                    name: format!("{}/nic/{}-{dir}", n.name, network.name),
                    link: network,
                    bytes_per_s: bandwidth(network),
                });
            }
        }
        Cluster {
            nodes,
            gpus,
            network,
            instances,
            ports,
            calibrated,
            sharing: crate::network::Sharing::Fair,
        }
    }

    fn gpu_port(&self, gpu: usize, which: usize) -> usize {
        gpu * GPU_PORTS + which
    }

    fn nic_port(&self, node: usize, which: usize) -> usize {
        self.gpus.len() * GPU_PORTS + node * NODE_PORTS + which
    }

    /// The route from GPU `a` to GPU `b`; `None` when they are the same GPU (nothing moves).
    /// Fixed cost of one transfer of `bytes` on `link`: latency, plus one chunk of pipeline fill
    /// when staged through host memory.
    pub fn startup_s(&self, link: &LinkSpec, bytes: u64) -> f64 {
        match self.calibrated.iter().find(|c| c.0 == link.name) {
            Some(&(_, bw, lat)) => link.startup_with(bytes, bw, lat),
            None => link.startup_s(bytes),
        }
    }

    /// Whether GPU `g` sits on its node's NVLink (for the board premium in capex pricing).
    pub fn on_nvlink(&self, g: usize) -> bool {
        let fabric = self.nodes[self.gpus[g].node].fabric;
        fabric.kind == LinkKind::NvLink && self.gpus[g].spec.nvlink == Some(fabric.name)
    }

    /// Dollars per second of every GPU of the cluster, used or not.
    pub fn usd_per_second(
        &self,
        pricing: &crate::cost::PricingSpec,
    ) -> Result<f64, crate::error::InputError> {
        (0..self.gpus.len())
            .map(|g| pricing.usd_per_second(self.gpus[g].spec, self.on_nvlink(g)))
            .sum()
    }

    /// Purchase price of every GPU of the cluster.
    pub fn purchase_usd(
        &self,
        pricing: &crate::cost::PricingSpec,
    ) -> Result<f64, crate::error::InputError> {
        (0..self.gpus.len())
            .map(|g| pricing.purchase_usd(self.gpus[g].spec, self.on_nvlink(g)))
            .sum()
    }

    pub fn route(&self, a: usize, b: usize, bytes: u64) -> Option<Route> {
        if a == b {
            return None;
        }
        let (na, nb) = (self.gpus[a].node, self.gpus[b].node);
        if na == nb {
            let fabric = self.nodes[na].fabric;
            let (ga, gb) = (&self.gpus[a], &self.gpus[b]);
            let on_nvlink = |g: &Gpu| g.spec.nvlink == Some(fabric.name);
            let on_device = fabric.kind == LinkKind::OnDevice;
            if on_device || fabric.kind == LinkKind::NvLink && on_nvlink(ga) && on_nvlink(gb) {
                let ports = vec![self.gpu_port(a, 2), self.gpu_port(b, 3)];
                return Some(Route {
                    ports,
                    link: fabric,
                    startup_s: self.startup_s(fabric, bytes),
                });
            }
            // PCIe: the fabric itself, or (a GPU off the node's NVLink) the slower of the two
            // host links, staged through host memory unless both ends do peer-to-peer.
            let link = if fabric.kind == LinkKind::Pcie {
                fabric
            } else {
                let generation = ga.spec.pcie_gen.min(gb.spec.pcie_gen);
                LinkSpec::pcie(generation, !(ga.spec.pcie_p2p && gb.spec.pcie_p2p))
                    .expect("PCIe 3–5 are in the catalog")
            };
            let ports = vec![self.gpu_port(a, 0), self.gpu_port(b, 1)];
            Some(Route {
                ports,
                link,
                startup_s: self.startup_s(link, bytes),
            })
        } else {
            // GPUDirect RDMA: source GPU's PCIe port → NIC → network → NIC → destination's PCIe port.
            let ports = vec![
                self.gpu_port(a, 0),
                self.nic_port(na, 0),
                self.nic_port(nb, 1),
                self.gpu_port(b, 1),
            ];
            Some(Route {
                ports,
                link: self.network,
                startup_s: self.startup_s(self.network, bytes),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{gpu_by_name, link_by_name};

    fn two_nodes() -> Cluster {
        let a100 = gpu_by_name("A100-SXM-80GB").unwrap();
        let rtx = gpu_by_name("RTX-4090").unwrap();
        let nodes = vec![
            Node {
                name: "hbm".into(),
                fabric: link_by_name("nvlink3").unwrap(),
                gpus: vec![0, 1],
            },
            Node {
                name: "consumer".into(),
                fabric: link_by_name("pcie4-host-staged").unwrap(),
                gpus: vec![2, 3],
            },
        ];
        let staged = link_by_name("pcie4-host-staged").unwrap();
        let gpus = vec![
            Gpu {
                spec: a100,
                node: 0,
                pcie: link_by_name("pcie4").unwrap(),
            },
            Gpu {
                spec: a100,
                node: 0,
                pcie: link_by_name("pcie4").unwrap(),
            },
            Gpu {
                spec: rtx,
                node: 1,
                pcie: staged,
            },
            Gpu {
                spec: rtx,
                node: 1,
                pcie: staged,
            },
        ];
        Cluster::new(nodes, gpus, link_by_name("100gbe").unwrap(), vec![], vec![])
    }

    #[test]
    fn routes_follow_where_the_ends_sit() {
        let c = two_nodes();
        assert!(c.route(0, 0, 10).is_none());
        let nv = c.route(0, 1, 10).unwrap();
        assert_eq!(nv.link.name, "nvlink3");
        assert_eq!(
            nv.ports
                .iter()
                .map(|p| c.ports[*p].name.as_str())
                .collect::<Vec<_>>(),
            ["hbm/gpu0/nvlink3-out", "hbm/gpu1/nvlink3-in"]
        );
        let staged = c.route(2, 3, 10).unwrap();
        assert_eq!(staged.link.name, "pcie4-host-staged");
        assert_eq!(
            c.ports[staged.ports[0]].name,
            "consumer/gpu2/pcie4-host-staged-up"
        );
        let net = c.route(2, 0, 10).unwrap();
        assert_eq!(net.link.name, "100gbe");
        assert_eq!(net.ports.len(), 4);
        assert_eq!(c.ports[net.ports[1]].name, "consumer/nic/100gbe-out");
        assert_eq!(c.ports[net.ports[2]].name, "hbm/nic/100gbe-in");
    }
}
