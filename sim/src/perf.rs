//! Performance model: how long a phase takes on an instance.
//!
//! The engine asks only `PhaseModel` (encode a batch of images; one LLM forward over a mixed
//! batch of prefill chunks and decode tokens). `Roofline` answers from first principles: each
//! operator costs `max(FLOPs / (peak · η_compute), bytes / (bandwidth · η_memory))` plus a kernel
//! overhead, and tensor parallelism adds ring all-reduces on the instance's link. A measured
//! profile table can implement the same trait without the engine changing.

use serde::{Deserialize, Serialize};

use crate::catalog::{
    Dtype, GpuSpec, ImageTokens, LinkSpec, Mla, ModelSpec, ProjectorSpec, VisionSpec,
};
use crate::profile::GpuProfile;

/// The work of one LLM forward pass over a continuous batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchShape {
    /// New tokens of prefill chunks (the whole prompt, or a chunk of it).
    pub prefill_tokens: u64,
    /// Query–key pairs under the causal mask: Σ q · (p + (q + 1) / 2) for a chunk of q tokens
    /// after p already cached.
    pub prefill_pairs: f64,
    /// KV tokens prefill attention reads: Σ (p + q).
    pub prefill_kv_tokens: u64,
    /// Prefill chunks in the batch.
    pub prefill_chunks: u64,
    pub decode_seqs: u64,
    /// Σ context length of the decoding sequences (KV read per layer).
    pub decode_ctx_tokens: u64,
    /// Sequences that sample a token in this step (decodes + finished prefills).
    pub logits: u64,
}

impl BatchShape {
    pub fn add_prefill_chunk(&mut self, cached: u64, new: u64, samples: bool) {
        self.prefill_tokens += new;
        self.prefill_pairs += new as f64 * (cached as f64 + (new as f64 + 1.0) / 2.0);
        self.prefill_kv_tokens += cached + new;
        self.prefill_chunks += 1;
        self.logits += u64::from(samples);
    }

    pub fn add_decode(&mut self, context: u64) {
        self.decode_seqs += 1;
        self.decode_ctx_tokens += context;
        self.logits += 1;
    }

    pub fn tokens(&self) -> u64 {
        self.prefill_tokens + self.decode_seqs
    }

    pub fn is_empty(&self) -> bool {
        self.tokens() == 0
    }
}

/// What a piece of work costs: time, and the FLOPs and HBM bytes behind it (per GPU).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    pub seconds: f64,
    pub flops: f64,
    pub bytes: f64,
}

impl Work {
    fn time(seconds: f64) -> Work {
        Work {
            seconds,
            ..Work::default()
        }
    }
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            seconds: self.seconds + o.seconds,
            flops: self.flops + o.flops,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::ops::AddAssign for Work {
    fn add_assign(&mut self, o: Work) {
        *self = *self + o;
    }
}

impl std::ops::Mul<f64> for Work {
    type Output = Work;
    fn mul(self, k: f64) -> Work {
        Work {
            seconds: self.seconds * k,
            flops: self.flops * k,
            bytes: self.bytes * k,
        }
    }
}

/// Dense tensor-core FLOP/s of `gpu` for weights in `dtype`: the roofline's compute ceiling and
/// the denominator of MFU.
pub fn peak_flops(gpu: &GpuSpec, dtype: Dtype) -> f64 {
    let tflops = match dtype {
        Dtype::Fp8 => gpu.tflops_fp8.unwrap_or(gpu.tflops_16bit),
        // fp32 weights still run on tensor cores as tf32 in serving engines: half the 16-bit rate.
        Dtype::Fp32 => gpu.tflops_16bit / 2.0,
        Dtype::Bf16 | Dtype::Fp16 => gpu.tflops_16bit,
    };
    tflops * 1e12
}

/// Time of each phase on one instance, in seconds.
pub trait PhaseModel: Send + Sync {
    /// Vision encoder + projector over a batch of images.
    fn encode_work(&self, images: &[ImageTokens]) -> Work;
    /// One LLM forward step (all layers, LM head for the sampling sequences).
    fn forward_work(&self, batch: &BatchShape) -> Work;

    /// How much slower a compute-bound step (encode, prefill) of `step_s` seconds from rest
    /// runs when the GPU has spent `duty` of its recent time on such steps (see
    /// [`ComputeDuty`]). Datasheets say nothing of it, so only a measured profile answers other
    /// than 1.
    fn sustained_slowdown(&self, _duty: f64, _step_s: f64) -> f64 {
        1.0
    }

    /// Seconds by which one step that encodes `images` and runs `batch` is shorter than the
    /// two timed as steps of their own: what a step costs once (host work, launches, readback)
    /// and both times count. Never more than either part alone; 0 when either is empty.
    fn shared_step_s(&self, images: &[ImageTokens], batch: &BatchShape) -> f64;

    fn encode_s(&self, images: &[ImageTokens]) -> f64 {
        self.encode_work(images).seconds
    }

    /// The forward of a step that first encoded `images` in the same step: its own time less
    /// what the two parts of one step share.
    fn forward_after_encode_work(&self, images: &[ImageTokens], batch: &BatchShape) -> Work {
        let mut w = self.forward_work(batch);
        w.seconds -= self.shared_step_s(images, batch);
        w
    }

