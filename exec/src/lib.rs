//! hetsim's GPU harness: it measures real GPUs so the simulator can be calibrated and checked.
//!
//! CUDA is loaded at run time (cudarc, `dynamic-loading`): the crate builds and its tests run
//! on machines without CUDA, where every GPU entry point returns `Error::NoDriver`.
//!
//! * [`device`]: GPUs, contexts, streams, events, device / pinned buffers, peer access.
//! * [`probes`]: link probes (NVLink peer copy, PCIe staged / pageable, sharing) and compute
//!   probes (cuBLASLt GEMM, HBM copy, launch overhead, green-context SM partitions).
//! * [`calibrate`]: runs the probes, writes a [`profile::HardwareProfile`].
//! * [`validate`]: ships real paged KV caches and embeddings between GPUs, bit-exact, timed.
//! * [`cli`]: clap arguments and entry points for the `hetsim` binary.

pub mod bench;
pub mod calibrate;
pub mod catalog;
pub mod cli;
pub mod device;
pub mod engine;
pub mod error;
pub mod gemm;
pub mod kernels;
pub mod kv;
pub mod libs;
pub mod model;
pub mod nvml;
pub mod probes;
/// The hardware profile type is the simulator's (`hetsim_sim::profile`): calibrate writes what
/// `hetsim run` reads.
pub use hetsim_sim::profile;
pub mod replay;
pub mod report;
pub mod selftest;
pub mod stats;
pub mod timeline;
pub mod util;
pub mod validate;

pub use error::{Error, Result};

/// Is a CUDA driver usable here? Tests that need a GPU call this and skip with the reason.
pub fn gpu_available() -> std::result::Result<usize, String> {
    match device::device_count() {
        Ok(0) => Err("the CUDA driver reports no GPU".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
