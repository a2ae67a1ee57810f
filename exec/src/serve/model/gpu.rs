//! The bf16 GPU forward of `model::llava`: our kernels (`kernels/llava.cu`) for everything but
//! the matrix products, which go to cuBLASLt (bias and residual add fused into its epilogue).
//! Every function here only *queues* work on a stream; nothing synchronises, so the decode step
//! can be captured into a CUDA graph.

use super::cpu;
use super::host::{HostWeights, f32_to_bf16, flatten, tensor_seed};
use super::llava::{LlavaConfig, LlavaWeights, TensorSpec};
use crate::cuda::device::{DeviceBuffer, Event, Gpu, Stream};
use crate::cuda::gemm::{Epilogue, Lt, Plan};
use crate::cuda::kernels::{Kernel, Module, grid_for};
use crate::error::{Error, Result};
use crate::kargs;
use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

/// The model's kernels, compiled with NVRTC when a model is loaded.
pub const LLAVA_SRC: &str = include_str!("../../../../kernels/llava.cu");

/// Every kernel of `kernels/llava.cu` the engine uses.
pub const KERNELS: [&str; 20] = [
    "gemv",
    "fill_uniform",
    "zero_cols",
    "rmsnorm",
    "layernorm",
    "rope_kv_append",
    "silu_mul",
    "gelu_erf",
    "quick_gelu",
    "add",
    "embed_splice",
    "gather_rows",
    "im2col",
    "clip_embed",
    "drop_cls",
    "flash_attn_d64",
    "flash_attn_d128",
    "decode_attn",
    "decode_attn_short",
    "argmax_rows",
];

/// Kernels launched as programmatic dependents on GPUs that have them (compute capability 9+):
/// each begins with `after_predecessor` in kernels/llava.cu. The small kernels between a decode
/// step's products, where launch latency is a large part of the time.
pub const EARLY_LAUNCH: [&str; 10] = [
    "gemv",
    "rmsnorm",
    "layernorm",
    "silu_mul",
    "embed_splice",
    "gather_rows",
    "rope_kv_append",
    "decode_attn",
    "decode_attn_short",
    "argmax_rows",
];

/// Rows of the products our `gemv` kernel takes (batch-1 decode), where it races cuBLASLt.
/// An earlier kernel took up to 8 but lost to cuBLASLt above one (exec/REPORT.md §6).
pub const GEMV_MAX_M: usize = 1;

/// Which kernel runs a product of at most `GEMV_MAX_M` rows (no bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmallProducts {
    /// Per shape, whichever of gemv and the tuned cuBLASLt plan was faster when timed.
    Fastest,
    /// Always our gemv kernel (for comparison).
    Gemv,
    /// Always cuBLASLt (for comparison).
    CuBlasLt,
}

/// Tokens per KV block (as in the kernels).
pub const KV_BLOCK: usize = 16;
/// Tokens per decode-attention partition: the shortest (the buffers of partial results are sized
/// by it) and the longest (`PART` in the kernels).
pub const DECODE_PART: usize = 64;
pub const DECODE_PART_MAX: usize = 256;

/// Partition length of a decode step of `batch` sequences: short for small batches, where
/// sequences × heads alone would leave most SMs idle; long for large ones, where fewer
/// partial results to merge is the better trade.
pub fn decode_part(batch: usize) -> usize {
    if batch < 8 {
        DECODE_PART
    } else {
        DECODE_PART_MAX
    }
}

/// The decode-attention kernel for partitions of `part` tokens: the short-partition one loads
/// each part's keys and values at once (kernels/llava.cu `decode_attn_body`).
pub fn decode_attn_kernel(part: usize) -> &'static str {
    if part <= DECODE_PART {
        "decode_attn_short"
    } else {
        "decode_attn"
    }
}

/// Query rows of a flash-attention block (kernels/llava.cu: 4 warps of 16 rows).
pub const FLASH_ROWS: usize = 64;

/// The flash-attention kernel for heads of `head_dim`.
pub fn flash_attn_kernel(head_dim: usize) -> &'static str {
    if head_dim == 64 {
        "flash_attn_d64"
    } else {
        "flash_attn_d128"
    }
}

/// A bf16 tensor on the GPU.
pub struct DTensor {
    pub buf: DeviceBuffer,
    pub shape: Vec<usize>,
}

