//! hetsim's GPU harness: it measures real GPUs so the simulator can be calibrated and checked.
//!
//! CUDA is loaded at run time (cudarc, `dynamic-loading`): the crate builds and its tests run
//! on machines without CUDA, where every GPU entry point returns `Error::NoDriver`.
//!
//! Three parts, each using only the ones before it:
//!
//! * [`cuda`]: the CUDA layer (devices, buffers, streams, kernels, cuBLASLt, staged copies).
//!   Knows no model and no measurement.
//! * [`serve`]: the LLaVA model on our kernels, the scheduler and engine that serve it, the
//!   paged KV layout, trace replay, selftest. Uses `cuda`.
//! * [`measure`]: probes, calibrate, bench (phase tables), transfer validation, reports. Uses
//!   `cuda`, and `serve`'s model, engine and KV layout for phase timing and real KV transfers.
//!
//! Beside them: [`cli`] (clap arguments and entry points for the `hetsim` binary), and the leaf
//! helpers every part may use: [`error`], [`stats`] (medians and fits of timings), [`util`].

pub mod cli;
pub mod cuda;
pub mod error;
pub mod measure;
/// The hardware profile type is the simulator's (`hetsim_sim::profile`): calibrate writes what
/// `hetsim run` reads.
pub use hetsim_sim::profile;
pub mod serve;
pub mod stats;
pub mod util;

pub use error::{Error, Result};
