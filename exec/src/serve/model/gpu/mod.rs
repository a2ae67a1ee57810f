//! The bf16 GPU forward of `model::llava`: our kernels (`kernels/llava.cu`) for everything but
//! the matrix products, which go to cuBLASLt (bias and residual add fused into its epilogue).
//!
//! * [`kernels`]: the kernel registry (NVRTC module, early launch) and launch shapes.
//! * [`tensor`]: bf16 tensors on the GPU, uploads and downloads.
//! * [`scratch`]: named scratch buffers, frozen once decode graphs hold their addresses.
//! * [`kv_pool`]: the paged KV cache of every decoder layer.
//! * [`products`]: cuBLASLt plans and the batch-1 `gemv`, raced per shape.
//! * [`forward`]: [`GpuModel`] (LLaVA) and its encode; [`DecoderPass`]: embed, decoder,
//!   logits over either model's decoder.
//! * [`qwen2_5_vl`]: [`QwenGpu`], Qwen2.5-VL's weights and ViT + merger on the same kernels.
//! * [`served`]: [`ServedModel`], either model as the engine serves it (image tokens, encode,
//!   positions).

pub mod forward;
pub mod kernels;
pub mod kv_pool;
pub mod products;
pub mod qwen2_5_vl;
pub mod scratch;
pub mod served;
pub mod tensor;

pub use forward::{Attn, DecoderPass, GpuModel, TokenInputs};
pub use kernels::{
    DECODE_PART, EARLY_LAUNCH, FLASH_ROWS, KERNELS, KV_BLOCK, Kernels, LLAVA_SRC, NormLaunch,
    decode_launch, flash_attn_kernel,
};
pub use kv_pool::KvPool;
pub use products::{GEMV_MAX_M, OurProduct, ProductKey, ProductRace, SKINNY_MAX_M, SmallProducts};
pub use qwen2_5_vl::QwenGpu;
pub use scratch::Scratch;
pub use served::{ServedConfig, ServedModel};
pub use tensor::{
    DTensor, download_bf16, download_f32, download_i32, read_ptr, upload_bf16, upload_f64,
    upload_i32,
};