    /// One step that encodes `images` and then runs `batch`, as a colocated instance serves
    /// new requests.
    fn step_s(&self, images: &[ImageTokens], batch: &BatchShape) -> f64 {
        self.encode_s(images) + self.forward_after_encode_work(images, batch).seconds
    }

    fn forward_s(&self, batch: &BatchShape) -> f64 {
        self.forward_work(batch).seconds
    }
}

/// Time constant of a GPU's power state, seconds. A power-capped GPU that stays busy with
/// compute-bound work lowers its clock over seconds, not steps: on an H200 at 90 % load the SM
/// clock fell from 1980 MHz to 1575–1935 MHz (median ~1740) within ~2 s with the power at its
/// 700 W cap, and was back at 1980 MHz within a second of the load ending
/// (exec/results/2026-12-03-h200-ttft-tail/clocks.csv, sampled every 200 ms). The
/// calibrate probe holds each duty for 8 s (4 time constants) before it reads the slowdown.
pub const POWER_TAU_S: f64 = 2.0;

/// The share of an instance's recent time spent in compute-bound steps: an exponential average
/// over [`POWER_TAU_S`], which idle time and decode steps pull towards 0 and encode and prefill
/// steps towards 1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ComputeDuty {
    duty: f64,
    at_ns: u64,
}

impl ComputeDuty {
    /// The duty at `now_ns` (≥ the end of the last recorded step).
    pub fn at(&self, now_ns: u64) -> f64 {
        self.duty * decay(now_ns.saturating_sub(self.at_ns))
    }

    /// A step ran from `start_ns` to `end_ns`, compute-bound or not.
    pub fn record(&mut self, start_ns: u64, end_ns: u64, compute: bool) {
        let kept = decay(end_ns.saturating_sub(start_ns));
        self.duty = self.at(start_ns) * kept + if compute { 1.0 - kept } else { 0.0 };
        self.at_ns = end_ns;
    }
}

fn decay(ns: u64) -> f64 {
    (-(ns as f64) * 1e-9 / POWER_TAU_S).exp()
}

/// The operator model's parameters: what one GPU's measurements teach about any other, given
/// its datasheet (`sim::fit` fits them; `hetsim fit` shows how well they carry).
///
/// Defaults. GEMM 0.75 of the tensor rate at the boost clock for a product that fills whole waves
/// with a long K: the project's H100 ran an 8192³ bf16 product at 790–798 of 989 TFLOP/s
/// (0.80 of the datasheet rate, quoted at 1830 MHz; the SMs ran at 1980). K half 64: a tile's
/// prologue and epilogue cost about 64 steps of K (a 577×1024×1024 product reached 0.09 of peak,
/// an 18464×3072×1024 one 0.71). Attention 0.5: FlashAttention-2 reaches 50–70 % of peak in its
/// paper's forward benchmarks. Memory 0.8: the H200 copy reached 4.3 of 4.8 TB/s, and older parts
/// reach less. Kernel overhead 4 µs: launch plus tail of a small kernel. Step overhead 300 µs:
/// scheduler, sampling and host work per engine iteration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Efficiency {
    pub gemm: f64,
    /// K (per thread block, after any split) at which a GEMM tile runs at half its long-K rate.
    pub gemm_k_half: f64,
    pub attention: f64,
    pub memory: f64,
    pub kernel_overhead_us: f64,
    pub step_overhead_us: f64,
}

impl Default for Efficiency {
    fn default() -> Self {
        Efficiency {
            gemm: 0.75,
            gemm_k_half: 64.0,
            attention: 0.5,
            memory: 0.8,
            kernel_overhead_us: 4.0,
            step_overhead_us: 300.0,
        }
    }
}

impl Efficiency {
    /// Every parameter in its range; errors name `at`.`field`.
    pub fn validate(&self, at: &str) -> Result<(), crate::error::InputError> {
        use crate::bounds::Bound;
        const SHARE: Bound = Bound::above(0.0, 1.0, "");
        const K: Bound = Bound::closed(0.0, 1e6, "");
        const OVERHEAD_US: Bound = Bound::closed(0.0, 1e6, "µs");
        for (field, v, b) in [
            ("gemm", self.gemm, SHARE),
            ("gemm_k_half", self.gemm_k_half, K),
            ("attention", self.attention, SHARE),
            ("memory", self.memory, SHARE),
            ("kernel_overhead_us", self.kernel_overhead_us, OVERHEAD_US),
            ("step_overhead_us", self.step_overhead_us, OVERHEAD_US),
        ] {
            b.check(&format!("{at}.{field}"), v)?;
        }
        Ok(())
    }

    /// Defaults overridden by what `hetsim calibrate` measured on this GPU type.
    pub fn calibrated(self, p: &GpuProfile) -> Efficiency {
        Efficiency {
            gemm: p.gemm_efficiency,
            gemm_k_half: self.gemm_k_half,
            // Attention tracks the GEMM units: keep the default ratio between them.
            attention: self.attention * p.gemm_efficiency / self.gemm,
            memory: p.memory_efficiency,
            kernel_overhead_us: p.launch_overhead_us,
            step_overhead_us: self.step_overhead_us,
        }
    }
}

