//! Measurements: probes of links and compute, the calibration that turns them into a hardware
//! profile, the engine's phase tables and per-operation breakdown (`bench`), and the timed,
//! bit-exact transfer validation. Uses `cuda`, and `serve`'s model, engine and KV layout to time
//! real phases and ship real caches.
//!
//! * [`probes`]: link probes (NVLink peer copy, PCIe staged / pageable, sharing) and compute
//!   probes (cuBLASLt GEMM, HBM copy, launch overhead, green-context SM partitions).
//! * [`calibrate`]: runs the probes, writes a [`crate::profile::HardwareProfile`].
//! * [`bench`]: phase tables of the engine (`hetsim exec bench`); [`bench_qwen`]: Qwen2.5-VL's
//!   passes against the same floors.
//! * [`against_torch`]: transformers' times of the same Qwen2.5-VL passes
//!   (`bench --against torch.json`), joined to the bench's rows.
//! * [`validate`]: ships real paged KV caches and embeddings between GPUs, bit-exact, timed.
//! * [`report`]: Markdown reports of calibration and validation.
//! * [`catalog`]: which simulator catalog GPU a measured device is.

pub mod against_torch;
pub mod bench;
pub mod bench_qwen;
pub mod calibrate;
pub mod catalog;
pub mod probes;
pub mod report;
pub mod validate;
