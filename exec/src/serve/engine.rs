//! The serving engine on one GPU: vision encoding in batches, variable-length prefill of several
//! prompts in one step (packed, no padding), decode with a paged KV cache and continuous batching
//! (requests join and leave between steps), decode steps replayed as CUDA graphs captured per
//! batch-size bucket (1, 2, 4, …; the batch is padded to its bucket), greedy sampling.
//!
//! Scheduling, one `step()` at a time, is [`Scheduler`]'s (`serve::scheduler`: prefill first,
//! encoding in the same step, KV blocks reserved at admission); the engine carries out each step
//! it decides on the GPU and reports it done. Event times are host-clock seconds since the
//! engine started, taken after the step's work has finished on the GPU.
//!
//! Stage-level disaggregation splits the engine in two: a prefill worker (`hand_off: true`)
//! reserves KV for the prompt only and, instead of decoding, hands each prefilled request out
//! with its KV gathered from the paged pool into one packed buffer (`hand_off`, layout of
//! `kernels/kv_transfer.cu`); a decode worker takes such a request with its packed KV on its own
//! GPU (`submit_prefilled`), scatters it into its pool and decodes from the first token on.

use crate::cuda::device::{DeviceBuffer, Event, Gpu, PinnedBuffer, Stream, ck};
use crate::cuda::kernels::{Kernel, Module, grid_for};
use crate::error::{Error, Result};
use crate::kargs;
use crate::serve::model::gpu::{
    Attn, DECODE_PART, KV_BLOCK, KvPool, Scratch, ServedModel, SmallProducts, TokenInputs,
    download_i32,
};
use crate::serve::model::host::{IMAGE_TOKEN, mix64};
use crate::serve::scheduler::{Scheduler, SchedulerConfig, SeqSpec, Step, bucket};
use cudarc::driver::sys;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest decode batch (the largest graph bucket).
    pub max_batch: usize,
    /// Longest request (prompt + output tokens).
    pub max_context: usize,
    /// Tokens in one prefill step.
    pub prefill_tokens: usize,
    /// Images in one encode step.
    pub encode_batch: usize,
    /// KV blocks of 16 tokens; None: what fits in free memory after a 4 GiB margin.
    pub kv_blocks: Option<usize>,
    /// Replay decode steps from CUDA graphs (else launch kernel by kernel).
    pub graphs: bool,
    /// The prefill worker of a stage-level deployment: hand requests out after prefill.
    pub hand_off: bool,
    pub seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 64,
            max_context: 2048,
            prefill_tokens: 8192,
            encode_batch: 32,
            kv_blocks: None,
            graphs: true,
            hand_off: false,
            seed: 1,
        }
    }
}

/// One request: images (their sizes only: the pixels are random; LLaVA-1.5 resizes every image
/// to 336×336, Qwen2.5-VL keeps about its size, so its tokens follow from it), a prompt with
/// one `IMAGE_TOKEN` per image, and how many tokens to generate.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    pub images: Vec<(u32, u32)>,
    pub prompt: Vec<i32>,
    pub output_tokens: usize,
}

impl Request {
    /// `[BOS, image × n, text tokens…]` with random text tokens.
    pub fn synthetic(
        id: u64,
        images: usize,
        text_tokens: usize,
        output_tokens: usize,
        vocab: usize,
    ) -> Request {
        let mut prompt = vec![1];
        prompt.extend(std::iter::repeat_n(IMAGE_TOKEN, images));
        prompt.extend(
            (0..text_tokens).map(|i| 2 + (mix64(id * 7919 + i as u64) % (vocab as u64 - 2)) as i32),
        );
        Request {
            id,
            images: vec![(640, 480); images],
            prompt,
            output_tokens,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    EncodeDone,
    /// A request prefilled elsewhere has its KV in this engine's pool and joins decoding.
    KvImported,
    FirstToken,
    Token,
    Finished,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    pub id: u64,
    pub kind: EventKind,
    pub token: Option<u32>,
    /// Seconds since the engine started (host clock, after synchronisation).
    pub t: f64,
}

/// What the last step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Idle,
    Encode {
        images: usize,
    },
    /// `images` were encoded in the same step, just before the prefill.
    Prefill {
        seqs: usize,
        tokens: usize,
        images: usize,
    },
    Import {
        seqs: usize,
    },
    /// `context` is Σ context length of the batch's sequences.
    Decode {
        batch: usize,
        bucket: usize,
        context: usize,
    },
}

/// What the engine holds of a request beside the scheduler's state of it (lengths, blocks).
struct Held {
    req: Request,
    /// LLM tokens of each of its images.
    image_tokens: Vec<usize>,
    /// Position of the first generated token minus its index in the KV cache (M-RoPE packs an
    /// image's positions into fewer than its tokens; 0 for LLaVA).
    position_shift: isize,
    /// Image embeddings [Σ image_tokens, d] once encoded.
    emb: Option<DeviceBuffer>,
    /// `emb` came from the caller (`submit_encoded`): give it back through `take_spent`.
    lent: bool,
    /// Decode worker: the packed KV handed in with the request, until it is in the pool.
    kv: Option<DeviceBuffer>,
    generated: Vec<u32>,
}

impl Held {
    fn new(req: Request, a: Admitted) -> Held {
        Held {
            req,
            image_tokens: a.image_tokens,
            position_shift: a.position_shift,
            emb: None,
            lent: false,
            kv: None,
            generated: Vec::new(),
        }
    }
}

/// What `Engine::admit` found of a request: its lengths for the scheduler, and what the engine
/// keeps of it.
struct Admitted {
    spec: SeqSpec,
    image_tokens: Vec<usize>,
    position_shift: isize,
}

impl Held {
    /// Embedding bytes of its images (d-wide bf16 rows).
    fn emb_bytes(&self, d: usize) -> usize {
        self.image_tokens.iter().sum::<usize>() * d * 2
    }
}

/// A request prefilled by a prefill worker, ready for a decode worker: its KV (`tokens`
/// tokens, `kv_bytes` bytes) is packed in the buffer given to `Engine::hand_off`.
#[derive(Debug, Clone)]
pub struct HandOff {
    pub req: Request,
    pub first_token: u32,
    pub tokens: usize,
    pub kv_bytes: usize,
}

/// The paged ⇄ packed KV kernels (loaded on first use: only disaggregated workers need them),
/// and a device block table.
struct KvMover {
    _m: Module,
    gather: Kernel,
    scatter: Kernel,
    table: DeviceBuffer,
}

struct Graph {
    exec: sys::CUgraphExec,
    graph: sys::CUgraph,
}

impl Drop for Graph {
    fn drop(&mut self) {
        unsafe {
            sys::cuGraphExecDestroy(self.exec);
            sys::cuGraphDestroy(self.graph);
        }
    }
}

/// The uploaded inputs of one prefill pass (`Engine::upload_prefill`).
struct PrefillPass {
    inputs: u64,
    n: usize,
    seqs: usize,
    max_len: usize,
}

/// Fixed device buffers of the decode step (graphs capture their addresses).
struct DecodeBufs {
    /// i32 arrays, each max_batch long, one after another: tokens, positions, slots, ctx,
    /// img_rows (always −1), rows (0..max_batch); then tables [max_batch, max_blocks].
    ints: DeviceBuffer,
    host: PinnedBuffer,
    x: DeviceBuffer,
    logits: DeviceBuffer,
    argmax: DeviceBuffer,
    argmax_host: PinnedBuffer,
}

/// How repeated timings of one phase follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Back to back: the GPU stays busy, as under sustained load (and as the bench's GEMM-peak
    /// probe runs, so the bench's ratios compare like with like).
    BackToBack,
    /// Each run after the GPU has idled this long. A served encode or prefill comes between
    /// memory-bound decode steps or idle time, and starts at boost clock; back to back, an H200
    /// reaches its 700 W cap within a few runs and prefills at ~1.6 GHz instead of 1.98 GHz
    /// (exec/REPORT.md, "Validation"). After 20 ms, 200 ms or 1 s of decode steps instead of
    /// 100 ms idle, an H100's 597-token prefill took the same time within 1 %
    /// (exec/results/2026-12-07-h100-prompt-point/pace-and-loads/calibrate.txt).
    Rested(std::time::Duration),
}