/// Output tile shapes (rows × columns) a GEMM kernel may use.
const GEMM_TILES: [(f64, f64); 4] = [
    (128.0, 256.0),
    (256.0, 128.0),
    (128.0, 128.0),
    (64.0, 128.0),
];

/// The roofline model of one instance: a model (or the part of it the instance runs) on `tp`
/// GPUs of one type.
#[derive(Debug, Clone)]
pub struct Roofline {
    pub model: ModelSpec,
    pub dtype: Dtype,
    pub peak_flops: f64,
    /// Tensor FLOP/s of one SM at the boost clock (datasheet rate ÷ SMs × boost ÷ quoted clock).
    pub sm_flops: f64,
    pub sms: f64,
    pub mem_bytes_per_s: f64,
    pub eff: Efficiency,
    pub tp: u64,
    /// The link the TP group's all-reduces run on (bytes/s, latency s).
    pub tp_link: Option<(f64, f64)>,
}

impl Roofline {
    pub fn new(
        model: &ModelSpec,
        dtype: Dtype,
        gpu: &GpuSpec,
        eff: Efficiency,
        tp: u64,
        tp_link: Option<&LinkSpec>,
    ) -> Self {
        Roofline {
            model: model.clone(),
            dtype,
            peak_flops: peak_flops(gpu, dtype),
            sm_flops: peak_flops(gpu, dtype) / f64::from(gpu.sm_count) * gpu.boost_clock_mhz
                / gpu.tensor_clock_mhz,
            sms: f64::from(gpu.sm_count),
            mem_bytes_per_s: gpu.mem_bw_gbs * 1e9,
            eff,
            tp,
            tp_link: tp_link.map(|l| (l.effective_bytes_per_s(), l.latency_us * 1e-6)),
        }
    }

    /// One kernel: compute-bound or memory-bound, whichever is slower, plus its overhead.
    fn op(&self, flops: f64, bytes: f64, eta_compute: f64) -> Work {
        let seconds = (flops / (self.peak_flops * eta_compute))
            .max(bytes / (self.mem_bytes_per_s * self.eff.memory))
            + self.eff.kernel_overhead_us * 1e-6;
        Work {
            seconds,
            flops,
            bytes,
        }
    }

    /// A `m`×`k` by `k`×`n` product. Its compute time is counted in whole waves of output tiles
    /// over the SMs, for the fastest of a few tile shapes (cuBLASLt picks per shape): with fewer
    /// tiles than SMs, K is split across blocks (split-K), and each block's K pays a fixed
    /// prologue and epilogue (`gemm_k_half`). This is what carries from one GPU to another: a
    /// 577-row product is one partial wave on 132 SMs and on 58.
    pub fn gemm(&self, m: f64, k: f64, n: f64) -> Work {
        self.grouped_gemm(1.0, m, k, n)
    }

    /// `groups` products of `m`×`k` by `k`×`n`, each with weights of its own, in one launch: a
    /// mixture-of-experts layer's grouped GEMM over the experts its tokens reach, as servers run
    /// it (vLLM's fused_moe, SGLang's, TensorRT-LLM's grouped GEMMs), not one kernel per expert.
    /// The groups' output tiles share the waves, every group's weights are read once, and the
    /// launch pays one kernel overhead.
    pub fn grouped_gemm(&self, groups: f64, m: f64, k: f64, n: f64) -> Work {
        let b = self.dtype.bytes() as f64;
        let flops = 2.0 * groups * m * k * n;
        let bytes = groups * (k * n + m * (k + n)) * b;
        if flops == 0.0 {
            return Work::default();
        }
        let compute = GEMM_TILES
            .iter()
            .map(|&(tm, tn)| {
                let tiles = groups * (m / tm).ceil() * (n / tn).ceil();
                let split = (self.sms / tiles)
                    .floor()
                    .clamp(1.0, (k / 256.0).floor().max(1.0));
                let k_block = k / split;
                let waves = (tiles * split / self.sms).ceil();
                let rate =
                    self.sm_flops * self.eff.gemm * k_block / (k_block + self.eff.gemm_k_half);
                waves * 2.0 * tm * tn * k_block / rate
            })
            .fold(f64::INFINITY, f64::min);
        let seconds = compute.max(bytes / (self.mem_bytes_per_s * self.eff.memory))
            + self.eff.kernel_overhead_us * 1e-6;
        Work {
            seconds,
            flops,
            bytes,
        }
    }

    /// Ring all-reduce of `bytes` across the TP group (link time, no HBM work counted).
    fn all_reduce(&self, bytes: f64) -> Work {
        if self.tp <= 1 {
            return Work::default();
        }
        let (bw, lat) = self.tp_link.unwrap_or((f64::INFINITY, 0.0));
        let p = self.tp as f64;
        Work::time(2.0 * (p - 1.0) / p * bytes / bw + 2.0 * (p - 1.0) * lat)
    }

    fn vision(&self) -> &VisionSpec {
        self.model
            .vision
            .as_ref()
            .expect("the engine encodes only for models with a vision side")
    }
}

impl PhaseModel for Roofline {
    /// Each phase's time carries one step overhead.
    fn shared_step_s(&self, images: &[ImageTokens], batch: &BatchShape) -> f64 {
        if images.is_empty() || batch.is_empty() {
            0.0
        } else {
            self.eff.step_overhead_us * 1e-6
        }
    }

