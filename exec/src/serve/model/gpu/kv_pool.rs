//! The paged KV pool of the decoder on the GPU.

use super::kernels::KV_BLOCK;
use crate::cuda::device::{DeviceBuffer, Gpu};
use crate::error::Result;
use crate::serve::model::llava::LlmConfig;

/// The paged KV cache of all layers: `[layer][block][K|V][kv_head][slot 16][head_dim]` bf16.
pub struct KvPool {
    pub buf: DeviceBuffer,
    pub blocks: usize,
    pub layer_bytes: usize,
}

impl KvPool {
    pub fn new(gpu: &Gpu, l: &LlmConfig, blocks: usize) -> Result<KvPool> {
        let layer_bytes = blocks * 2 * l.kv_heads * KV_BLOCK * l.head_dim * 2;
        Ok(KvPool {
            buf: gpu.alloc(layer_bytes * l.layers)?,
            blocks,
            layer_bytes,
        })
    }
    /// Blocks that fit in `bytes`.
    pub fn blocks_for(l: &LlmConfig, bytes: u64) -> usize {
        let per_block = (l.layers * 2 * l.kv_heads * KV_BLOCK * l.head_dim * 2) as u64;
        (bytes / per_block) as usize
    }
    pub fn layer(&self, l: usize) -> u64 {
        self.buf.ptr + (l * self.layer_bytes) as u64
    }
}