pub struct Engine {
    pub model: ServedModel,
    pub cfg: EngineConfig,
    pub stream: Stream,
    pool: KvPool,
    max_blocks: usize,
    max_parts: usize,
    /// Which requests each step serves, and their KV blocks.
    sched: Scheduler,
    held: BTreeMap<u64, Held>,
    /// Caller's buffers this engine is done with.
    spent: Vec<DeviceBuffer>,
    /// Embedding buffers of finished encodes, for the next: allocating (and freeing, which
    /// waits for the GPU) per request would sit in every encode and prefill step.
    emb_free: Vec<DeviceBuffer>,
    mover: Option<KvMover>,
    /// Pinned host staging of `upload_ints`.
    staging: PinnedBuffer,
    /// Scratch of encode and prefill steps (grows with them).
    sc: Scratch,
    /// Scratch of decode steps: sized once for max_batch and frozen (a reallocation panics),
    /// because the captured graphs hold its addresses.
    dsc: Scratch,
    dec: DecodeBufs,
    graphs: BTreeMap<usize, Graph>,
    start: Instant,
    pixels_seed: u64,
}

/// Small per-step inputs through a pinned staging buffer kept between steps (pinning host memory
/// costs more than the copy); waits for the copy.
fn upload_ints(
    staging: &mut PinnedBuffer,
    gpu: &Gpu,
    stream: &Stream,
    dst: u64,
    v: &[i32],
) -> Result<()> {
    let bytes = v.len() * 4;
    if staging.bytes < bytes {
        *staging = PinnedBuffer::new(gpu, bytes.next_power_of_two())?;
    }
    unsafe {
        std::ptr::copy_nonoverlapping(v.as_ptr() as *const u8, staging.ptr as *mut u8, bytes);
    }
    crate::cuda::device::copy_htod_async(dst, staging, 0, bytes, stream)?;
    stream.synchronize()
}

/// One event of `kind` at time `t` for each of `ids` (events that carry no token).
fn stamped(ids: &[u64], kind: EventKind, t: f64) -> Vec<EngineEvent> {
    ids.iter()
        .map(|&id| EngineEvent {
            id,
            kind,
            token: None,
            t,
        })
        .collect()
}

impl Engine {
    pub fn new(model: impl Into<ServedModel>, cfg: EngineConfig) -> Result<Engine> {
        let model = model.into();
        if cfg.max_batch == 0 || cfg.encode_batch == 0 || cfg.max_context == 0 {
            return Err(Error::Invalid(
                "max batch, encode batch and max context must be at least 1".into(),
            ));
        }
        let l = model.llm().clone();
        let gpu = model.gpu();
        let stream = gpu.stream()?;
        let max_blocks = cfg.max_context.div_ceil(KV_BLOCK);
        let max_parts = cfg.max_context.div_ceil(DECODE_PART);
        let blocks = match cfg.kv_blocks {
            Some(b) => b,
            None => {
                let free = gpu.free_memory()?;
                // Activations of a full prefill step and of the encoder are the other users.
                KvPool::blocks_for(&l, free.saturating_sub(4 << 30) * 9 / 10)
            }
        };
        if blocks < max_blocks {
            return Err(Error::Invalid(format!(
                "KV pool of {blocks} blocks cannot hold one request of {} tokens",
                cfg.max_context
            )));
        }
        let pool = KvPool::new(gpu, &l, blocks)?;
        let mb = cfg.max_batch;
        let ints = gpu.alloc((6 * mb + mb * max_blocks) * 4)?;
        let host = PinnedBuffer::new(gpu, (6 * mb + mb * max_blocks) * 4)?;
        let d = l.hidden;
        let dec = DecodeBufs {
            ints,
            host,
            x: gpu.alloc(mb * d * 2)?,
            logits: gpu.alloc(mb * l.vocab * 4)?,
            argmax: gpu.alloc(mb * 4)?,
            argmax_host: PinnedBuffer::new(gpu, mb * 4)?,
        };
        let mut dsc = Scratch::new();
        model
            .pass()
            .decoder_scratch(&mut dsc, mb, max_parts, &stream)?;
        dsc.get(gpu, "l_sel", mb * d * 2)?;
        dsc.get(gpu, "l_norm", mb * d * 2)?;
        // Before the first capture: a decode step of any bucket now finds its buffers here.
        dsc.freeze();
        Ok(Engine {
            sched: Scheduler::new(SchedulerConfig {
                max_batch: cfg.max_batch,
                max_context: cfg.max_context,
                prefill_tokens: cfg.prefill_tokens,
                encode_batch: cfg.encode_batch,
                kv_blocks: blocks,
                hand_off: cfg.hand_off,
            }),
            held: BTreeMap::new(),
            pool,
            max_blocks,
            max_parts,
            spent: Vec::new(),
            emb_free: Vec::new(),
            mover: None,
            staging: PinnedBuffer::new(gpu, 64 << 10)?,
            sc: Scratch::new(),
            dsc,
            dec,
            graphs: BTreeMap::new(),
            start: Instant::now(),
            pixels_seed: cfg.seed,
            stream,
            model,
            cfg,
        })
    }