    fn encode_work(&self, images: &[ImageTokens]) -> Work {
        if images.is_empty() {
            return Work::default();
        }
        let v = self.vision();
        let vit = &v.vit;
        let tp = self.tp as f64;
        let b = self.dtype.bytes() as f64;
        let d = vit.hidden as f64;
        let ff = vit.intermediate as f64;
        let n: f64 = images.iter().map(|i| i.encoder_tokens as f64).sum();
        let patch_in = (vit.patch_input * vit.patch * vit.patch) as f64;
        let mut t = self.gemm(n, patch_in, d);
        for layer in 0..vit.layers_run {
            // Tokens each query attends to: the whole image, or one window.
            let full = match &v.window {
                Some(w) => w.full_attention_blocks.contains(&layer),
                None => true,
            };
            // Each tile is its own sequence (LLaVA-NeXT): attention stays inside it.
            let pairs: f64 = images
                .iter()
                .map(|i| {
                    let n = i.encoder_tokens as f64;
                    let per_tile = n / i.tiles as f64;
                    let span = match (&v.window, full) {
                        (Some(w), false) => (w.window_patches as f64).min(per_tile),
                        _ => per_tile,
                    };
                    n * span
                })
                .sum();
            t += self.gemm(n, d, 3.0 * d / tp);
            t += self.op(
                4.0 * pairs * d / tp,
                4.0 * n * d / tp * b,
                self.eff.attention,
            );
            t += self.gemm(n, d / tp, d);
            let up = if vit.gated_mlp { 2.0 * ff } else { ff };
            t += self.gemm(n, d, up / tp);
            t += self.gemm(n, ff / tp, d);
            t += self.op(0.0, 8.0 * n * d * b, 1.0);
            t += self.all_reduce(n * d * b) * 2.0;
        }
        let llm_tokens: f64 = images.iter().map(|i| i.llm_tokens as f64).sum();
        let projected: f64 = images.iter().map(|i| i.projector_tokens as f64).sum();
        let features: f64 = images.iter().map(|i| i.feature_tokens as f64).sum();
        // Linear · GELU · Linear of `rows` tokens, the first column-, the second row-parallel.
        let mlp = |rows: f64, input: u64, output: u64| {
            self.gemm(rows, input as f64, output as f64 / tp)
                + self.gemm(rows, output as f64 / tp, output as f64)
        };
        let projector = match v.projector {
            // The MLP runs on every token entering it (LLaVA-NeXT's tiles before unpadding).
            ProjectorSpec::Mlp2xGelu { input, output, .. } => mlp(projected, input, output),
            ProjectorSpec::PatchMerger {
                vit_hidden,
                merge,
                output,
                ..
            } => {
                let wide = (vit_hidden * merge * merge) as f64;
                self.gemm(llm_tokens, wide, wide / tp)
                    + self.gemm(llm_tokens, wide / tp, output as f64)
            }
            ProjectorSpec::PooledLinear { vit_hidden, output } => {
                self.op(0.0, projected * vit_hidden as f64 * b, 1.0)
                    + self.gemm(features, vit_hidden as f64, output as f64 / tp)
            }
            ProjectorSpec::Linear { input, output } => {
                self.gemm(projected, input as f64, output as f64 / tp)
            }
            // The norm reads every patch; the merger's Linear and the MLP run on merged tokens.
            ProjectorSpec::MergedMlp {
                vit_hidden,
                merge,
                output,
                ..
            } => {
                self.op(0.0, projected * vit_hidden as f64 * b, 1.0)
                    + self.gemm(
                        features,
                        (vit_hidden * merge * merge) as f64,
                        vit_hidden as f64 / tp,
                    )
                    + mlp(features, vit_hidden, output)
            }
            // The pixel shuffle copies every patch; the adapter's MLP and the projector's Linear
            // run on the shuffled features.
            ProjectorSpec::ShuffledMlpLinear {
                vit_hidden,
                merge,
                adapter,
                output,
            } => {
                self.op(
                    0.0,
                    2.0 * projected * (merge * merge * vit_hidden) as f64 * b,
                    1.0,
                ) + mlp(features, vit_hidden * merge * merge, adapter)
                    + self.gemm(features, adapter as f64, output as f64 / tp)
            }
        };
        // Qwen3-VL's DeepStack taps run a projector of their own each.
        t += projector * (1 + v.deepstack.len()) as f64;
        // Qwen-style encoders preprocess on the CPU; LLaVA resizes to a fixed square. Neither is
        // on the GPU's critical path in a pipelined server, so it is not charged here.
        t + Work::time(self.eff.step_overhead_us * 1e-6)
    }

