//! Serving LLaVA on real GPUs: the model, the engine that schedules and runs it, the paged KV
//! layout, the trace replay behind `hetsim validate`, and the kernel selftest. Uses `cuda` only.
//!
//! * [`model`]: the LLaVA-1.5 definition, host weights, the f32 CPU reference and the bf16 GPU
//!   forward.
//! * [`scheduler`]: which sequences the next step encodes, prefills or decodes, and KV block
//!   admission; plain data, no GPU.
//! * [`engine`]: carries out the scheduler's steps on one GPU (CUDA-graph decode, hand-off of
//!   prefilled requests between GPUs).
//! * [`kv`]: paged-pool and packed KV / embedding layouts, their CPU reference and kernels.
//! * [`landing`]: back-pressure of the two-GPU replay (the landing window); plain data, no GPU.
//! * [`replay`]: real trace replay on one or two GPUs, rows in the simulator's schema.
//! * [`selftest`]: every kernel against the CPU reference.

pub mod engine;
pub mod kv;
pub mod landing;
pub mod model;
pub mod replay;
pub mod scheduler;
pub mod selftest;