    pub fn kv_blocks(&self) -> usize {
        self.pool.blocks
    }

    /// Which kernel runs the small-batch products; drops captured graphs.
    pub fn set_small_products(&mut self, how: SmallProducts) {
        self.model.products_mut().small = how;
        self.graphs.clear();
    }

    pub fn pool_ptr(&self) -> u64 {
        self.pool.buf.ptr
    }

    pub fn pool_bytes(&self) -> usize {
        self.pool.buf.bytes
    }

    /// cuBLASLt plans the model has made so far: a new one inside a served step is set-up work
    /// (a heuristic query) that a phase table measured in steady state does not contain.
    pub fn plans_made(&self) -> usize {
        self.model.products().plans_made()
    }

    /// Host seconds the model has spent making those plans.
    pub fn planning_seconds(&self) -> f64 {
        self.model.products().planning_seconds()
    }

    /// Seconds since the engine started (the clock of its events).
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Queue a request. Checked here, so a bad one never reaches the GPU.
    pub fn submit(&mut self, req: Request) -> Result<()> {
        let a = self.admit(&req)?;
        self.sched.submit(a.spec)?;
        self.held.insert(req.id, Held::new(req, a));
        Ok(())
    }

    /// Queue a request whose image embeddings were computed elsewhere (modality-level
    /// disaggregation): `emb` is `[Σ image tokens, d]` bf16 on this engine's GPU, complete
    /// (the caller has synchronised the copy that filled it), or None for a request without
    /// images. The request skips encoding and waits for prefill.
    pub fn submit_encoded(&mut self, req: Request, emb: Option<DeviceBuffer>) -> Result<()> {
        let a = self.admit(&req)?;
        let want = a.image_tokens.iter().sum::<usize>() * self.model.llm().hidden * 2;
        let ordinal = self.model.gpu().ordinal;
        match &emb {
            None if want > 0 => {
                return Err(Error::Invalid(format!(
                    "request {}: {} image(s) but no embeddings",
                    req.id,
                    req.images.len()
                )));
            }
            Some(e) if e.bytes != want || e.gpu != ordinal => {
                return Err(Error::Invalid(format!(
                    "request {}: embeddings of {} bytes on GPU {}, expected {want} bytes on GPU {ordinal}",
                    req.id, e.bytes, e.gpu
                )));
            }
            _ => {}
        }
        self.sched.submit_encoded(a.spec)?;
        let mut held = Held::new(req, a);
        held.lent = emb.is_some();
        held.emb = emb;
        self.held.insert(held.req.id, held);
        Ok(())
    }

    /// Bytes of the packed KV of `tokens` tokens: 2 · layers · kv_heads · tokens · head_dim · 2.
    pub fn kv_bytes(&self, tokens: usize) -> usize {
        self.model.kv_shape().kv_bytes(tokens)
    }

    /// Prefill-worker use: hands out the oldest prefilled request with its KV gathered into
    /// `packed` (on this GPU, at least `kv_bytes(tokens)` long; complete when this returns) and
    /// frees its blocks. None when no prefilled request waits.
    pub fn hand_off(&mut self, packed: &DeviceBuffer) -> Result<Option<HandOff>> {
        let Some(s) = self.sched.prefilled_front() else {
            return Ok(None);
        };
        let (id, tokens, blocks) = (s.spec.id, s.len, s.blocks.clone());
        let bytes = self.kv_bytes(tokens);
        let ordinal = self.model.gpu().ordinal;
        if packed.bytes < bytes || packed.gpu != ordinal {
            return Err(Error::Invalid(format!(
                "request {id}: packed KV needs {bytes} bytes on GPU {ordinal}, got {} on GPU {}",
                packed.bytes, packed.gpu
            )));
        }
        self.move_kv(&blocks, tokens, packed.ptr, false)?;
        self.sched.pop_prefilled();
        let Some(h) = self.held.remove(&id) else {
            return Ok(None);
        };
        Ok(Some(HandOff {
            first_token: h.generated[0],
            tokens,
            kv_bytes: bytes,
            req: h.req,
        }))
    }

    /// Decode-worker use: queue a request prefilled elsewhere. `kv` holds its packed KV on this
    /// GPU, complete (the caller has synchronised the copy that filled it); the engine gives the
    /// buffer back through `take_spent` once the KV is in its pool.
    pub fn submit_prefilled(&mut self, h: HandOff, kv: DeviceBuffer) -> Result<()> {
        let a = self.admit(&h.req)?;
        let spec = a.spec;
        let want = self.kv_bytes(spec.prompt_tokens);
        let ordinal = self.model.gpu().ordinal;
        if h.tokens != spec.prompt_tokens || h.kv_bytes != want {
            return Err(Error::Invalid(format!(
                "request {}: handed off with {} tokens / {} bytes of KV, its prompt is {} tokens / {want} bytes",
                spec.id, h.tokens, h.kv_bytes, spec.prompt_tokens
            )));
        }
        if kv.bytes < want || kv.gpu != ordinal {
            return Err(Error::Invalid(format!(
                "request {}: KV of {} bytes on GPU {}, expected at least {want} bytes on GPU {ordinal}",
                spec.id, kv.bytes, kv.gpu
            )));
        }
        self.sched.submit_prefilled(spec)?;
        let mut held = Held::new(h.req, a);
        held.generated.push(h.first_token);
        held.kv = Some(kv);
        self.held.insert(spec.id, held);
        Ok(())
    }

