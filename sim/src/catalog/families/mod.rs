//! Config readers for the model families whose configs differ from a plain decoder's, one family
//! per file, and the shared field readers.

pub mod fields;
pub mod gemma3;
pub mod kimi_k25;
pub mod llama4;
pub mod llava;
pub mod mistral3;
pub mod mixtral;
pub mod mllama;
pub mod qwen3_vl;

/// The `model_type`s hetsim reads, as an unknown one's error lists them.
pub const KNOWN_MODEL_TYPES: &str = "llava (CLIP or Pixtral vision), llava_next, mistral3, gemma3, mllama, llama4, kimi_k25, qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_vl_moe, mixtral, clip, \
     clip_vision_model, and LLaMA-style decoders (llama, mistral, qwen2, …)";
