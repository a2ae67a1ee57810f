//! Paged KV memory of one LLM instance: fixed-size blocks of tokens, as vLLM's block manager.

use crate::catalog::{Dtype, GpuSpec, ModelSpec};
use crate::engine_spec::EngineSpec;
use crate::error::InputError;

#[derive(Debug, Clone)]
pub struct KvPool {
    pub block_tokens: u64,
    pub total_blocks: u64,
    used: u64,
    pub peak_used: u64,
}

impl KvPool {
    pub fn new(block_tokens: u64, total_blocks: u64) -> KvPool {
        KvPool {
            block_tokens,
            total_blocks,
            used: 0,
            peak_used: 0,
        }
    }

    pub fn blocks_for(&self, tokens: u64) -> u64 {
        tokens.div_ceil(self.block_tokens)
    }

    pub fn free_blocks(&self) -> u64 {
        self.total_blocks - self.used
    }

    pub fn used_blocks(&self) -> u64 {
        self.used
    }

    /// Takes `n` blocks if they are free.
    pub fn try_take(&mut self, n: u64) -> bool {
        if n > self.free_blocks() {
            return false;
        }
        self.used += n;
        self.peak_used = self.peak_used.max(self.used);
        assert!(self.used <= self.total_blocks, "KV in use over capacity");
        true
    }

    pub fn give_back(&mut self, n: u64) {
        assert!(
            n <= self.used,
            "returning {n} KV blocks with only {} in use",
            self.used
        );
        self.used -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_up_and_never_exceed_capacity() {
        let mut kv = KvPool::new(16, 10);
        assert_eq!(kv.blocks_for(17), 2);
        assert!(kv.try_take(8));
        assert!(!kv.try_take(3));
        assert!(kv.try_take(2));
        assert_eq!(kv.free_blocks(), 0);
        kv.give_back(10);
        assert_eq!((kv.used_blocks(), kv.peak_used), (0, 10));
    }
}

/// How an instance's GPU memory divides: weights, activations, and what is left for KV blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    pub usable_bytes: f64,
    pub weight_bytes: f64,
    pub activation_bytes: f64,
    pub kv_bytes_per_token: u64,
    pub kv_blocks: u64,
}

const GIB: f64 = (1u64 << 30) as f64;

impl MemoryPlan {
    /// Per GPU of a `tp`-way instance. Activations are the peak of one step: the largest
    /// intermediate tensors for `token_budget` tokens, fp32 logits for `max_batch` sequences, and
    /// the encoder's batch (at 1,024 ViT tokens an image).
    pub fn new(
        model: &ModelSpec,
        dtype: Dtype,
        gpu: &GpuSpec,
        tp: u64,
        holds_vision: bool,
        holds_llm: bool,
        engine: &EngineSpec,
    ) -> Result<MemoryPlan, InputError> {
        let b = dtype.bytes() as f64;
        let tpf = tp as f64;
        let usable = gpu.memory_bytes() * engine.memory_utilization;
        let mut weights = 0.0;
        let mut act: f64 = 0.0;
        if holds_vision && let Some(v) = &model.vision {
            weights += v.params() as f64 * b / tpf;
            let tokens = engine.encoder_batch_images as f64 * 1024.0;
            act =
                act.max(tokens * (4.0 * v.vit.hidden as f64 + v.vit.intermediate as f64 / tpf) * b);
        }
        let l = &model.llm;
        if holds_llm {
            weights += l.params() as f64 * b / tpf;
            let step = engine.token_budget as f64
                * (4.0 * l.hidden as f64 + 2.0 * l.peak_active_mlp_width() as f64 / tpf)
                * b;
            let logits =
                engine.max_batch.min(engine.token_budget) as f64 * l.vocab as f64 * 4.0 / tpf;
            act = act.max(step + logits);
        }
        let kv_bytes_per_token = l.kv_bytes_per_token_per_gpu(tp, dtype);
        let left = usable - weights - act;
        let what = if holds_llm { "" } else { " (vision encoder)" };
        if left <= 0.0 {
            return Err(InputError::new(format!(
                "model `{}`{what} does not fit in {} with tp = {tp}: it needs {:.1} GiB of weights + {:.1} GiB of activations per GPU, \
                 and {:.1} GiB is usable ({:.0} GiB × memory_utilization {}); short by {:.1} GiB. Use a larger GPU, a higher tp, \
                 or a smaller engine.token_budget",
                model.name,
                gpu.name,
                weights / GIB,
                act / GIB,
                usable / GIB,
                gpu.memory_gib,
                engine.memory_utilization,
                -left / GIB
            )));
        }
        let kv_blocks = if holds_llm {
            (left / (engine.block_tokens * kv_bytes_per_token) as f64).floor() as u64
        } else {
            0
        };
        if holds_llm && kv_blocks == 0 {
            return Err(InputError::new(format!(
                "model `{}` leaves {:.2} GiB per {} GPU: not one KV block of {} tokens fits",
                model.name,
                left / GIB,
                gpu.name,
                engine.block_tokens
            )));
        }
        Ok(MemoryPlan {
            usable_bytes: usable,
            weight_bytes: weights,
            activation_bytes: act,
            kv_bytes_per_token,
            kv_blocks,
        })
    }

    pub fn kv_tokens(&self, block_tokens: u64) -> u64 {
        self.kv_blocks * block_tokens
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::catalog::{builtin_model, gpu_by_name};

    #[test]
    fn llava_on_a100_leaves_room_for_kv_and_72b_does_not_fit_a_4090() {
        let e = EngineSpec::default();
        let m = builtin_model("llava-1.5-7b").unwrap();
        let p = MemoryPlan::new(
            &m,
            Dtype::Bf16,
            gpu_by_name("A100-SXM-80GB").unwrap(),
            1,
            true,
            true,
            &e,
        )
        .unwrap();
        // 72 GiB usable − 13.2 GiB weights − ~1 GiB activations ≈ 57.9 GiB of KV at 512 KiB a token.
        assert_eq!(p.kv_bytes_per_token, 524_288);
        let tokens = p.kv_tokens(16);
        assert!(
            (110_000..=120_000).contains(&tokens),
            "{tokens} tokens of KV"
        );
        let enc = MemoryPlan::new(
            &m,
            Dtype::Bf16,
            gpu_by_name("RTX-4090").unwrap(),
            1,
            true,
            false,
            &e,
        )
        .unwrap();
        assert_eq!(enc.kv_blocks, 0);
        let big = builtin_model("qwen2.5-vl-72b").unwrap();
        let err = MemoryPlan::new(
            &big,
            Dtype::Bf16,
            gpu_by_name("RTX-4090").unwrap(),
            1,
            true,
            true,
            &e,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("does not fit in RTX-4090")
                && err.to_string().contains("short by"),
            "{err}"
        );
    }
}
