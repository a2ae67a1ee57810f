//! Paged KV memory of one LLM instance: fixed-size blocks of tokens, as vLLM's block manager.

#[derive(Debug, Clone)]
pub struct KvPool {
    pub block_tokens: u64,
    pub total_blocks: u64,
    used: u64,
    pub peak_used: u64,
}

impl KvPool {
    pub fn new(block_tokens: u64, total_blocks: u64) -> KvPool {
        KvPool { block_tokens, total_blocks, used: 0, peak_used: 0 }
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
        assert!(n <= self.used, "returning {n} KV blocks with only {} in use", self.used);
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