    /// Takes back an embedding buffer this engine handed out (`encode_ready`) once the caller
    /// is done with it, for later encodes.
    pub fn recycle(&mut self, emb: DeviceBuffer) {
        // Enough for two full encode batches; more would only hold memory.
        if emb.gpu == self.model.gpu().ordinal && self.emb_free.len() < 2 * self.cfg.encode_batch {
            self.emb_free.push(emb);
        }
    }

    /// Buffers handed in (`submit_encoded`, `submit_prefilled`) that the engine no longer reads.
    pub fn take_spent(&mut self) -> Vec<DeviceBuffer> {
        std::mem::take(&mut self.spent)
    }

    /// Compiles the KV gather/scatter kernels of `hand_off` and `submit_prefilled` now rather
    /// than on first use (a replay keeps NVRTC out of its first request's time).
    pub fn load_kv_kernels(&mut self) -> Result<()> {
        if self.mover.is_none() {
            let g = self.model.gpu();
            let m = Module::load(g, "kv_transfer.cu", crate::serve::kv::KV_SRC)?;
            self.mover = Some(KvMover {
                gather: m.function("kv_gather")?,
                scatter: m.function("kv_scatter")?,
                table: g.alloc(self.max_blocks * 4)?,
                _m: m,
            });
        }
        Ok(())
    }

    /// Gathers (`to_pool` false) or scatters the KV of `tokens` tokens held in `blocks` between
    /// the pool and the packed buffer at `packed`; waits for it.
    fn move_kv(&mut self, blocks: &[i32], tokens: usize, packed: u64, to_pool: bool) -> Result<()> {
        self.load_kv_kernels()?;
        let g = self.model.gpu();
        let Some(mv) = &self.mover else {
            return Ok(());
        };
        let table = mv.table.ptr;
        upload_ints(&mut self.staging, g, &self.stream, table, blocks)?;
        // SAFETY: the pool holds pool.blocks blocks, `packed` (the caller's) the request's
        // kv_bytes(tokens), `table` its blocks just uploaded; the stream is synchronised below.
        unsafe {
            crate::serve::kv::launch_move(
                if to_pool { &mv.scatter } else { &mv.gather },
                to_pool,
                self.pool.buf.ptr,
                packed,
                table,
                self.pool.blocks as u32,
                self.model.kv_shape().paged_geometry(tokens),
                g.info.sms,
                &self.stream,
            )
        }?;
        self.stream.synchronize()
    }

    /// Scatters the packed KV of requests prefilled elsewhere into the blocks the scheduler
    /// gave them.
    fn import(&mut self, ids: &[u64]) -> Result<Vec<EngineEvent>> {
        for &id in ids {
            let Some(s) = self.sched.sequence(id) else {
                continue;
            };
            let (blocks, len) = (s.blocks.clone(), s.len);
            let Some(kv) = self.held.get_mut(&id).and_then(|h| h.kv.take()) else {
                continue;
            };
            self.move_kv(&blocks, len, kv.ptr, true)?;
            self.spent.push(kv);
        }
        Ok(stamped(ids, EventKind::KvImported, self.now()))
    }

    /// Encode-only use (the encoder worker of a modality-level deployment): encode one batch of
    /// waiting images, if any, and hand out every request whose embeddings are ready, with its
    /// embedding buffer (`[Σ image tokens, d]` bf16 on this GPU; None for a request without
    /// images). The events are the batch's `EncodeDone`s. Nothing is prefilled here.
    #[allow(clippy::type_complexity)]
    pub fn encode_ready(
        &mut self,
    ) -> Result<(Vec<EngineEvent>, Vec<(Request, Option<DeviceBuffer>)>)> {
        let events = match self.sched.take_encode_only() {
            Some((ids, images)) => self.encode(&ids, images)?,
            None => Vec::new(),
        };
        let out = self
            .sched
            .take_encoded()
            .into_iter()
            .filter_map(|id| self.held.remove(&id))
            .map(|h| (h.req, h.emb))
            .collect();
        Ok((events, out))
    }

    /// Requests waiting for the vision encoder.
    pub fn waiting_images(&self) -> usize {
        self.sched.waiting()
    }

