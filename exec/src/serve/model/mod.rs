//! The models the engine runs. LLaVA-1.5: its definition (`llava`), weights on the host
//! (`host`), the f32 CPU reference forward (`cpu`) and the bf16 GPU forward on our kernels
//! (`gpu`). Qwen2.5-VL: its definition (`qwen2_5_vl`) and CPU reference (`qwen2_5_vl_cpu`),
//! sharing the decoder's reference (`cpu::Decoder`) and the checkpoint reader (`host`).

pub mod cpu;
pub mod gpu;
pub mod host;
pub mod llava;
pub mod qwen2_5_vl;
pub mod qwen2_5_vl_cpu;

pub use llava::{LlavaConfig, LlavaWeights};