impl DTensor {
    pub fn ptr(&self) -> u64 {
        self.buf.ptr
    }
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct Kernels {
    k: HashMap<&'static str, Kernel>,
    _module: Module,
}

impl Kernels {
    pub fn load(gpu: &Gpu) -> Result<Kernels> {
        let m = Module::load(gpu, "llava.cu", LLAVA_SRC)?;
        let mut k = HashMap::new();
        let early = gpu.info.compute_capability.0 >= 9;
        for name in KERNELS {
            let mut f = m.function(name)?;
            f.early_launch = early && EARLY_LAUNCH.contains(&name);
            k.insert(name, f);
        }
        Ok(Kernels { k, _module: m })
    }
    pub fn get(&self, name: &str) -> &Kernel {
        // Every name used below is in KERNELS, which `load` resolved.
        &self.k[name]
    }
}

/// Reads back a device buffer of bf16 as f32.
pub fn download_bf16(b: &DeviceBuffer, elems: usize) -> Result<Vec<f32>> {
    let mut raw = vec![0u8; elems * 2];
    b.copy_to_host(&mut raw)?;
    Ok(raw
        .chunks_exact(2)
        .map(|c| super::host::bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect())
}

pub fn download_f32(b: &DeviceBuffer, elems: usize) -> Result<Vec<f32>> {
    let mut raw = vec![0u8; elems * 4];
    b.copy_to_host(&mut raw)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub fn download_i32(b: &DeviceBuffer, n: usize) -> Result<Vec<i32>> {
    let mut raw = vec![0u8; n * 4];
    b.copy_to_host(&mut raw)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Copy `dst.len()` bytes from device address `ptr` (synchronous).
pub fn read_ptr(gpu: &Gpu, ptr: u64, dst: &mut [u8]) -> Result<()> {
    gpu.bind()?;
    crate::cuda::device::ck!(
        cudarc::driver::sys::cuMemcpyDtoH_v2(
            dst.as_mut_ptr() as *mut std::ffi::c_void,
            ptr,
            dst.len()
        ),
        "cuMemcpyDtoH({} bytes)",
        dst.len()
    )
}

pub fn upload_bf16(gpu: &Gpu, v: &[f32]) -> Result<DeviceBuffer> {
    let b = gpu.alloc(v.len() * 2)?;
    let raw: Vec<u8> = v
        .iter()
        .flat_map(|x| f32_to_bf16(*x).to_le_bytes())
        .collect();
    b.copy_from_host(&raw)?;
    Ok(b)
}

pub fn upload_i32(gpu: &Gpu, v: &[i32]) -> Result<DeviceBuffer> {
    let b = gpu.alloc(v.len().max(1) * 4)?;
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.copy_from_host(&raw)?;
    Ok(b)
}

pub fn upload_f64(gpu: &Gpu, v: &[f64]) -> Result<DeviceBuffer> {
    let b = gpu.alloc(v.len().max(1) * 8)?;
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.copy_from_host(&raw)?;
    Ok(b)
}

/// The paged KV cache of all layers: `[layer][block][K|V][kv_head][slot 16][head_dim]` bf16.
pub struct KvPool {
    pub buf: DeviceBuffer,
    pub blocks: usize,
    pub layer_bytes: usize,
}

impl KvPool {
    pub fn new(gpu: &Gpu, c: &LlavaConfig, blocks: usize) -> Result<KvPool> {
        let layer_bytes = blocks * 2 * c.llm.kv_heads * KV_BLOCK * c.llm.head_dim * 2;
        Ok(KvPool {
            buf: gpu.alloc(layer_bytes * c.llm.layers)?,
            blocks,
            layer_bytes,
        })
    }
    /// Blocks that fit in `bytes`.
    pub fn blocks_for(c: &LlavaConfig, bytes: u64) -> usize {
        let per_block = (c.llm.layers * 2 * c.llm.kv_heads * KV_BLOCK * c.llm.head_dim * 2) as u64;
        (bytes / per_block) as usize
    }
    pub fn layer(&self, l: usize) -> u64 {
        self.buf.ptr + (l * self.layer_bytes) as u64
    }
}

/// How `layernorm` / `rmsnorm` cover `rows` rows of `d` values: `group` threads per row (whole
/// warps, enough that each holds at most 4 of the row's 16-byte vectors in registers —
/// kernels/llava.cu `HELD` — up to 256: the kernels' launch bound, which leaves them the
/// registers for that), `block / group` rows per block, one pass over the rows.
/// A row of 4096 gets 128 threads, so even a batch of one row has 128 loads in flight, not 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormLaunch {
    pub grid: u32,
    pub block: u32,
    pub group: u32,
}

impl NormLaunch {
    pub fn new(rows: usize, d: usize) -> NormLaunch {
        const HELD: usize = 4;
        let group = if d.is_multiple_of(8) {
            (d / 8).div_ceil(HELD).next_multiple_of(32).clamp(32, 256)
        } else {
            32
        };
        let per_block = (256 / group).max(1);
        NormLaunch {
            grid: rows.div_ceil(per_block).max(1) as u32,
            block: (group * per_block) as u32,
            group: group as u32,
        }
    }
}

/// Device scratch that grows on demand (never shrinks, so graph-captured addresses stay put
/// as long as nothing larger is asked for).
pub struct Scratch {
    bufs: HashMap<&'static str, DeviceBuffer>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            bufs: HashMap::new(),
        }
    }
    pub fn get(&mut self, gpu: &Gpu, name: &'static str, bytes: usize) -> Result<u64> {
        self.get_with(gpu, name, bytes, |_| Ok(()))
    }

    /// As `get`, with a new buffer zeroed on `s` (for counters that kernels leave at zero).
    pub fn get_zeroed(
        &mut self,
        gpu: &Gpu,
        name: &'static str,
        bytes: usize,
        s: &Stream,
    ) -> Result<u64> {
        self.get_with(gpu, name, bytes, |b| b.memset_async(0, s))
    }

    /// The buffer `name` of at least `bytes`; a new one (the old is freed first) goes through
    /// `init`.
    fn get_with(
        &mut self,
        gpu: &Gpu,
        name: &'static str,
        bytes: usize,
        init: impl FnOnce(&DeviceBuffer) -> Result<()>,
    ) -> Result<u64> {
        if self.bufs.get(name).is_none_or(|b| b.bytes < bytes) {
            self.bufs.remove(name);
            let b = gpu.alloc(bytes)?;
            init(&b)?;
            self.bufs.insert(name, b);
        }
        Ok(self.bufs[name].ptr)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Device addresses of a decoder pass's scratch (0: not used by this kind of pass).
#[derive(Default)]
struct DecoderBuffers {
    h: u64,
    qkv: u64,
    attn: u64,
    gu: u64,
    act: u64,
    part_o: u64,
    part_ml: u64,
    done: u64,
}

/// How the decoder's attention sees its context.
pub enum Attn {
    /// Prompts packed back to back with no padding; no earlier context.
    Prefill {
        cu_seqlens: u64,
        seqs: usize,
        max_len: usize,
    },
    /// One new token per sequence; K/V through block tables ([batch, max_blocks] i32) and
    /// context lengths (i32, including the new token; 0 = padding row).
    Decode {
        tables: u64,
        ctx: u64,
        max_blocks: usize,
    },
}

/// Per-token inputs of a decoder pass (device i32 arrays of length n).
pub struct TokenInputs {
    pub positions: u64,
    /// block·16 + slot for each token's K/V; −1 skips (padding)
    pub slots: u64,
}

pub struct GpuModel {
    pub cfg: LlavaConfig,
    pub w: LlavaWeights<DTensor>,
    pub k: Kernels,
    pub lt: Lt,
    plans: RefCell<HashMap<ProductKey, Plan>>,
    /// Small-M shapes timed in gemv and in their tuned cuBLASLt plan.
    races: RefCell<HashMap<ProductKey, ProductRace>>,
    pub ws: DeviceBuffer,
    /// The decoder's rotary frequencies (f64 [head_dim / 2], `cpu::rope_inv_freq`).
    rope_inv_freq: DeviceBuffer,
    pub gpu: Gpu,
    pub small_products: SmallProducts,
}

/// (m, n, k, epilogue) of a product.
pub type ProductKey = (usize, usize, usize, Epilogue);

/// Seconds one product took in each kernel when timed alone (median of 5 runs, each from a
/// cold L2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProductRace {
    pub gemv_s: f64,
    pub cublaslt_s: f64,
}

impl ProductRace {
    pub fn gemv_wins(&self) -> bool {
        self.gemv_s < self.cublaslt_s
    }
}

const WORKSPACE: usize = 32 << 20;

impl GpuModel {
    fn new(cfg: LlavaConfig, gpu: Gpu, w: LlavaWeights<DTensor>, k: Kernels) -> Result<GpuModel> {
        if cfg.llm.head_dim != 128 {
            return Err(Error::Invalid(format!(
                "decoder head_dim {} : the engine's decode attention is built for 128",
                cfg.llm.head_dim
            )));
        }
        if cfg.vision.head_dim() != 64 && cfg.vision.head_dim() != 128 {
            return Err(Error::Invalid(format!(
                "vision head_dim {}: the attention kernel is built for 64 or 128",
                cfg.vision.head_dim()
            )));
        }
        let ws = gpu.alloc(WORKSPACE)?;
        let rope_inv_freq = upload_f64(
            &gpu,
            &cpu::rope_inv_freq(cfg.llm.head_dim, cfg.llm.rope_theta),
        )?;
        Ok(GpuModel {
            cfg,
            w,
            k,
            lt: Lt::new()?,
            plans: RefCell::new(HashMap::new()),
            races: RefCell::new(HashMap::new()),
            ws,
            rope_inv_freq,
            gpu,
            small_products: SmallProducts::Fastest,
        })
    }

    /// Random weights with the exact shapes, generated on the GPU (seeded; nothing downloaded).
    pub fn random(cfg: &LlavaConfig, gpu: Gpu, seed: u64) -> Result<GpuModel> {
        let k = Kernels::load(&gpu)?;
        let s = gpu.stream()?;
        let mut index = 0usize;
        let w = LlavaWeights::build(cfg, |spec: &TensorSpec| {
            let n = spec.shape.iter().product::<usize>();
            let buf = gpu.alloc(n * 2)?;
            let (scale, offset) = spec.init.scale_offset();
            let seed = tensor_seed(seed, index);
            index += 1;
            let (p, n64) = (buf.ptr, n as u64);
            k.get("fill_uniform").launch(
                grid_for(n64, 256, gpu.info.sms),
                256,
                &s,
                &mut kargs![p, n64, seed, scale, offset],
            )?;
            if spec.name == "patch_embed" {
                let (rows, kk, kp) = (
                    cfg.vision.hidden as u64,
                    cfg.vision.patch_dim() as u32,
                    cfg.vision.patch_dim_padded() as u32,
                );
                k.get("zero_cols").launch(
                    grid_for(rows * (kp - kk) as u64, 256, gpu.info.sms),
                    256,
                    &s,
                    &mut kargs![p, rows, kk, kp],
                )?;
            }
            Ok(DTensor {
                buf,
                shape: spec.shape.clone(),
            })
        })?;
        s.synchronize()?;
        GpuModel::new(cfg.clone(), gpu, w, k)
    }

    /// Upload host weights (f32, rounded to bf16).
    pub fn from_host(cfg: &LlavaConfig, gpu: Gpu, hw: &HostWeights) -> Result<GpuModel> {
        let k = Kernels::load(&gpu)?;
        let flat = flatten(hw);
        let mut it = flat.into_iter();
        let w = LlavaWeights::build(cfg, |spec| {
            let v = it
                .next()
                .ok_or_else(|| Error::Check("host weights shorter than the model".into()))?;
            Ok(DTensor {
                buf: upload_bf16(&gpu, v)?,
                shape: spec.shape.clone(),
            })
        })?;
        GpuModel::new(cfg.clone(), gpu, w, k)
    }

    /// Load a safetensors checkpoint (file or folder) straight to the GPU, one tensor at a time.
    pub fn load(cfg: &LlavaConfig, gpu: Gpu, path: &Path) -> Result<GpuModel> {
        let k = Kernels::load(&gpu)?;
        let ck = super::host::Checkpoint::open(path)?;
        let w = LlavaWeights::build(cfg, |spec| {
            let v = ck.read_spec(cfg, spec)?;
            Ok(DTensor {
                buf: upload_bf16(&gpu, &v)?,
                shape: spec.shape.clone(),
            })
        })?;
        GpuModel::new(cfg.clone(), gpu, w, k)
    }

    pub fn weight_bytes(&self) -> u64 {
        flatten(&self.w).iter().map(|t| t.elems() as u64 * 2).sum()
    }

    /// Bytes of the decoder's weights a decode step reads (everything but the vision side; the
    /// embedding table only in the rows it gathers, ignored).
    pub fn decoder_weight_bytes(&self) -> u64 {
        let w = &self.w;
        let mut b = (w.norm.elems() + w.lm_head.elems()) as u64 * 2;
        for l in &w.layers {
            b += [&l.attn_norm, &l.qkv, &l.o, &l.mlp_norm, &l.gate_up, &l.down]
                .iter()
                .map(|t| t.elems() as u64 * 2)
                .sum::<u64>();
        }
        b
    }

    /// Plans for every product of a decode step of `m` rows, each the fastest on this GPU of
    /// up to 16 cuBLASLt heuristic candidates and, for m ≤ GEMV_MAX_M, of our gemv kernel
    /// (each timed from a cold L2 into scratch outputs, so nothing the step reads changes).
    /// Called before every decode step, outside graph capture (which cannot time): a plan made
    /// inside capture would get the heuristic's first guess. Nothing to do once the plans exist.
    pub fn tune_decode_plans(&self, s: &Stream, m: usize) -> Result<()> {
        let small = m <= GEMV_MAX_M;
        if small && self.small_products == SmallProducts::Gemv {
            return Ok(());
        }
        let race_gemv = small && self.small_products == SmallProducts::Fastest;
        let Some(l) = self.w.layers.first() else {
            return Ok(());
        };
        let plain = Epilogue::default();
        let acc = Epilogue {
            accumulate: true,
            ..plain
        };
        let f32o = Epilogue {
            out_f32: true,
            ..plain
        };
        let products: Vec<(&DTensor, Epilogue)> = [
            (&l.qkv, plain),
            (&l.o, acc),
            (&l.gate_up, plain),
            (&l.down, acc),
            (&self.w.lm_head, f32o),
        ]
        .into_iter()
        .filter(|(w, ep)| {
            let key = (m, w.shape[0], w.shape[1], *ep);
            !self.plans.borrow().contains_key(&key)
                || (race_gemv && !self.races.borrow().contains_key(&key))
        })
        .collect();
        if products.is_empty() {
            return Ok(());
        }
        let kmax = products.iter().map(|p| p.0.shape[1]).max().unwrap_or(1);
        let nmax = products.iter().map(|p| p.0.shape[0]).max().unwrap_or(1);
        let x = self.gpu.alloc(m * kmax * 2)?;
        let y = self.gpu.alloc(m * nmax * 4)?;
        let (e0, e1) = (Event::timing(&self.gpu)?, Event::timing(&self.gpu)?);
        // In a decode step every weight comes from HBM (13 GB stream through the L2 between two
        // uses of one matrix); timed back to back, a 4096² matrix would sit in the 50 MB L2 and
        // read at 4 TB/s. So each run starts with the L2 flushed by writing twice its size.
        let flush = self
            .gpu
            .alloc((2 * self.gpu.info.l2_bytes as usize).max(1 << 20))?;
        // Median seconds of 5 runs after a warm-up (a candidate the library turns down fails
        // there).
        let time = |run: &dyn Fn() -> Result<()>| -> Result<f64> {
            run()?;
            let mut t = Vec::with_capacity(5);
            for _ in 0..5 {
                flush.memset_async(0, s)?;
                e0.record(s)?;
                run()?;
                e1.record(s)?;
                t.push(e0.elapsed_ms(&e1)? * 1e-3);
            }
            Ok(crate::stats::median(&t))
        };
        for (w, ep) in products {
            let (n, k) = (w.shape[0], w.shape[1]);
            let key = (m, n, k, ep);
            let run_lt = |p: &Plan| {
                self.lt
                    .run_with(p, x.ptr, w.ptr(), y.ptr, 0, self.ws.ptr, s)
            };
            let lt_s = match self.plans.borrow_mut().entry(key) {
                Entry::Occupied(e) => time(&|| run_lt(e.get()))?,
                Entry::Vacant(v) => {
                    let mut p = self.lt.plan_with(m, n, k, WORKSPACE, 16, ep)?;
                    let (t, _) = p.choose_fastest(|p| time(&|| run_lt(p)))?;
                    v.insert(p);
                    t
                }
            };
            if race_gemv {
                let gemv_s = time(&|| self.gemv(s, x.ptr, w, y.ptr, ep))?;
                let race = ProductRace {
                    gemv_s,
                    cublaslt_s: lt_s,
                };
                self.races.borrow_mut().insert(key, race);
            }
        }
        s.synchronize()
    }

    /// The small-M products timed so far, by (m, n, k).
    pub fn product_races(&self) -> Vec<((usize, usize, usize), ProductRace)> {
        let mut v: Vec<_> = self
            .races
            .borrow()
            .iter()
            .map(|(k, r)| ((k.0, k.1, k.2), *r))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Y[m, n] (= or +=) X[m, k] · W[n, k]ᵀ (+ bias), planned once per shape.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        s: &Stream,
        x: u64,
        w: &DTensor,
        y: u64,
        m: usize,
        bias: Option<&DTensor>,
        accumulate: bool,
        out_f32: bool,
    ) -> Result<()> {
        let (n, k) = (w.shape[0], w.shape[1]);
        let ep = Epilogue {
            bias: bias.is_some(),
            accumulate,
            out_f32,
        };
        let key = (m, n, k, ep);
        let gemv = m <= GEMV_MAX_M
            && bias.is_none()
            && match self.small_products {
                SmallProducts::Gemv => true,
                SmallProducts::CuBlasLt => false,
                SmallProducts::Fastest => {
                    self.races.borrow().get(&key).is_some_and(|r| r.gemv_wins())
                }
            };
        if gemv {
            return self.gemv(s, x, w, y, ep);
        }
        crate::cuda::timeline::mark(s, || format!("cuBLASLt {m}×{n}×{k}"))?;
        let mut plans = self.plans.borrow_mut();
        let p = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(self.lt.plan_with(m, n, k, WORKSPACE, 1, ep)?),
        };
        self.lt.run_with(
            p,
            x,
            w.ptr(),
            y,
            bias.map_or(0, |b| b.ptr()),
            self.ws.ptr,
            s,
        )
    }

    /// The product of one row X[k] through our gemv kernel (no bias).
    pub fn gemv(&self, s: &Stream, x: u64, w: &DTensor, y: u64, ep: Epilogue) -> Result<()> {
        let (n, k) = (w.shape[0], w.shape[1]);
        let (n32, k32) = (n as u32, k as u32);
        let (acc, f32o, wp) = (ep.accumulate as i32, ep.out_f32 as i32, w.ptr());
        let blocks = n.div_ceil(2).div_ceil(8) as u32; // 8 warps of 2 rows per block
        self.k
            .get("gemv")
            .launch(blocks, 256, s, &mut kargs![x, wp, y, n32, k32, acc, f32o])
    }

    fn grid(&self, n: u64) -> u32 {
        grid_for(n, 256, self.gpu.info.sms)
    }

    /// Vision tower + projector: pixels [images, 3, S, S] bf16 → embeddings [images·np, d] bf16.
    pub fn encode(
        &self,
        s: &Stream,
        pixels: u64,
        images: usize,
        out: u64,
        sc: &mut Scratch,
    ) -> Result<()> {
        let v = &self.cfg.vision;
        let g = &self.gpu;
        let (dv, np, npos) = (v.hidden, v.patches(), v.positions());
        let rows = images * npos;
        let kp = v.patch_dim_padded();
        let patches = sc.get(g, "v_patches", images * np * kp * 2)?;
        let pe = sc.get(g, "v_pe", images * np * dv * 2)?;
        let x = sc.get(g, "v_x", rows * dv * 2)?;
        let h = sc.get(g, "v_h", rows * dv * 2)?;
        let qkv = sc.get(g, "v_qkv", rows * 3 * dv * 2)?;
        let attn = sc.get(g, "v_attn", rows * dv * 2)?;
        let f = sc.get(g, "v_f", rows * v.intermediate * 2)?;
        let cu: Vec<i32> = (0..=images).map(|i| (i * npos) as i32).collect();
        let cu_key = sc.get(g, "v_cu", cu.len() * 4)?;
        let cu_raw: Vec<u8> = cu.iter().flat_map(|x| x.to_le_bytes()).collect();
        crate::cuda::device::ck!(
            cudarc::driver::sys::cuMemcpyHtoDAsync_v2(
                cu_key,
                cu_raw.as_ptr() as *const std::ffi::c_void,
                cu_raw.len(),
                s.raw
            ),
            "cuMemcpyHtoDAsync(cu_seqlens)"
        )?;
        // The copy reads host memory that must live until it is done.
        s.synchronize()?;
        let (im, ch, size, p, kp32) = (
            images as u32,
            v.channels as u32,
            v.image_size as u32,
            v.patch as u32,
            kp as u32,
        );
        self.k.get("im2col").launch(
            self.grid((images * np * kp) as u64),
            256,
            s,
            &mut kargs![pixels, patches, im, ch, size, p, kp32],
        )?;
        self.gemm(
            s,
            patches,
            &self.w.patch_embed,
            pe,
            images * np,
            None,
            false,
            false,
        )?;
        let (np32, dv32) = (np as u32, dv as u32);
        let (cls, pos) = (self.w.class_embed.ptr(), self.w.pos_embed.ptr());
        self.k.get("clip_embed").launch(
            self.grid((rows * dv) as u64),
            256,
            s,
            &mut kargs![pe, cls, pos, h, im, np32, dv32],
        )?;
        self.layernorm(s, h, &self.w.pre_ln_w, &self.w.pre_ln_b, x, rows, dv)?;
        let hd = v.head_dim();
        let attn_k = flash_attn_kernel(hd);
        for l in &self.w.vision {
            self.layernorm(s, x, &l.ln1_w, &l.ln1_b, h, rows, dv)?;
            self.gemm(s, h, &l.qkv_w, qkv, rows, Some(&l.qkv_b), false, false)?;
            let (stride, heads, k_off, v_off) =
                ((3 * dv) as u32, v.heads as u32, dv as u32, (2 * dv) as u32);
            let (causal, scale) = (0i32, 1.0f32 / (hd as f32).sqrt());
            self.k.get(attn_k).launch3(
                (npos.div_ceil(FLASH_ROWS) as u32, heads, im),
                128,
                s,
                &mut kargs![
                    qkv, attn, cu_key, stride, dv32, heads, heads, k_off, v_off, causal, scale
                ],
            )?;
            self.gemm(s, attn, &l.o_w, x, rows, Some(&l.o_b), true, false)?;
            self.layernorm(s, x, &l.ln2_w, &l.ln2_b, h, rows, dv)?;
            self.gemm(s, h, &l.fc1_w, f, rows, Some(&l.fc1_b), false, false)?;
            let nf = (rows * v.intermediate) as u64;
            self.k
                .get("quick_gelu")
                .launch(self.grid(nf), 256, s, &mut kargs![f, nf])?;
            self.gemm(s, f, &l.fc2_w, x, rows, Some(&l.fc2_b), true, false)?;
        }
        self.k.get("drop_cls").launch(
            self.grid((images * np * dv) as u64),
            256,
            s,
            &mut kargs![x, h, im, np32, dv32],
        )?;
        let d = self.cfg.llm.hidden;
        let p1 = sc.get(g, "v_p1", images * np * d * 2)?;
        self.gemm(
            s,
            h,
            &self.w.proj1_w,
            p1,
            images * np,
            Some(&self.w.proj1_b),
            false,
            false,
        )?;
        let n1 = (images * np * d) as u64;
        self.k
            .get("gelu_erf")
            .launch(self.grid(n1), 256, s, &mut kargs![p1, n1])?;
        self.gemm(
            s,
            p1,
            &self.w.proj2_w,
            out,
            images * np,
            Some(&self.w.proj2_b),
            false,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn layernorm(
        &self,
        s: &Stream,
        x: u64,
        w: &DTensor,
        b: &DTensor,
        y: u64,
        rows: usize,
        d: usize,
    ) -> Result<()> {
        let (wp, bp, d32, eps) = (w.ptr(), b.ptr(), d as u32, self.cfg.vision.eps);
        let (r32, nl) = (rows as u32, NormLaunch::new(rows, d));
        let group = nl.group;
        self.k.get("layernorm").launch(
            nl.grid,
            nl.block,
            s,
            &mut kargs![x, wp, bp, y, r32, d32, eps, group],
        )
    }

    fn rmsnorm(&self, s: &Stream, x: u64, w: &DTensor, y: u64, rows: usize) -> Result<()> {
        let (wp, d32, eps) = (w.ptr(), self.cfg.llm.hidden as u32, self.cfg.llm.eps);
        let (r32, nl) = (rows as u32, NormLaunch::new(rows, d32 as usize));
        let group = nl.group;
        self.k.get("rmsnorm").launch(
            nl.grid,
            nl.block,
            s,
            &mut kargs![x, wp, y, r32, d32, eps, group],
        )
    }

    /// Input rows: token embeddings with image rows spliced in (i32 arrays of length n; an
    /// image row index ≥ 0 replaces the token).
    pub fn embed(
        &self,
        s: &Stream,
        tokens: u64,
        img_rows: u64,
        images: u64,
        out: u64,
        n: usize,
    ) -> Result<()> {
        let dv = (self.cfg.llm.hidden / 8) as u32;
        let (table, n32) = (self.w.embed.ptr(), n as u32);
        self.k.get("embed_splice").launch(
            self.grid(n as u64 * dv as u64),
            256,
            s,
            &mut kargs![tokens, img_rows, table, images, out, n32, dv],
        )
    }

    /// Reserves the scratch of a decode step of up to n rows, so that steps of n or fewer
    /// (and graphs captured from them) never allocate.
    pub fn decoder_scratch(
        &self,
        sc: &mut Scratch,
        n: usize,
        max_parts: usize,
        s: &Stream,
    ) -> Result<()> {
        self.decoder_buffers(sc, n, max_parts, true, s).map(|_| ())
    }

    fn decoder_buffers(
        &self,
        sc: &mut Scratch,
        n: usize,
        max_parts: usize,
        decode: bool,
        s: &Stream,
    ) -> Result<DecoderBuffers> {
        let l = &self.cfg.llm;
        let g = &self.gpu;
        let mut b = DecoderBuffers {
            h: sc.get(g, "d_h", n * l.hidden * 2)?,
            qkv: sc.get(g, "d_qkv", n * l.qkv_dim() * 2)?,
            attn: sc.get(g, "d_attn", n * l.q_dim() * 2)?,
            gu: sc.get(g, "d_gu", n * 2 * l.intermediate * 2)?,
            act: sc.get(g, "d_act", n * l.intermediate * 2)?,
            ..DecoderBuffers::default()
        };
        // Partial results of split decode attention and the count of each (sequence, head)'s
        // finished partitions (not used by prefill, which must not grow them: decode graphs
        // hold their addresses).
        if decode {
            let parts = n * l.heads * max_parts.max(1);
            b.part_o = sc.get(g, "d_po", parts * 128 * 4)?;
            b.part_ml = sc.get(g, "d_pml", parts * 2 * 4)?;
            b.done = sc.get_zeroed(g, "d_done", n * l.heads * 4, s)?;
        }
        Ok(b)
    }

    /// The decoder over n tokens whose input rows are in `x` ([n, d], updated in place: the
    /// residual stream). K/V of every token go to the pool.
    #[allow(clippy::too_many_arguments)]
    pub fn decoder(
        &self,
        s: &Stream,
        x: u64,
        n: usize,
        inp: &TokenInputs,
        attn_kind: &Attn,
        pool: &KvPool,
        sc: &mut Scratch,
        max_parts: usize,
    ) -> Result<()> {
        let l = &self.cfg.llm;
        let decode = matches!(attn_kind, Attn::Decode { .. });
        let DecoderBuffers {
            h,
            qkv,
            attn,
            gu,
            act,
            part_o: po,
            part_ml: pml,
            done,
        } = self.decoder_buffers(sc, n, max_parts, decode, s)?;
        let (n32, stride, hd) = (n as u32, l.qkv_dim() as u32, l.head_dim as u32);
        let (heads, kvh) = (l.heads as u32, l.kv_heads as u32);
        let (rot, freqs) = (l.heads + l.kv_heads, self.rope_inv_freq.ptr);
        let k_off = l.q_dim() as u32;
        let v_off = (l.q_dim() + l.kv_dim()) as u32;
        let pos = inp.positions;
        let slots = inp.slots;
        let scale = 1.0f32 / (l.head_dim as f32).sqrt();
        for (li, lw) in self.w.layers.iter().enumerate() {
            self.rmsnorm(s, x, &lw.attn_norm, h, n)?;
            self.gemm(s, h, &lw.qkv, qkv, n, None, false, false)?;
            let layer = pool.layer(li);
            self.k.get("rope_kv_append").launch(
                self.grid((n * (rot * l.head_dim / 16 + l.kv_heads * l.head_dim / 8)) as u64),
                256,
                s,
                &mut kargs![qkv, pos, slots, layer, freqs, n32, stride, heads, kvh, hd],
            )?;
            match attn_kind {
                Attn::Prefill {
                    cu_seqlens,
                    seqs,
                    max_len,
                } => {
                    let (cu, causal, qd) = (*cu_seqlens, 1i32, l.q_dim() as u32);
                    self.k.get(flash_attn_kernel(l.head_dim)).launch3(
                        (max_len.div_ceil(FLASH_ROWS) as u32, heads, *seqs as u32),
                        128,
                        s,
                        &mut kargs![
                            qkv, attn, cu, stride, qd, heads, kvh, k_off, v_off, causal, scale
                        ],
                    )?;
                }
                Attn::Decode {
                    tables,
                    ctx,
                    max_blocks,
                } => {
                    let (t, c, mb, mp) = (*tables, *ctx, *max_blocks as u32, max_parts as u32);
                    let part = decode_part(n);
                    // Partitions of the longest context at this length; the partial results keep
                    // the stride of the shortest partition.
                    let launched = (max_parts * DECODE_PART).div_ceil(part) as u32;
                    let kernel = self.k.get(decode_attn_kernel(part));
                    let (part, qd) = (part as u32, l.q_dim() as u32);
                    kernel.launch3(
                        (launched, heads, n32),
                        128,
                        s,
                        &mut kargs![
                            qkv, t, c, layer, po, pml, done, attn, stride, heads, kvh, mb, mp,
                            part, qd, scale
                        ],
                    )?;
                }
            }
            self.gemm(s, attn, &lw.o, x, n, None, true, false)?;
            self.rmsnorm(s, x, &lw.mlp_norm, h, n)?;
            self.gemm(s, h, &lw.gate_up, gu, n, None, false, false)?;
            let inter = l.intermediate as u32;
            self.k.get("silu_mul").launch(
                self.grid((n * l.intermediate) as u64),
                256,
                s,
                &mut kargs![gu, act, n32, inter],
            )?;
            self.gemm(s, act, &lw.down, x, n, None, true, false)?;
        }
        Ok(())
    }

    /// Logits (f32 [m, vocab]) of rows `rows` (i32 [m]) of the residual stream x, and their
    /// argmax (i32 [m]).
    #[allow(clippy::too_many_arguments)]
    pub fn logits(
        &self,
        s: &Stream,
        x: u64,
        rows: u64,
        m: usize,
        logits: u64,
        argmax: u64,
        sc: &mut Scratch,
    ) -> Result<()> {
        let d = self.cfg.llm.hidden;
        let sel = sc.get(&self.gpu, "l_sel", m * d * 2)?;
        let hn = sc.get(&self.gpu, "l_norm", m * d * 2)?;
        let (m32, d32) = (m as u32, d as u32);
        self.k.get("gather_rows").launch(
            self.grid((m * d) as u64),
            256,
            s,
            &mut kargs![x, rows, sel, m32, d32],
        )?;
        self.rmsnorm(s, sel, &self.w.norm, hn, m)?;
        self.gemm(s, hn, &self.w.lm_head, logits, m, None, false, true)?;
        let v = self.cfg.llm.vocab as u32;
        self.k
            .get("argmax_rows")
            .launch(m32, 256, s, &mut kargs![logits, argmax, v])
    }
}

#[cfg(test)]
mod tests {
    use super::{EARLY_LAUNCH, KERNELS, LLAVA_SRC, NormLaunch};

    #[test]
    fn model_kernels_are_embedded() {
        for k in KERNELS {
            assert!(
                LLAVA_SRC.contains(&format!("void {k}(")) || LLAVA_SRC.contains(&format!(") {k}(")),
                "{k} missing from llava.cu"
            );
        }
    }

    /// The body of `extern "C"` kernel `name` in kernels/llava.cu.
    fn kernel_body(name: &str) -> &'static str {
        let sig = LLAVA_SRC
            .find(&format!(" {name}("))
            .unwrap_or_else(|| panic!("{name} not in llava.cu"));
        let open = sig + LLAVA_SRC[sig..].find('{').unwrap();
        let mut depth = 0;
        for (i, c) in LLAVA_SRC[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &LLAVA_SRC[open..open + i];
                    }
                }
                _ => {}
            }
        }
        panic!("{name}: unbalanced braces")
    }

    #[test]
    fn early_launched_kernels_wait_for_their_predecessor() {
        // Launched before the kernel ahead finishes, a kernel that does not wait would read
        // its inputs half-written: each must call after_predecessor, itself or through the
        // shared body it runs.
        for name in EARLY_LAUNCH {
            assert!(KERNELS.contains(&name), "{name}");
            let body = kernel_body(name);
            let waits = ["after_predecessor()", "norm_rows(", "decode_attn_body<"]
                .iter()
                .any(|w| body.contains(w));
            assert!(waits, "{name} does not wait for its predecessor");
        }
        assert!(
            kernel_body("norm_rows")
                .trim_start_matches('{')
                .trim_start()
                .starts_with("after_predecessor();")
        );
        assert!(
            kernel_body("decode_attn_body")
                .trim_start_matches('{')
                .trim_start()
                .starts_with("after_predecessor();")
        );
    }

    fn nl(rows: usize, d: usize) -> (u32, u32, u32) {
        let l = NormLaunch::new(rows, d);
        (l.grid, l.block, l.group)
    }

    #[test]
    fn norm_launch_gives_each_thread_at_most_four_vectors_of_a_row() {
        // 7B rows: 512 vectors → 128 threads, two rows a block.
        assert_eq!(nl(1, 4096), (1, 256, 128));
        assert_eq!(nl(64, 4096), (32, 256, 128));
        assert_eq!(nl(9, 4096), (5, 256, 128));
        // CLIP's 1024: a warp per row, 8 rows a block; 577 rows → 73 blocks.
        assert_eq!(nl(577, 1024), (73, 256, 32));
        // 13B's 5120: 640 vectors → 160 threads, one row a block.
        assert_eq!(nl(3, 5120), (3, 160, 160));
        // Past 8192 values (256 threads) the kernel re-reads the row instead.
        assert_eq!(nl(2, 65536), (2, 256, 256));
        // Not a multiple of 8: the plain per-value path, one warp.
        assert_eq!(nl(9, 250), (2, 256, 32));
        assert_eq!(nl(0, 4096), (1, 256, 128));
    }
}
