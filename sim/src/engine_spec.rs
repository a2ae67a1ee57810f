//! The serving engine's knobs as an experiment gives them: batching, scheduling and memory
//! (vLLM's defaults where it has one). `experiment` reads and checks them; the engine, the KV
//! memory plan and the closed-form capacity use them.

use serde::Deserialize;

use crate::perf::Efficiency;

/// How an LLM step mixes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Decodes and prefill chunks share a step (vLLM v1, Sarathi-style chunked prefill).
    #[default]
    Mixed,
    /// A step prefills whatever new prompts fit, else decodes (vLLM v0; the project's GPU engine).
    PrefillFirst,
}

/// Batching and memory knobs of the serving engine (vLLM's defaults where it has one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSpec {
    /// Tokens one LLM step may process (prefill chunk tokens + one per decoding sequence).
    pub token_budget: u64,
    /// Sequences in one LLM step.
    pub max_batch: u64,
    pub block_tokens: u64,
    /// Share of GPU memory the engine may take (weights, activations, KV).
    pub memory_utilization: f64,
    /// Images one encoder step may take.
    pub encoder_batch_images: u64,
    /// Split long prompts across steps (else a prompt must fit the budget whole).
    pub chunked_prefill: bool,
    pub schedule: Schedule,
    pub efficiency: Efficiency,
}

impl Default for EngineSpec {
    fn default() -> Self {
        EngineSpec {
            token_budget: 8192,
            max_batch: 256,
            block_tokens: 16,
            memory_utilization: 0.9,
            encoder_batch_images: 32,
            chunked_prefill: true,
            schedule: Schedule::Mixed,
            efficiency: Efficiency::default(),
        }
    }
}