    fn forward_work(&self, batch: &BatchShape) -> Work {
        if batch.is_empty() {
            return Work::default();
        }
        let l = &self.model.llm;
        let tp = self.tp as f64;
        let b = self.dtype.bytes() as f64;
        let d = l.hidden as f64;
        let q = l.q_dim() as f64;
        let kv = l.kv_dim() as f64;
        let ff = l.intermediate as f64;
        let t_all = batch.tokens() as f64;

        // Attention of one layer; a sliding layer's queries see at most `window` keys. The batch
        // keeps sums, not each sequence's context, so the cap is applied to the sums: exact when
        // every sequence is on the same side of the window, an upper bound otherwise.
        let attention = |window: Option<u64>| {
            let mut w = Work::default();
            if batch.prefill_tokens > 0 {
                let (pairs, keys) = match window {
                    Some(win) => (
                        batch.prefill_pairs.min((batch.prefill_tokens * win) as f64),
                        batch
                            .prefill_kv_tokens
                            .min(batch.prefill_tokens + batch.prefill_chunks * win),
                    ),
                    None => (batch.prefill_pairs, batch.prefill_kv_tokens),
                };
                let flops = 4.0 * pairs * q / tp;
                let bytes =
                    (keys as f64 * 2.0 * kv + batch.prefill_tokens as f64 * 2.0 * q) / tp * b;
                w += self.op(flops, bytes, self.eff.attention);
            }
            if batch.decode_seqs > 0 {
                let ctx = window.map_or(batch.decode_ctx_tokens, |win| {
                    batch.decode_ctx_tokens.min(batch.decode_seqs * win)
                }) as f64;
                let flops = 4.0 * ctx * q / tp;
                let bytes = (ctx * 2.0 * kv + batch.decode_seqs as f64 * 2.0 * q) / tp * b;
                w += self.op(flops, bytes, self.eff.attention);
            }
            w
        };

        // Multi-head latent attention over the context (DeepSeek-V3, Kimi-K2.5), as vLLM's and
        // SGLang's MLA backends run it. Prefill in the expanded form: the latent of every key
        // the chunk attends to through kv_b_proj into per-head keys and values, then attention
        // with (nope + rope)-wide q·k and v_head-wide values. Decode in the absorbed form
        // (FlashMLA): kv_b_proj's key half folded into each head's query, the attention over the
        // cached latent as one key/value head of kv_lora + rope shared by every query head, its
        // value half after it. The heads are split across the TP group; the latent is whole on
        // every GPU, so each reads all of it.
        let mla_attention = |m: Mla| {
            let mut w = Work::default();
            let hp = l.heads as f64 / tp;
            let (nope, rope, v) = (
                m.qk_nope_head_dim as f64,
                m.qk_rope_head_dim as f64,
                m.v_head_dim as f64,
            );
            let (rank, latent) = (m.kv_lora_rank as f64, m.latent_width() as f64);
            if batch.prefill_tokens > 0 {
                let keys = batch.prefill_kv_tokens as f64;
                let new = batch.prefill_tokens as f64;
                w += self.gemm(keys, rank, hp * (nope + v));
                let flops = 2.0 * batch.prefill_pairs * hp * (nope + rope + v);
                let bytes = (keys * latent + (keys + new) * hp * (nope + rope + v)) * b;
                w += self.op(flops, bytes, self.eff.attention);
            }
            if batch.decode_seqs > 0 {
                let seqs = batch.decode_seqs as f64;
                let ctx = batch.decode_ctx_tokens as f64;
                // Batched per-head products with kv_b_proj's halves, before and after.
                let absorb = |k: f64, n: f64| {
                    self.op(
                        2.0 * seqs * hp * k * n,
                        (hp * k * n + seqs * hp * (k + n)) * b,
                        self.eff.gemm,
                    )
                };
                w += absorb(nope, rank);
                let flops = 2.0 * ctx * hp * (latent + rank);
                let bytes = (ctx * latent + seqs * hp * (latent + rank)) * b;
                w += self.op(flops, bytes, self.eff.attention);
                w += absorb(rank, v);
            }
            w
        };

        // One decoder layer but its attention over the context, with the MLP of a layer with
        // experts (`sparse`) or a dense one.
        let layer = |sparse: bool| {
            let mut layer = Work::default();
            match l.mla {
                // MLA's projections: the query's low-rank pair (its first half, like
                // kv_a_proj_with_mqa, replicated on every GPU: vLLM's ReplicatedLinear), the
                // latent and rotary key, and o_proj from the heads' values.
                Some(m) => {
                    let q_out = (l.heads * m.qk_head_dim()) as f64 / tp;
                    match m.q_lora_rank {
                        Some(r) => {
                            layer += self.gemm(t_all, d, r as f64);
                            layer += self.gemm(t_all, r as f64, q_out);
                        }
                        None => layer += self.gemm(t_all, d, q_out),
                    }
                    layer += self.gemm(t_all, d, m.latent_width() as f64);
                    layer += self.gemm(t_all, (l.heads * m.v_head_dim) as f64 / tp, d);
                }
                None => {
                    layer += self.gemm(t_all, d, (q + 2.0 * kv) / tp);
                    layer += self.gemm(t_all, q / tp, d);
                }
            }
            // The MLP: one for a dense layer; for MoE, a router and the experts the step's
            // tokens reach, each a product over its share of the t · k routed tokens, in one
            // grouped launch per projection (so every touched expert's weights are read once
            // and the FLOPs are those of k experts per token), and a shared expert (Llama 4,
            // Kimi-K2.5) that every token runs.
            let (moe, width) = match l.moe {
                Some(m) if sparse => (Some(m), ff),
                Some(m) => (None, m.dense_intermediate as f64),
                None => (None, ff),
            };
            let (experts, routed) = match moe {
                Some(m) => {
                    layer += self.gemm(t_all, d, m.experts as f64);
                    (m.experts_touched(t_all), t_all * m.active as f64)
                }
                None => (1.0, t_all),
            };
            let per_expert = routed / experts;
            layer += self.grouped_gemm(experts, per_expert, d, 2.0 * width / tp);
            layer += self.grouped_gemm(experts, per_expert, width / tp, d);
            let shared = moe.map_or(0.0, |m| m.shared as f64);
            if shared > 0.0 {
                layer += self.gemm(t_all, d, 2.0 * shared / tp);
                layer += self.gemm(t_all, shared / tp, d);
            }
            // Two RMSNorms, rotary, SiLU·mul, two residual adds.
            let swiglu = (routed * 3.0 * width + t_all * 3.0 * shared) / tp;
            layer += self.op(0.0, (t_all * 8.0 * d + swiglu) * b, 1.0);
            layer += self.all_reduce(t_all * d * b) * 2.0;
            layer
        };
        let (sparse_layers, dense_layers) = l.mlp_layers();
        let mut layers = Work::default();
        if sparse_layers > 0 {
            layers += layer(true) * sparse_layers as f64;
        }
        if dense_layers > 0 {
            layers += layer(false) * dense_layers as f64;
        }

        let head = self.gemm(batch.logits as f64, d, l.vocab as f64 / tp);
        // A chunked layer's queries see at most the chunk: the window's cap is an upper bound
        // on its reads, exact while every sequence is in its first chunk.
        let sliding = l.sliding.map_or(Work::default(), |w| {
            attention(Some(w.window)) * w.layers as f64
        });
        let full = match l.mla {
            Some(m) => mla_attention(m),
            None => attention(None),
        };
        layers
            + full * l.full_attention_layers() as f64
            + sliding
            + head
            + Work::time(self.eff.step_overhead_us * 1e-6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{builtin_model, gpu_by_name, link_by_name};

    fn a100_llava() -> Roofline {
        let m = builtin_model("llava-1.5-7b").unwrap();
        Roofline::new(
            &m,
            Dtype::Bf16,
            gpu_by_name("A100-SXM-80GB").unwrap(),
            Efficiency::default(),
            1,
            None,
        )
    }

    #[test]
    fn decode_is_bound_by_reading_the_weights() {
        let r = a100_llava();
        let mut b = BatchShape::default();
        b.add_decode(700);
        let t = r.forward_s(&b);
        // Floor: weights (6.74 G params · 2 B) / (2039 GB/s · 0.8) = 8.26 ms, + KV 700 tokens ·
        // 512 KiB = 0.37 GB → 0.22 ms. Overheads add ~1.5 ms (32 layers × 8 kernels × 4 µs + step).
        let floor = r.model.llm.params() as f64 * 2.0 / (2039e9 * 0.8);
        assert!(
            t > floor && t < floor * 1.25,
            "decode {t} s vs floor {floor} s"
        );
    }

    #[test]
    fn prefill_is_bound_by_flops() {
        let r = a100_llava();
        let mut b = BatchShape::default();
        for _ in 0..8 {
            b.add_prefill_chunk(0, 704, true);
        }
        let t = r.forward_s(&b);
        // ≈ 2 · params · tokens FLOPs at 312 TF · 0.75.
        let flops = 2.0 * r.model.llm.params() as f64 * 8.0 * 704.0;
        let floor = flops / (312e12 * 0.75);
        assert!(t > floor && t < floor * 1.3, "prefill {t} s vs {floor} s");
    }

    #[test]
    fn clip_encoding_costs_about_400_gflop_per_image() {
        let r = a100_llava();
        let m = builtin_model("llava-1.5-7b").unwrap();
        let img = m.image_tokens(640, 480).unwrap();
        let one = r.encode_s(&[img]);
        let many = r.encode_s(&vec![img; 32]);
        // 23 layers · (2·577·(4·1024² + 2·1024·4096) + 4·577²·1024) + projector 2·576·(1024·4096 + 4096²) ≈ 390 GFLOP.
        let per_image = 390e9 / (312e12 * 0.75);
        assert!(
            many / 32.0 > per_image && many / 32.0 < per_image * 1.3,
            "{} vs {per_image}",
            many / 32.0
        );
        assert!(
            one > many / 32.0,
            "batching amortises weights and overheads"
        );
    }

    #[test]
    fn compute_duty_follows_the_share_of_time_in_compute_steps() {
        let mut d = ComputeDuty::default();
        let s = 1_000_000_000u64;
        // 20 s of alternating 0.1 s prefill, 0.1 s decode: the average settles at ~0.5.
        let mut t = 0;
        for _ in 0..100 {
            d.record(t, t + s / 10, true);
            d.record(t + s / 10, t + s / 5, false);
            t += s / 5;
        }
        assert!((d.at(t) - 0.5).abs() < 0.03, "{}", d.at(t));
        // Always busy: towards 1; then idle for one time constant: × 1/e.
        for _ in 0..100 {
            d.record(t, t + s / 5, true);
            t += s / 5;
        }
        let busy = d.at(t);
        assert!(busy > 0.99, "{busy}");
        let later = d.at(t + (POWER_TAU_S * 1e9) as u64);
        assert!((later - busy / std::f64::consts::E).abs() < 1e-9, "{later}");
    }

    /// The roofline of a fixture config (tests/fixtures/hf-configs/) on one GPU.
    fn fixture_roofline(config: &str, gpu: &str) -> Roofline {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/hf-configs")
            .join(config);
        let m = crate::catalog::resolve_model(p.to_str().unwrap()).unwrap();
        let gpu = gpu_by_name(gpu).unwrap();
        Roofline::new(&m, Dtype::Bf16, gpu, Efficiency::default(), 1, None)
    }

    /// Parameters one decode token reads: all but the routed experts it skips in each layer
    /// with experts, and of the input embedding a row.
    fn decode_token_params(l: &crate::catalog::LlmSpec) -> f64 {
        let skipped = l
            .moe
            .map_or(0, |m| l.mlp_layers().0 * (m.experts - m.active));
        (l.params() - skipped * 3 * l.hidden * l.intermediate - l.vocab * l.hidden) as f64
    }

    /// Bytes one decode step of a sequence of `context` tokens reads.
    fn decode_bytes(r: &Roofline, context: u64) -> f64 {
        let mut b = BatchShape::default();
        b.add_decode(context);
        r.forward_work(&b).bytes
    }

    /// A decode token reads `params` parameters (`decode_token_params`), and a decode step at 100
    /// tokens of context reads them in bf16 and within 1 % nothing else (the KV, activations).
    fn assert_decode_reads(r: &Roofline, params: u64) {
        let params = params as f64;
        assert_eq!(decode_token_params(&r.model.llm), params);
        let read = decode_bytes(r, 100);
        assert!(
            read > params * 2.0 && read < params * 2.0 * 1.01,
            "{read} vs {}",
            params * 2.0
        );
    }

    #[test]
    fn moe_decode_reads_the_routed_experts_and_prefill_all_of_them() {
        let r = fixture_roofline("mixtral-8x7b-instruct-v0.1.json", "H100-SXM");
        // Weights read by one decode token: 6 of the 8 experts in each of 32 layers are skipped,
        // and of the input embedding only a row is read: 46.7 B − 32 · 6 · 176 M − 131 M =
        // 12.75 B parameters, 25.5 GB.
        assert_decode_reads(&r, 12_748_853_248);
        let l = &r.model.llm;
        let expert = (3 * l.hidden * l.intermediate) as f64;
        // 2 · 2 · 4096 · 14336 · 3 FLOPs a token in each layer's experts (2 of 8), as a dense
        // model of the active width.
        let mut p1 = BatchShape::default();
        p1.add_prefill_chunk(0, 4096, true);
        let w = r.forward_work(&p1);
        assert!(
            w.bytes > l.params() as f64 * 2.0,
            "a 4096-token prefill reaches every expert"
        );
        let mlp_flops = 32.0 * 4096.0 * 2.0 * 2.0 * expert;
        assert!(
            w.flops > mlp_flops && w.flops < mlp_flops * 1.6,
            "{} vs {mlp_flops}",
            w.flops
        );
    }

    /// A decode batch that reaches all 384 of Kimi-K2.5's experts in a layer runs them as one
    /// grouped launch per projection: memory-bound, so the launch's time is its weights and
    /// activations at the memory rate plus one kernel overhead, not 384 of them (1.5 ms a
    /// projection at 4 µs each, which had put ~80 ms of launches into every step).
    #[test]
    fn grouped_experts_pay_one_launch() {
        let r = fixture_roofline("kimi-k2.5.json", "H100-SXM");
        let (d, w) = (7168.0, 2048.0);
        let g = r.grouped_gemm(384.0, 1.5, d, 2.0 * w);
        let b = 2.0;
        let bytes = 384.0 * (d * 2.0 * w + 1.5 * (d + 2.0 * w)) * b;
        assert_eq!(g.bytes, bytes);
        assert_eq!(g.flops, 2.0 * 384.0 * 1.5 * d * 2.0 * w);
        let memory = bytes / (r.mem_bytes_per_s * r.eff.memory);
        let overhead = r.eff.kernel_overhead_us * 1e-6;
        assert!(
            (g.seconds - (memory + overhead)).abs() < 1e-12,
            "{} vs {}",
            g.seconds,
            memory + overhead
        );
        // One group is the plain product.
        assert_eq!(r.grouped_gemm(1.0, 64.0, d, w), r.gemm(64.0, d, w));
        // A 256-sequence decode step of the whole model: well under the 80 ms the per-expert
        // launches alone had cost.
        let mut batch = BatchShape::default();
        for _ in 0..256 {
            batch.add_decode(2000);
        }
        let step = r.forward_work(&batch);
        let floor = step.bytes / (r.mem_bytes_per_s * r.eff.memory);
        assert!(
            step.seconds < floor + 0.02,
            "{} vs floor {floor}",
            step.seconds
        );
    }

    #[test]
    fn llama4_decode_reads_one_routed_expert_and_the_shared_one() {
        let r = fixture_roofline("llama-4-scout-17b-16e-instruct.json", "H100-SXM");
        // One decode token skips 15 of the 16 routed experts in each of 48 layers (the shared
        // expert runs) and reads one row of the embedding: 107.8 B − 48 · 15 · 126 M − 1.03 B.
        assert_decode_reads(&r, 16_138_408_960);
        // Past the 8192-token chunk only the 12 full-attention layers read more context (4 KiB
        // a token and layer); the 36 chunked layers read at most the chunk.
        assert_eq!(
            decode_bytes(&r, 12_000) - decode_bytes(&r, 10_000),
            12.0 * 2000.0 * 4096.0
        );
        let expert = (3 * r.model.llm.hidden * r.model.llm.intermediate) as f64;
        // A token's MLP FLOPs: its routed expert and the shared one, 2 · 2 · 3 · 5120 · 8192.
        let mut one = BatchShape::default();
        one.add_prefill_chunk(0, 1, true);
        let mlp = 48.0 * 2.0 * 2.0 * expert;
        let flops = r.forward_work(&one).flops;
        assert!(flops > mlp && flops < mlp * 1.4, "{flops} vs {mlp}");
    }

    #[test]
    fn kimi_decode_reads_the_latent_and_nine_experts() {
        let r = fixture_roofline("kimi-k2.5.json", "H100-SXM");
        // One decode token skips 376 of the 384 routed experts in each of the 60 MoE layers (the
        // shared expert runs) and reads one row of the embedding: 1,026.4 B − 60 · 376 · 44 M −
        // 1.17 B = 31.7 B parameters (the model card's 32 B activated).
        assert_decode_reads(&r, 31_687_072_768);
        // The absorbed decode reads each cached token's latent once per layer, 576 values, not
        // 64 heads' expanded keys and values (20,480).
        assert_eq!(
            decode_bytes(&r, 12_000) - decode_bytes(&r, 10_000),
            61.0 * 2000.0 * 1152.0
        );
        // Prefill runs the expanded form: q·k over 192 and the values' 128 for each of 64 heads,
        // 2 · 64 · 320 FLOPs a query–key pair and layer; everything else is linear in the
        // tokens, so it cancels from flops(2n) − 2 · flops(n).
        let flops = |n: u64| {
            let mut b = BatchShape::default();
            b.add_prefill_chunk(0, n, false);
            r.forward_work(&b).flops
        };
        let pairs = |n: f64| n * (n + 1.0) / 2.0;
        let attention = 61.0 * 2.0 * 64.0 * 320.0 * (pairs(4000.0) - 2.0 * pairs(2000.0));
        let quadratic = flops(4000) - 2.0 * flops(2000);
        assert!(
            (quadratic / attention - 1.0).abs() < 1e-9,
            "{quadratic} vs {attention}"
        );
    }

    #[test]
    fn llama4_encodes_each_tile_alone_and_shuffles_before_the_adapter() {
        let r = fixture_roofline("llama-4-scout-17b-16e-instruct.json", "H100-SXM");
        let flops = |w, h| r.encode_work(&[r.model.image_tokens(w, h).unwrap()]).flops;
        // A tile: 577 tokens (576 patches and a class token) through 34 layers of 1408 (MLP
        // 5632), attending within the tile; its 144 shuffled tokens of 4 · 1408 through the
        // adapter (5632 → 4096 → 4096) and the projector (4096 → 5120).
        let (n, d, ff) = (577.0, 1408.0, 5632.0);
        let layer = 2.0 * n * d * 3.0 * d + 4.0 * n * n * d + 2.0 * n * d * d + 4.0 * n * d * ff;
        let adapter = 2.0 * 144.0 * (ff * 4096.0 + 4096.0 * 4096.0 + 4096.0 * 5120.0);
        let tile = 2.0 * n * 588.0 * d + 34.0 * layer + adapter;
        assert!(
            (flops(336, 336) / tile - 1.0).abs() < 1e-12,
            "{}",
            flops(336, 336)
        );
        // 640×480: four tiles and the global one, five sequences.
        assert!((flops(640, 480) / (5.0 * tile) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sliding_layers_read_only_their_window() {
        let r = fixture_roofline("gemma-3-4b-it.json", "A100-SXM-80GB");
        let read = |ctx| {
            let mut b = BatchShape::default();
            b.add_decode(ctx);
            r.forward_work(&b).bytes
        };
        // From 4,000 to 8,000 tokens of context only the 5 full-attention layers read more:
        // 5 · 4000 · 4 KiB (2 · 4 KV heads · 256 · 2 B); the 29 sliding layers stay at 1,024.
        assert_eq!(read(8000) - read(4000), 5.0 * 4000.0 * 4096.0);
        // Below the window every layer reads the whole context.
        assert_eq!(read(1000) - read(500), 34.0 * 500.0 * 4096.0);
    }

    #[test]
    fn tensor_parallel_splits_work_and_pays_all_reduce() {
        let m = builtin_model("llava-1.5-13b").unwrap();
        let gpu = gpu_by_name("A100-SXM-80GB").unwrap();
        let tp1 = Roofline::new(&m, Dtype::Bf16, gpu, Efficiency::default(), 1, None);
        let tp2 = Roofline::new(
            &m,
            Dtype::Bf16,
            gpu,
            Efficiency::default(),
            2,
            link_by_name("nvlink3"),
        );
        let mut b = BatchShape::default();
        b.add_prefill_chunk(0, 2048, true);
        let (a, c) = (tp1.forward_s(&b), tp2.forward_s(&b));
        assert!(c < a * 0.6 && c > a * 0.5, "tp2 {c} vs tp1 {a}");
    }
}