    /// The instant the engine's clock counts from (`EngineEvent::t`, `now`).
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Checks a request's tokens against the model; its lengths as the scheduler takes them
    /// (which checks them against the engine's context and pool).
    fn admit(&self, req: &Request) -> Result<Admitted> {
        let vocab = self.model.llm().vocab;
        let imgs = req.prompt.iter().filter(|&&t| t == IMAGE_TOKEN).count();
        if imgs != req.images.len() {
            return Err(Error::Invalid(format!(
                "request {}: {} images but {imgs} image tokens in the prompt",
                req.id,
                req.images.len()
            )));
        }
        if let Some(t) = req
            .prompt
            .iter()
            .find(|&&t| t != IMAGE_TOKEN && (t < 0 || t as usize >= vocab))
        {
            return Err(Error::Invalid(format!(
                "request {}: token {t} outside the vocabulary",
                req.id
            )));
        }
        let image_tokens = req
            .images
            .iter()
            .map(|&i| self.model.image_tokens(i))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::Invalid(format!("request {}: {e}", req.id)))?;
        let prompt_tokens = req.prompt.len() - imgs + image_tokens.iter().sum::<usize>();
        let (_, next) = self
            .model
            .positions(&req.prompt, IMAGE_TOKEN, &req.images)?;
        Ok(Admitted {
            spec: SeqSpec {
                id: req.id,
                images: req.images.len(),
                prompt_tokens,
                output_tokens: req.output_tokens,
            },
            image_tokens,
            position_shift: next as isize - prompt_tokens as isize,
        })
    }

    /// Nothing queued or running.
    pub fn is_idle(&self) -> bool {
        self.sched.is_idle()
    }

    pub fn running(&self) -> usize {
        self.sched.running()
    }

    /// Requests waiting to be encoded or prefilled.
    pub fn queued(&self) -> usize {
        self.sched.queued()
    }

    /// KV blocks holding sequences now.
    pub fn kv_blocks_used(&self) -> usize {
        self.pool.blocks - self.sched.free_blocks()
    }

    /// One scheduling step: the scheduler's decision, carried out; returns what it did and the
    /// events it produced.
    pub fn step(&mut self) -> Result<(StepKind, Vec<EngineEvent>)> {
        let step = self.sched.next_step()?;
        match step {
            Step::Idle => {
                self.sched.step_done();
                Ok((StepKind::Idle, Vec::new()))
            }
            Step::Encode {
                encode,
                images,
                prefill,
            } => {
                let mut events = self.encode(&encode, images)?;
                if prefill.is_empty() {
                    self.sched.step_done();
                    return Ok((StepKind::Encode { images }, events));
                }
                let (kind, more) = self.prefill(&prefill)?;
                events.extend(more);
                let kind = match kind {
                    StepKind::Prefill { seqs, tokens, .. } => StepKind::Prefill {
                        seqs,
                        tokens,
                        images,
                    },
                    other => other,
                };
                Ok((kind, events))
            }
            Step::Import { ids } => {
                let events = self.import(&ids)?;
                self.sched.step_done();
                Ok((StepKind::Import { seqs: ids.len() }, events))
            }
            Step::Prefill { ids } => self.prefill(&ids),
            Step::Decode { ids, bucket } => {
                let context = ids
                    .iter()
                    .filter_map(|id| self.sched.sequence(*id))
                    .map(|s| s.len)
                    .sum();
                let toks = self.decode(&ids, bucket)?;
                let t = self.now();
                let events = self.tokens_made(&ids, &toks, EventKind::Token, t);
                Ok((
                    StepKind::Decode {
                        batch: ids.len(),
                        bucket,
                        context,
                    },
                    events,
                ))
            }
        }
    }

    /// Encodes the images of `ids` (`images` in all) in one batch; their embeddings go to
    /// buffers of their own.
    fn encode(&mut self, ids: &[u64], images: usize) -> Result<Vec<EngineEvent>> {
        let sizes: Vec<(u32, u32)> = ids
            .iter()
            .filter_map(|id| self.held.get(id))
            .flat_map(|h| h.req.images.iter().copied())
            .collect();
        if sizes.len() != images {
            return Err(Error::Check(format!(
                "encode batch of {images} images holds {}",
                sizes.len()
            )));
        }
        let mut px_elems = 0;
        for &i in &sizes {
            px_elems += self.model.image_pixels(i)?;
        }
        let d = self.model.llm().hidden;
        let emb_rows: usize = ids
            .iter()
            .filter_map(|id| self.held.get(id))
            .map(|h| h.image_tokens.iter().sum::<usize>())
            .sum();
        let g = self.model.gpu();
        let px = self.sc.get(g, "e_px", px_elems * 2)?;
        let out = self.sc.get(g, "e_out", emb_rows * d * 2)?;
        self.pixels_seed = mix64(self.pixels_seed);
        self.random_pixels(px, px_elems, self.pixels_seed)?;
        self.model
            .encode(&self.stream, &sizes, px, out, &mut self.sc)?;
        let mut row = 0usize;
        for id in ids {
            let Some(h) = self.held.get_mut(id) else {
                continue;
            };
            let bytes = h.emb_bytes(d);
            let buf = match self.emb_free.iter().position(|b| b.bytes == bytes) {
                Some(i) => self.emb_free.swap_remove(i),
                None => self.model.gpu().alloc(bytes)?,
            };
            crate::cuda::device::copy_dtod_async(buf.ptr, out + row as u64, bytes, &self.stream)?;
            row += bytes;
            h.emb = Some(buf);
        }
        self.stream.synchronize()?;
        Ok(stamped(ids, EventKind::EncodeDone, self.now()))
    }

    /// Random pixels in [-1, 1) (a normalised image) into `n` bf16 at `px`.
    fn random_pixels(&self, px: u64, n: usize, seed: u64) -> Result<()> {
        let (n, scale, off) = (n as u64, 1.0f32, 0.0f32);
        let g = self.model.gpu();
        // SAFETY: fill_uniform(bf16* p, u64 n, u64 seed, float scale, float offset); px holds n
        // bf16 (the caller's scratch).
        unsafe {
            self.model.kernels().get("fill_uniform").launch(
                grid_for(n, 256, g.info.sms),
                256,
                &self.stream,
                &mut kargs![px, n, seed, scale, off],
            )
        }
    }

    /// Prefills the prompts of `ids` in one packed pass, reports the step done and returns its
    /// kind and events (first tokens, and the requests that finish with them).
    fn prefill(&mut self, ids: &[u64]) -> Result<(StepKind, Vec<EngineEvent>)> {
        let d = self.model.llm().hidden;
        let mut seqs = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(h), Some(s)) = (self.held.get(id), self.sched.sequence(*id)) else {
                return Err(Error::Check(format!(
                    "request {id} chosen for prefill is not held by the engine"
                )));
            };
            seqs.push((h, s.blocks.as_slice()));
        }
        // Packed inputs: tokens, image rows (into a staging copy of all images), KV slots,
        // positions (three planes), cu_seqlens, last rows.
        let mut tok = Vec::new();
        let mut img_rows = Vec::new();
        let mut pos: Vec<[usize; 3]> = Vec::new();
        let mut slots = Vec::new();
        let mut cu = vec![0i32];
        let mut last = Vec::new();
        let mut img_base = 0usize;
        let mut max_len = 0;
        let g = self.model.gpu();
        let total_rows: usize = seqs
            .iter()
            .map(|(h, _)| h.image_tokens.iter().sum::<usize>())
            .sum();
        let imgs = self.sc.get(g, "p_img", (total_rows * d * 2).max(16))?;
        for (h, blocks) in &seqs {
            let (positions, _) = self
                .model
                .positions(&h.req.prompt, IMAGE_TOKEN, &h.req.images)?;
            pos.extend_from_slice(&positions);
            let mut img = 0usize;
            let mut row = img_base;
            for &t in &h.req.prompt {
                if t == IMAGE_TOKEN {
                    for _ in 0..h.image_tokens[img] {
                        tok.push(0);
                        img_rows.push(row as i32);
                        row += 1;
                    }
                    img += 1;
                } else {
                    tok.push(t);
                    img_rows.push(-1);
                }
            }
            let len = positions.len();
            slots.extend(
                (0..len).map(|p| blocks[p / KV_BLOCK] * KV_BLOCK as i32 + (p % KV_BLOCK) as i32),
            );
            if let Some(e) = &h.emb {
                crate::cuda::device::copy_dtod_async(
                    imgs + (img_base * d * 2) as u64,
                    e.ptr,
                    h.emb_bytes(d),
                    &self.stream,
                )?;
            }
            img_base = row;
            cu.push(cu[cu.len() - 1] + len as i32);
            last.push(cu[cu.len() - 1] - 1);
            max_len = max_len.max(len);
        }
        let (n, m) = (tok.len(), seqs.len());
        let mut ints = Vec::with_capacity(6 * n + 2 * m + 1);
        for a in [&tok, &img_rows, &slots] {
            ints.extend_from_slice(a);
        }
        for axis in 0..3 {
            ints.extend(pos.iter().map(|p| p[axis] as i32));
        }
        ints.extend_from_slice(&cu);
        ints.extend_from_slice(&last);
        let pass = self.upload_prefill(&ints, n, m, max_len)?;
        let am = self.queue_prefill(&pass, imgs)?;
        self.stream.synchronize()?;
        let mut raw = vec![0u8; m * 4];
        crate::serve::model::gpu::read_ptr(self.model.gpu(), am, &mut raw)?;
        let t = self.now();
        let toks: Vec<u32> = raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
            .collect();
        for id in ids {
            let Some(h) = self.held.get_mut(id) else {
                continue;
            };
            if let Some(e) = h.emb.take() {
                if h.lent {
                    self.spent.push(e);
                } else {
                    self.recycle(e);
                }
            }
        }
        let events = self.tokens_made(ids, &toks, EventKind::FirstToken, t);
        Ok((
            StepKind::Prefill {
                seqs: m,
                tokens: pass.n,
                images: 0,
            },
            events,
        ))
    }

    /// Reports the step that made `toks` (one for each of `ids`) done: the token events and,
    /// after each request that finished, its `Finished`.
    fn tokens_made(
        &mut self,
        ids: &[u64],
        toks: &[u32],
        kind: EventKind,
        t: f64,
    ) -> Vec<EngineEvent> {
        let finished = self.sched.step_done();
        let mut events = Vec::with_capacity(ids.len() + finished.len());
        for (&id, &tk) in ids.iter().zip(toks) {
            if let Some(h) = self.held.get_mut(&id) {
                h.generated.push(tk);
            }
            events.push(EngineEvent {
                id,
                kind,
                token: Some(tk),
                t,
            });
            if finished.contains(&id) {
                self.held.remove(&id);
                events.push(EngineEvent {
                    id,
                    kind: EventKind::Finished,
                    token: None,
                    t,
                });
            }
        }
        events
    }

    /// Queue one decode step of `bucket` rows whose inputs are already in `dec.ints`.
    fn queue_decode(&mut self, bucket: usize) -> Result<()> {
        let mb = self.cfg.max_batch;
        let base = self.dec.ints.ptr;
        let at = |i: usize| base + (i * mb * 4) as u64;
        let (x, logits, am) = (self.dec.x.ptr, self.dec.logits.ptr, self.dec.argmax.ptr);
        self.model
            .pass()
            .embed(&self.stream, at(0), at(4), 0, x, bucket)?;
        let inp = TokenInputs {
            positions: at(1),
            planes: false,
            slots: at(2),
        };
        let attn = Attn::Decode {
            tables: at(6),
            ctx: at(3),
            max_blocks: self.max_blocks,
        };
        self.model.pass().decoder(
            &self.stream,
            x,
            bucket,
            &inp,
            &attn,
            &self.pool,
            &mut self.dsc,
            self.max_parts,
        )?;
        self.model
            .pass()
            .logits(&self.stream, x, at(5), bucket, logits, am, &mut self.dsc)
    }

    fn capture(&mut self, bucket: usize) -> Result<()> {
        ck!(
            sys::cuStreamBeginCapture_v2(
                self.stream.raw,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
            ),
            "cuStreamBeginCapture(decode bucket {bucket})"
        )?;
        let r = self.queue_decode(bucket);
        let mut graph: sys::CUgraph = std::ptr::null_mut();
        let end = ck!(
            sys::cuStreamEndCapture(self.stream.raw, &mut graph),
            "cuStreamEndCapture(decode bucket {bucket})"
        );
        r?;
        end?;
        let mut exec: sys::CUgraphExec = std::ptr::null_mut();
        ck!(
            sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0),
            "cuGraphInstantiate(decode bucket {bucket})"
        )?;
        self.graphs.insert(bucket, Graph { exec, graph });
        Ok(())
    }

    /// Write the decode inputs of `rows` (token, its index in the KV cache, its rotary
    /// position, block table) for a step of `bucket` rows; rows past the batch are padding
    /// (context 0, slot −1).
    fn write_decode_inputs(
        &mut self,
        rows: &[(u32, usize, usize, &[i32])],
        bucket: usize,
    ) -> Result<()> {
        let mb = self.cfg.max_batch;
        let n = 6 * mb + mb * self.max_blocks;
        let mut v = vec![0i32; n];
        for (i, &(tok, at, pos, blocks)) in rows.iter().enumerate() {
            v[i] = tok as i32;
            v[mb + i] = pos as i32;
            v[2 * mb + i] = blocks[at / KV_BLOCK] * KV_BLOCK as i32 + (at % KV_BLOCK) as i32;
            v[3 * mb + i] = at as i32 + 1;
            v[6 * mb + i * self.max_blocks..][..blocks.len()].copy_from_slice(blocks);
        }
        for i in rows.len()..bucket {
            v[2 * mb + i] = -1;
        }
        for i in 0..mb {
            v[4 * mb + i] = -1;
            v[5 * mb + i] = i as i32;
        }
        unsafe {
            std::ptr::copy_nonoverlapping(
                v.as_ptr() as *const u8,
                self.dec.host.ptr as *mut u8,
                n * 4,
            );
        }
        crate::cuda::device::copy_htod_async(
            self.dec.ints.ptr,
            &self.dec.host,
            0,
            n * 4,
            &self.stream,
        )
    }

    /// Run one decode step (graph replay or direct launches) and return the sampled tokens.
    fn run_decode(&mut self, bucket: usize, batch: usize) -> Result<Vec<u32>> {
        self.model.tune_decode_plans(&self.stream, bucket)?;
        if self.cfg.graphs {
            if !self.graphs.contains_key(&bucket) {
                self.capture(bucket)?;
            }
            let exec = self.graphs[&bucket].exec;
            ck!(
                sys::cuGraphLaunch(exec, self.stream.raw),
                "cuGraphLaunch(decode bucket {bucket})"
            )?;
        } else {
            self.queue_decode(bucket)?;
        }
        crate::cuda::device::copy_dtoh_async(
            &self.dec.argmax_host,
            0,
            self.dec.argmax.ptr,
            batch * 4,
            &self.stream,
        )?;
        self.stream.synchronize()?;
        let p = self.dec.argmax_host.ptr as *const i32;
        Ok((0..batch).map(|i| unsafe { *p.add(i) } as u32).collect())
    }

    /// One decode step of `ids` (the running requests, in order) padded to `bucket` rows;
    /// returns the sampled tokens.
    fn decode(&mut self, ids: &[u64], bucket: usize) -> Result<Vec<u32>> {
        let mut rows: Vec<(u32, usize, usize, Vec<i32>)> = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(h), Some(s)) = (self.held.get(id), self.sched.sequence(*id)) else {
                return Err(Error::Check(format!(
                    "request {id} chosen for decode is not held by the engine"
                )));
            };
            let pos = (s.len as isize + h.position_shift) as usize;
            let tok = *h.generated.last().unwrap_or(&0);
            rows.push((tok, s.len, pos, s.blocks.clone()));
        }
        let refs: Vec<(u32, usize, usize, &[i32])> = rows
            .iter()
            .map(|(t, at, p, b)| (*t, *at, *p, b.as_slice()))
            .collect();
        self.write_decode_inputs(&refs, bucket)?;
        self.run_decode(bucket, ids.len())
    }

    /// Every encoder product shape a full encode batch of images no larger than `largest` can
    /// meet, run once (`ServedModel::warm_encode_products`): for warm-ups.
    pub fn warm_encode_products(&mut self, largest: (u32, u32)) -> Result<()> {
        self.model
            .warm_encode_products(&self.stream, self.cfg.encode_batch, largest, &mut self.sc)
    }

    /// Run until every submitted request has finished; all events in order.
    pub fn run_to_completion(&mut self) -> Result<Vec<EngineEvent>> {
        let mut all = Vec::new();
        while !self.is_idle() {
            let (kind, ev) = self.step()?;
            if std::env::var_os("HETSIM_ENGINE_TRACE").is_some() {
                eprintln!("engine step: {kind:?}, {} events", ev.len());
            }
            all.extend(ev);
        }
        Ok(all)
    }

    /// Brings the GPU to the state `pace` names before a timed run.
    fn pace(&mut self, pace: Pace) -> Result<()> {
        match pace {
            Pace::BackToBack => Ok(()),
            Pace::Rested(d) => {
                self.stream.synchronize()?;
                std::thread::sleep(d);
                Ok(())
            }
        }
    }

    /// Time `iters` decode steps of `batch` sequences of `context` tokens each (the KV cache
    /// holds whatever the pool holds: the timing does not depend on the values). Median
    /// seconds per step, by CUDA events around each replay.
    pub fn time_decode(&mut self, batch: usize, context: usize, iters: usize) -> Result<f64> {
        if batch > self.cfg.max_batch || context >= self.cfg.max_context {
            return Err(Error::Invalid(format!(
                "decode batch {batch} / context {context} beyond the engine's {} / {}",
                self.cfg.max_batch, self.cfg.max_context
            )));
        }
        let per = context.div_ceil(KV_BLOCK) + 1;
        if per * batch > self.pool.blocks {
            return Err(Error::Invalid(format!(
                "decode batch {batch} × context {context} needs {} KV blocks, the pool has {}",
                per * batch,
                self.pool.blocks
            )));
        }
        let b = bucket(batch, self.cfg.max_batch);
        let tables: Vec<Vec<i32>> = (0..batch)
            .map(|i| ((i * per) as i32..((i + 1) * per) as i32).collect())
            .collect();
        let rows: Vec<(u32, usize, usize, &[i32])> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| ((i % 100) as u32 + 2, context, context, t.as_slice()))
            .collect();
        self.write_decode_inputs(&rows, b)?;
        self.stream.synchronize()?;
        // Warm-up (and capture).
        self.run_decode(b, batch)?;
        let (e0, e1) = (
            Event::timing(self.model.gpu())?,
            Event::timing(self.model.gpu())?,
        );
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters.max(1) {
            e0.record(&self.stream)?;
            if self.cfg.graphs {
                let exec = self.graphs[&b].exec;
                ck!(sys::cuGraphLaunch(exec, self.stream.raw), "cuGraphLaunch")?;
            } else {
                self.queue_decode(b)?;
            }
            e1.record(&self.stream)?;
            times.push(e0.elapsed_ms(&e1)? / 1e3);
        }
        Ok(crate::stats::median(&times))
    }

    /// Upload the inputs of a prefill pass over n packed tokens: i32 arrays of tokens, image
    /// rows and KV slots (n each), positions (three planes of n), then cu_seqlens (seqs + 1)
    /// and each prompt's last row (seqs).
    fn upload_prefill(
        &mut self,
        ints: &[i32],
        n: usize,
        seqs: usize,
        max_len: usize,
    ) -> Result<PrefillPass> {
        debug_assert_eq!(ints.len(), 6 * n + 2 * seqs + 1);
        let inputs = self.sc.get(self.model.gpu(), "p_ints", ints.len() * 4)?;
        upload_ints(
            &mut self.staging,
            self.model.gpu(),
            &self.stream,
            inputs,
            ints,
        )?;
        Ok(PrefillPass {
            inputs,
            n,
            seqs,
            max_len,
        })
    }

    /// Queue a prefill pass — embeddings (image rows from `imgs`), the decoder over the packed
    /// prompts, logits and argmax of each prompt's last row — and return the argmax's address
    /// (i32 [seqs]).
    fn queue_prefill(&mut self, p: &PrefillPass, imgs: u64) -> Result<u64> {
        let (n, m) = (p.n, p.seqs);
        let at = |i: usize| p.inputs + (i * 4) as u64;
        let g = self.model.gpu();
        let x = self.sc.get(g, "p_x", n * self.model.llm().hidden * 2)?;
        let logits = self.sc.get(g, "p_logits", m * self.model.llm().vocab * 4)?;
        let am = self.sc.get(g, "p_argmax", m * 4)?;
        self.model
            .pass()
            .embed(&self.stream, at(0), at(n), imgs, x, n)?;
        let inp = TokenInputs {
            positions: at(3 * n),
            planes: true,
            slots: at(2 * n),
        };
        let attn = Attn::Prefill {
            cu_seqlens: at(6 * n),
            seqs: m,
            max_len: p.max_len,
        };
        self.model
            .pass()
            .decoder(&self.stream, x, n, &inp, &attn, &self.pool, &mut self.sc, 1)?;
        self.model.pass().logits(
            &self.stream,
            x,
            at(6 * n + m + 1),
            m,
            logits,
            am,
            &mut self.sc,
        )?;
        Ok(am)
    }

    /// Time one prefill step of `seqs` prompts of `tokens` tokens each (no images: the rows are
    /// text embeddings, which costs the same as spliced image rows). Median of `iters`, each
    /// started after the GPU has idled for `rest` (see `Pace`).
    pub fn time_prefill(
        &mut self,
        seqs: usize,
        tokens: usize,
        iters: usize,
        pace: Pace,
    ) -> Result<f64> {
        let per = tokens.div_ceil(KV_BLOCK);
        if per * seqs > self.pool.blocks || tokens > self.cfg.max_context {
            return Err(Error::Invalid(format!(
                "prefill {seqs} × {tokens} tokens does not fit the KV pool / max context"
            )));
        }
        let n = seqs * tokens;
        let vocab = self.model.llm().vocab as u64;
        let mut ints = Vec::with_capacity(6 * n + 2 * seqs + 1);
        ints.extend((0..n).map(|i| (mix64(i as u64) % vocab) as i32));
        ints.extend(std::iter::repeat_n(-1, n));
        ints.extend((0..n).map(|i| ((i / tokens) * per * KV_BLOCK + i % tokens) as i32));
        for _ in 0..3 {
            ints.extend((0..n).map(|i| (i % tokens) as i32));
        }
        ints.extend((0..=seqs).map(|s| (s * tokens) as i32));
        ints.extend((0..seqs).map(|s| ((s + 1) * tokens - 1) as i32));
        let pass = self.upload_prefill(&ints, n, seqs, tokens)?;
        let g = self.model.gpu();
        let (e0, e1) = (Event::timing(g)?, Event::timing(g)?);
        let mut times = Vec::new();
        for i in 0..iters.max(1) + 1 {
            self.pace(pace)?;
            e0.record(&self.stream)?;
            self.queue_prefill(&pass, 0)?;
            e1.record(&self.stream)?;
            let t = e0.elapsed_ms(&e1)? / 1e3;
            if i > 0 {
                times.push(t);
            }
        }
        Ok(crate::stats::median(&times))
    }

    /// Time encoding `images` images of `size` (vision tower + projector; LLaVA resizes every
    /// image to its one size). Median of `iters`, paced as `pace` says.
    pub fn time_encode(
        &mut self,
        images: usize,
        size: (u32, u32),
        iters: usize,
        pace: Pace,
    ) -> Result<f64> {
        let sizes = vec![size; images];
        let px_elems = images * self.model.image_pixels(size)?;
        let rows = images * self.model.image_tokens(size)?;
        let g = self.model.gpu();
        let px = self.sc.get(g, "e_px", px_elems * 2)?;
        let out = self
            .sc
            .get(g, "e_out", rows * self.model.llm().hidden * 2)?;
        self.random_pixels(px, px_elems, 5)?;
        let (e0, e1) = (Event::timing(g)?, Event::timing(g)?);
        let mut times = Vec::new();
        // encode() uploads its index arrays synchronously first; the events bracket the GPU
        // work only.
        for i in 0..iters.max(1) + 1 {
            self.pace(pace)?;
            e0.record(&self.stream)?;
            self.model
                .encode(&self.stream, &sizes, px, out, &mut self.sc)?;
            e1.record(&self.stream)?;
            let t = e0.elapsed_ms(&e1)? / 1e3;
            if i > 0 {
                times.push(t);
            }
        }
        Ok(crate::stats::median(&times))
    }

    /// Device scratch of a decode step, for tests: logits of the last step [bucket, vocab].
    pub fn last_decode_logits(&self, rows: usize) -> Result<Vec<f32>> {
        crate::serve::model::gpu::download_f32(&self.dec.logits, rows * self.model.llm().vocab)
    }

    /// Sampled tokens of the last decode step (device copy), for tests.
    pub fn last_decode_argmax(&self, rows: usize) -> Result<Vec<i32>> {
        download_i32(&self.dec.argmax, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_requests_are_well_formed() {
        let r = Request::synthetic(3, 1, 20, 5, 32064);
        assert_eq!(r.prompt.len(), 22);
        assert_eq!(r.prompt.iter().filter(|&&t| t == IMAGE_TOKEN).count(), 1);
        assert!(
            r.prompt
                .iter()
                .all(|&t| t == IMAGE_TOKEN || (0..32064).contains(&t))
        );
    }
}
