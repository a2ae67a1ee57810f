//! The LLaVA-1.5 model: its definition (`llava`), weights on the host (`host`), the f32 CPU
//! reference forward (`cpu`) and the bf16 GPU forward on our kernels (`gpu`).

pub mod cpu;
pub mod gpu;
pub mod host;
pub mod llava;

pub use llava::{LlavaConfig, LlavaWeights};
