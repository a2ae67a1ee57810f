//! The CUDA layer: everything that talks to the driver, NVRTC, cuBLASLt or NVML, and nothing
//! about models or measurements (it uses neither `serve` nor `measure`).
//!
//! * [`device`]: GPUs, contexts, streams, events, device / pinned buffers, peer access, the
//!   `ck!` error plumbing of driver calls.
//! * [`libs`]: finding and loading the CUDA libraries at run time.
//! * [`kernels`]: NVRTC compilation, modules, kernel launches.
//! * [`gemm`]: bf16 products through cuBLASLt.
//! * [`green`]: green contexts, partitions of a GPU's SMs.
//! * [`staging`]: GPU → pinned host → GPU copies for GPUs without peer access.
//! * [`timeline`]: per-operation GPU time of launches while a timeline is open.
//! * [`nvml`]: active NVLink count.

pub mod device;
pub mod gemm;
pub mod green;
pub mod kernels;
pub mod libs;
pub mod nvml;
pub mod staging;
pub mod timeline;
