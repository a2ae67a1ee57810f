//! Real replay of an experiment's trace on the GPU: open-loop arrivals at the trace's timestamps
//! into the engine, every request's times recorded in the shared schema (`source = exec`).
//!
//! * Colocated deployments (one instance serving everything on one GPU) replay on `Engine` as it
//!   is, for either family the engine serves (LLaVA-1.5, Qwen2.5-VL: `ServedConfig`).
//! * The two-GPU replays below serve LLaVA-1.5 only (their embedding and KV shipments size
//!   LLaVA's fixed 576 tokens per image); a Qwen2.5-VL scenario of theirs is refused by
//!   `replayable`.
//! * Modality-level deployments of one encoder and one LLM instance (tp 1, each on its own GPU)
//!   replay on two engines: the encoder's engine only encodes (`Engine::encode_ready`), its
//!   embeddings `[images·576, d]` bf16 are shipped to the LLM's GPU, and the LLM's engine takes
//!   them with `Engine::submit_encoded` (the request skips encoding) and prefills and decodes.
//! * Stage-level deployments of one prefill and one decode instance replay the same way: the
//!   prefill worker (`hand_off`) encodes and prefills, gathers each request's KV from its paged
//!   pool into one packed buffer (exactly 2·L·H·s·D·2 bytes), which is shipped to the decode
//!   worker's GPU; there `Engine::submit_prefilled` scatters it into the decode pool and the
//!   request decodes from its first token on.
//!
//! Shipments go over the scenario's fabric: NVLink as `cuMemcpyPeerAsync` with peer access on;
//! PCIe as GPU → pinned host → GPU, chunked and double-buffered (`cuda::staging::Stager`), into
//! landing buffers on the destination GPU that are allocated once and reused. One host thread
//! per GPU (`replay_split`). Under overload the upstream waits while a window's worth of
//! shipments is landed and not yet read downstream (`landing`), so the landing buffers stay
//! bounded instead of growing with the backlog until CUDA runs out of memory.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use hetsim_sim::bench_serve::{self, BenchServe};
use hetsim_sim::catalog::{GpuSpec, LinkKind};
use hetsim_sim::cluster::Role;
use hetsim_sim::experiment::{KvTransferMode, Scenario, Strategy};
use hetsim_sim::records::{
    DropReason, RequestRecord, RequestStatus, Source, TransferKind, TransferRecord,
};
use hetsim_sim::timeline::{self, StepSpan, TimelineSink, TimelineWriter, TraceOptions};

use crate::cuda::device::{DeviceBuffer, Event, Gpu, Stream, allocations_so_far};
use crate::cuda::green::GreenCtx;
use crate::cuda::staging::{Stager, staged_chunk};
use crate::error::{Error, Result};
use crate::serve::engine::{
    Engine, EngineConfig, EngineEvent, EventKind, HandOff, Request, StepKind,
};
use crate::serve::landing::{self, SharedWindow};
use crate::serve::model::gpu::served::{ImageSize, QWEN_MODELS};
use crate::serve::model::gpu::{GpuModel, KV_BLOCK, ServedConfig};
use crate::serve::model::llava::{LlavaConfig, LlmConfig};

/// Whether this harness can replay the scenario for real, and if not, why.
pub fn replayable(s: &Scenario) -> std::result::Result<(), String> {
    let inst = &s.cluster.instances;
    if s.strategy != Strategy::Colocated && QWEN_MODELS.contains(&s.model.name.as_str()) {
        return Err(split_not_served(s));
    }
    match s.strategy {
        Strategy::Colocated => {
            if inst.len() == 1 && inst[0].role == Role::All && inst[0].tp() == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{}: colocated replay serves one instance of tp 1 on one GPU ({} instance(s) given)",
                    s.name,
                    inst.len()
                ))
            }
        }
        Strategy::Modality => split_replayable(s, Role::Encoder, Role::Llm),
        Strategy::Stage => {
            if s.kv_transfer == KvTransferMode::Layerwise {
                return Err(format!(
                    "{}: stage replay ships the KV after prefill (kv_transfer: after_prefill), not layer by layer",
                    s.name
                ));
            }
            split_replayable(s, Role::Prefill, Role::Decode)
        }
        other => Err(format!(
            "{}: {} deployments do not replay for real (colocated, modality and stage do)",
            s.name,
            other.name()
        )),
    }
}

/// Why a two-GPU replay of this scenario's model is refused: it serves LLaVA-1.5 only.
fn split_not_served(s: &Scenario) -> String {
    format!(
        "{}: {} replays of {} are not served yet (the two-GPU replay serves LLaVA-1.5; \
         Qwen2.5-VL replays colocated on one GPU)",
        s.name,
        s.strategy.name(),
        s.model.name
    )
}

/// A disaggregated deployment the two-GPU replay serves: one `up` and one `down` instance, tp 1,
/// on two GPUs of one node, no work stealing.
fn split_replayable(s: &Scenario, up: Role, down: Role) -> std::result::Result<(), String> {
    let inst = &s.cluster.instances;
    let what = format!("{} replay", s.strategy.name());
    let roles: Vec<Role> = inst.iter().map(|i| i.role).collect();
    if inst.len() != 2 || !roles.contains(&up) || !roles.contains(&down) {
        return Err(format!(
            "{}: {what} serves one {} and one {} instance (given: {})",
            s.name,
            up.name(),
            down.name(),
            roles
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if inst.iter().any(|i| i.tp() != 1) {
        return Err(format!("{}: {what} serves instances of tp 1 only", s.name));
    }
    if inst[0].gpus[0] == inst[1].gpus[0] || inst[0].node != inst[1].node {
        return Err(format!(
            "{}: {what} needs the {} and the {} on two GPUs of one node",
            s.name,
            up.name(),
            down.name()
        ));
    }
    if s.work_stealing {
        return Err(format!(
            "{}: {what} has no work stealing (the {} only {})",
            s.name,
            up.name(),
            if up == Role::Encoder {
                "encodes"
            } else {
                "prefills"
            }
        ));
    }
    Ok(())
}

/// Times of one request on the replay's clock (seconds since the first arrival could happen).
#[derive(Default, Clone)]
struct Seen {
    encode_start: Option<f64>,
    encoded: Option<f64>,
    /// The shipment of embeddings (modality) or KV (stage).
    tx_start: Option<f64>,
    tx_end: Option<f64>,
    emb_bytes: u64,
    kv_bytes: u64,
    prefill_start: Option<f64>,
    first: Option<f64>,
    /// Stage-level: the KV is in the decode worker's pool.
    decode_start: Option<f64>,
    finished: Option<f64>,
    /// The latest token, and the gaps between consecutive tokens (vLLM's ITL).
    last_token: Option<f64>,
    itl: Vec<f64>,
}

/// What a real replay produced.
pub struct Replayed {
    pub requests: Vec<RequestRecord>,
    /// Embedding (modality-level) or KV (stage-level) shipments.
    pub transfers: Vec<TransferRecord>,
    /// Every engine step of every instance, in order of their starts.
    pub steps: Vec<StepTiming>,
    /// Gaps between consecutive tokens of the finished requests, s.
    pub itl_s: Vec<f64>,
}

/// One engine step as the replay saw it, on the replay's clock, with the set-up work
/// that happened inside it: a device allocation or a new GEMM plan is a cost of the first step of
/// its shape that a steady-state phase table does not hold, so the step log tells a slow step
/// from a mispredicted one.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// The scenario's instance that ran it.
    pub instance: u64,
    pub start_s: f64,
    /// Its images are encoded and its forward starts (= `start_s` without images).
    pub encode_end_s: f64,
    pub end_s: f64,
    pub kind: StepKind,
    /// Requests whose images this step encoded, whose prompts it prefilled, that it decoded.
    pub encoded: Vec<u64>,
    pub prefilled: Vec<u64>,
    pub decoded: Vec<u64>,
    /// cuMemAlloc calls during the step.
    pub allocations: u64,
    /// cuBLASLt plans made during the step, and the host seconds making them took.
    pub new_plans: usize,
    pub planning_s: f64,
    /// What the scenario's phase model (the simulator's) says this step costs.
    pub predicted_s: f64,
    /// After the step: KV blocks in use, requests waiting to be encoded or prefilled, requests
    /// decoding.
    pub kv_blocks_used: u64,
    pub queued: u64,
    pub running: u64,
    /// The engine's KV pool.
    pub kv_blocks: u64,
}

impl StepTiming {
    /// `off`: the replay's start on the engine's clock (`EngineEvent::t`).
    fn new(
        start_s: f64,
        end_s: f64,
        kind: StepKind,
        events: &[EngineEvent],
        off: f64,
    ) -> StepTiming {
        let of = |k: EventKind| {
            let mut ids: Vec<u64> = events
                .iter()
                .filter(|e| e.kind == k)
                .map(|e| e.id)
                .collect();
            ids.dedup();
            ids
        };
        let encode_end_s = match kind {
            StepKind::Encode { .. } => end_s,
            _ => events
                .iter()
                .filter(|e| e.kind == EventKind::EncodeDone)
                .map(|e| e.t - off)
                .fold(start_s, f64::max),
        };
        StepTiming {
            instance: 0,
            start_s,
            encode_end_s,
            end_s,
            kind,
            encoded: of(EventKind::EncodeDone),
            prefilled: of(EventKind::FirstToken),
            decoded: of(EventKind::Token),
            allocations: 0,
            new_plans: 0,
            planning_s: 0.0,
            predicted_s: 0.0,
            kv_blocks_used: 0,
            queued: 0,
            running: 0,
            kv_blocks: 0,
        }
    }

    /// The step on a timeline (`hetsim_sim::timeline`).
    pub fn span(&self) -> StepSpan {
        let (images, prefill_seqs, prefill_tokens, decode_seqs, decode_context_tokens) =
            match self.kind {
                StepKind::Encode { images } => (images, 0, 0, 0, 0),
                StepKind::Prefill {
                    seqs,
                    tokens,
                    images,
                } => (images, seqs, tokens, 0, 0),
                StepKind::Decode { batch, context, .. } => (0, 0, 0, batch, context),
                StepKind::Import { .. } | StepKind::Idle => (0, 0, 0, 0, 0),
            };
        let n = |v: usize| v as u64;
        StepSpan {
            instance: self.instance,
            start_s: self.start_s,
            encode_end_s: self.encode_end_s,
            end_s: self.end_s,
            images: n(images),
            prefill_seqs: n(prefill_seqs),
            prefill_tokens: n(prefill_tokens),
            decode_seqs: n(decode_seqs),
            decode_context_tokens: n(decode_context_tokens),
            kv_blocks_used: self.kv_blocks_used,
            kv_blocks: self.kv_blocks,
            queued: self.queued,
            running: self.running,
        }
    }

    /// The simulator's time for this step's work: its images encoded, then one forward over its
    /// prompts and decodes.
    fn predict(
        &self,
        perf: &dyn hetsim_sim::perf::PhaseModel,
        model: &hetsim_sim::catalog::ModelSpec,
        reqs: &BTreeMap<u64, &hetsim_sim::workload::Request>,
    ) -> f64 {
        let tokens = |&(w, h): &(u32, u32)| model.image_tokens(w as u64, h as u64).ok();
        let images: Vec<_> = self
            .encoded
            .iter()
            .filter_map(|id| reqs.get(id))
            .flat_map(|r| r.images.iter().filter_map(tokens))
            .collect();
        let mut batch = hetsim_sim::perf::BatchShape::default();
        for r in self.prefilled.iter().filter_map(|id| reqs.get(id)) {
            let visual: u64 = r
                .images
                .iter()
                .filter_map(tokens)
                .map(|t| t.llm_tokens)
                .sum();
            batch.add_prefill_chunk(0, visual + r.prompt_tokens as u64, true);
        }
        if let StepKind::Decode {
            batch: n, context, ..
        } = self.kind
        {
            batch.decode_seqs = n as u64;
            batch.decode_ctx_tokens = context as u64;
            batch.logits += n as u64;
        }
        perf.step_s(&images, &batch)
    }
}

/// The step log of a replay as a table (`hetsim validate` writes it as steps.csv).
pub fn step_table(scenario: &str, steps: &[StepTiming]) -> hetsim_sim::table::Table {
    use hetsim_sim::table::{Table, Value};
    let mut t = Table::new(&[
        "scenario",
        "instance",
        "start_s",
        "measured_s",
        "predicted_s",
        "images",
        "prefill_seqs",
        "prefill_tokens",
        "decode_batch",
        "decode_context",
        "allocations",
        "new_plans",
        "planning_s",
    ]);
    for st in steps {
        let sp = st.span();
        t.push(vec![
            Value::Str(scenario.to_string()),
            Value::U64(st.instance),
            Value::F64(st.start_s),
            Value::F64(st.end_s - st.start_s),
            Value::F64(st.predicted_s),
            Value::U64(sp.images),
            Value::U64(sp.prefill_seqs),
            Value::U64(sp.prefill_tokens),
            Value::U64(sp.decode_seqs),
            Value::U64(sp.decode_context_tokens),
            Value::U64(st.allocations),
            Value::U64(st.new_plans as u64),
            Value::F64(st.planning_s),
        ]);
    }
    t
}

/// The engine's request for a trace request. The engine's prompt is [BOS, IMAGE × n, text…]:
/// BOS is one of the trace's text tokens, so its context is the simulator's (visual + prompt
/// tokens). The images keep their sizes: Qwen2.5-VL's tokens follow from them.
fn to_engine(r: &hetsim_sim::workload::Request, llm: &LlmConfig) -> Request {
    let mut q = Request::synthetic(
        r.id,
        r.images.len(),
        (r.prompt_tokens as usize).saturating_sub(1),
        r.output_tokens as usize,
        llm.vocab,
    );
    q.images = r.images.clone();
    q
}

/// The longest context any request reaches (its images' tokens by the model's rule, prompt,
/// output, and one token to spare): what the engine's `max_context` is sized for.
fn longest_context(reqs: &[hetsim_sim::workload::Request], c: &ServedConfig) -> Result<usize> {
    let mut longest = 1;
    for r in reqs {
        let mut n = 1 + r.prompt_tokens as usize + r.output_tokens as usize;
        for &size in &r.images {
            n += c.image_tokens(size)?;
        }
        longest = longest.max(n);
    }
    Ok(longest)
}

/// The trace's image with the most LLM tokens (its first, of equals), or the profiler's size
/// without images: the warm-up encodes it so that no served encode outgrows the scratch.
fn largest_image(reqs: &[hetsim_sim::workload::Request], c: &ServedConfig) -> Result<ImageSize> {
    let mut best = (hetsim_sim::profile::DEFAULT_ENCODE_SIZE, 0);
    for &size in reqs.iter().flat_map(|r| &r.images) {
        let t = c.image_tokens(size)?;
        if t > best.1 {
            best = (size, t);
        }
    }
    Ok(best.0)
}

fn arrival_s(r: &hetsim_sim::workload::Request) -> f64 {
    r.arrival_ns as f64 * 1e-9
}

/// Serves the scenario's requests with random weights of the exact architecture: colocated on
/// GPU `gpu`; modality-level on GPUs `gpu` + the cluster's GPU index of each instance.
pub fn replay(s: &Scenario, gpu: usize) -> Result<Replayed> {
    replayable(s).map_err(Error::Invalid)?;
    let c = ServedConfig::builtin(&s.model.name, Some(s.model.llm.layers as usize))?;
    let mut source = s
        .workload
        .requests(s.seed)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut reqs = Vec::new();
    while let Some(r) = source
        .next_request()
        .map_err(|e| Error::Invalid(e.to_string()))?
    {
        reqs.push(r);
    }
    // The trace's, or the warm-up's with the trace's largest image if that is longer.
    let longest = longest_context(&reqs, &c)?
        .max(2 + c.image_tokens(largest_image(&reqs, &c)?)? + WARM_UP_TEXT + 1);
    let max_batch = (s.engine.max_batch as usize).clamp(1, 256);
    let cfg = EngineConfig {
        max_batch,
        max_context: longest,
        prefill_tokens: s.engine.token_budget as usize,
        encode_batch: s.engine.encoder_batch_images as usize,
        kv_blocks: None,
        graphs: true,
        hand_off: false,
        seed: s.seed,
    };
    let Split {
        seen,
        transfers,
        instances,
        mut steps,
    } = if s.strategy == Strategy::Colocated {
        let (seen, steps) = replay_colocated(&reqs, gpu, &c, &cfg)?;
        Split {
            seen,
            transfers: Vec::new(),
            instances: (0, 0),
            steps,
        }
    } else {
        match &c {
            ServedConfig::Llava(l) => replay_split(s, gpu, &reqs, l, &cfg)?,
            ServedConfig::Qwen(_) => return Err(Error::Invalid(split_not_served(s))),
        }
    };
    let by_id = reqs.iter().map(|r| (r.id, r)).collect();
    let perf: Vec<_> = (0..s.cluster.instances.len())
        .map(|i| s.phase_model(i))
        .collect();
    for st in &mut steps {
        st.predicted_s = st.predict(&*perf[st.instance as usize], &s.model, &by_id);
    }
    let requests = reqs
        .iter()
        .map(|r| {
            let t = seen.get(&r.id).cloned().unwrap_or_default();
            record(s, r, &t, instances)
        })
        .collect();
    let itl_s = seen
        .values()
        .filter(|t| t.finished.is_some())
        .flat_map(|t| t.itl.iter().copied())
        .collect();
    Ok(Replayed {
        requests,
        transfers,
        steps,
        itl_s,
    })
}

fn record(
    s: &Scenario,
    r: &hetsim_sim::workload::Request,
    t: &Seen,
    (up, down): (usize, usize),
) -> RequestRecord {
    let stage = s.strategy == Strategy::Stage;
    let model = &s.model;
    let arrival = arrival_s(r);
    let visual: u64 = r
        .images
        .iter()
        .map(|&(w, h)| {
            model
                .image_tokens(w as u64, h as u64)
                .map_or(0, |t| t.llm_tokens)
        })
        .sum();
    let out = r.output_tokens as u64;
    let ttft = t.first.map(|f| f - arrival);
    let e2e = t.finished.map(|f| f - arrival);
    let tpot = match (t.first, t.finished) {
        (Some(f), Some(d)) if out > 1 => Some((d - f) / (out - 1) as f64),
        _ => None,
    };
    RequestRecord {
        scenario: s.name.clone(),
        strategy: s.strategy,
        request_id: r.id,
        status: if t.finished.is_some() {
            RequestStatus::Finished
        } else {
            RequestStatus::Dropped(DropReason::Engine)
        },
        arrival_s: arrival,
        n_images: r.images.len() as u64,
        visual_tokens: visual,
        prompt_tokens: r.prompt_tokens as u64,
        output_tokens: out,
        emb_bytes: t.emb_bytes,
        kv_bytes: t.kv_bytes,
        ttft_s: ttft,
        tpot_s: tpot,
        e2e_s: e2e,
        encode_start_s: t.encode_start,
        encode_end_s: t.encoded,
        emb_transfer_start_s: t.tx_start.filter(|_| !stage),
        emb_transfer_end_s: t.tx_end.filter(|_| !stage),
        prefill_start_s: t.prefill_start,
        prefill_end_s: t.first,
        kv_transfer_start_s: t.tx_start.filter(|_| stage),
        kv_transfer_end_s: t.tx_end.filter(|_| stage),
        decode_start_s: if stage { t.decode_start } else { t.first },
        finish_s: t.finished,
        encoder_instance: Some(up as u64),
        prefill_instance: Some(if stage { up } else { down } as u64),
        decode_instance: Some(down as u64),
        preemptions: 0,
        source: Source::Exec,
    }
}

/// Applies an engine's events to the requests' times; `off` turns the engine's clock into the
/// replay's.
fn note(seen: &mut BTreeMap<u64, Seen>, events: Vec<crate::serve::engine::EngineEvent>, off: f64) {
    for e in events {
        let Some(r) = seen.get_mut(&e.id) else {
            continue;
        };
        let t = e.t - off;
        match e.kind {
            EventKind::EncodeDone => r.encoded = Some(t),
            EventKind::FirstToken => {
                r.first = Some(t);
                r.last_token = Some(t);
            }
            EventKind::KvImported => r.decode_start = Some(t),
            EventKind::Token => {
                // A stage-level request's first token was noted upstream: its times came along.
                if let Some(last) = r.last_token.or(r.first) {
                    r.itl.push(t - last);
                }
                r.last_token = Some(t);
            }
            EventKind::Finished => {
                r.first.get_or_insert(t);
                r.finished = Some(t);
            }
        }
    }
}

/// One `Engine::step` of instance `instance`, timed on the replay's clock (`off`: the replay's
/// start on the engine's clock) with the set-up work inside it; the encode and prefill starts of
/// its requests go into `seen`. The engine reports when encoding and prefill end; they start
/// with the step (its forward, after the step's images), as in the simulator. Prompts are not
/// chunked here.
fn timed_step(
    engine: &mut Engine,
    off: f64,
    instance: usize,
    seen: &mut BTreeMap<u64, Seen>,
) -> Result<(StepTiming, Vec<EngineEvent>)> {
    let (allocs, plans, planning) = (
        allocations_so_far(),
        engine.plans_made(),
        engine.planning_seconds(),
    );
    let start = engine.now() - off;
    let (kind, events) = engine.step()?;
    let mut step = StepTiming::new(start, engine.now() - off, kind, &events, off);
    step.instance = instance as u64;
    step.allocations = allocations_so_far() - allocs;
    step.new_plans = engine.plans_made() - plans;
    step.planning_s = engine.planning_seconds() - planning;
    step.kv_blocks_used = engine.kv_blocks_used() as u64;
    step.queued = engine.queued() as u64;
    step.running = engine.running() as u64;
    step.kv_blocks = engine.kv_blocks() as u64;
    for id in &step.encoded {
        if let Some(r) = seen.get_mut(id) {
            r.encode_start.get_or_insert(start);
        }
    }
    for id in &step.prefilled {
        if let Some(r) = seen.get_mut(id) {
            r.prefill_start.get_or_insert(step.encode_end_s);
        }
    }
    Ok((step, events))
}

fn replay_colocated(
    reqs: &[hetsim_sim::workload::Request],
    gpu: usize,
    c: &ServedConfig,
    cfg: &EngineConfig,
) -> Result<(BTreeMap<u64, Seen>, Vec<StepTiming>)> {
    let mut engine = Engine::new(c.random(Gpu::open(gpu)?, cfg.seed)?, cfg.clone())?;
    warm_up(&mut engine, c.llm(), cfg, largest_image(reqs, c)?)?;

    let t0 = engine.now();
    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut next = 0;
    while next < reqs.len() || !engine.is_idle() {
        let now = engine.now() - t0;
        while next < reqs.len() && arrival_s(&reqs[next]) <= now {
            engine.submit(to_engine(&reqs[next], c.llm()))?;
            seen.insert(reqs[next].id, Seen::default());
            next += 1;
        }
        if engine.is_idle() {
            // Open loop: nothing to do until the next arrival.
            let wait = arrival_s(&reqs[next]) - (engine.now() - t0);
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
            continue;
        }
        let (step, events) = timed_step(&mut engine, t0, 0, &mut seen)?;
        if step.kind != StepKind::Idle {
            steps.push(step);
        }
        note(&mut seen, events, t0);
    }
    for line in engine.model.products().race_lines() {
        eprintln!("[replay] decode product {line}");
    }
    Ok((seen, steps))
}

/// What crosses from the upstream GPU to the downstream one, complete on the downstream GPU.
enum Payload {
    /// Modality-level: the request's image embeddings (None without images).
    Encoded(Request, Option<DeviceBuffer>),
    /// Stage-level: the prefilled request and its packed KV.
    Prefilled(HandOff, DeviceBuffer),
}

/// One request handed from the upstream thread to the downstream one, with its times so far.
struct Shipped {
    payload: Payload,
    times: Seen,
}

/// What the replay's threads hand each other. Their CUDA handles (contexts, streams, events,
/// device and pinned pointers) are raw pointers, so none of them is `Send` by itself.
trait Handed {}
impl Handed for DeviceBuffer {}
impl Handed for Vec<DeviceBuffer> {}
impl Handed for Box<Shipped> {}
impl Handed for (Outbound, Seen) {}
impl Handed for (LinkKit, Instant) {}

/// A [`Handed`] value on its way to another host thread.
struct Crossing<T: Handed>(T);
// SAFETY: a `Handed` value moves whole to the receiving thread, which becomes its only user:
// nothing of it stays behind in the sender. CUDA driver handles may be used from any host thread
// once that thread has bound the handle's context, and each thread binds its own GPU's context
// before it calls the driver. A buffer is only read by the receiver after the sender synchronised
// the copy that wrote it (or, going back, after the engine that read it synchronised). The
// host-side parts (requests, times, an mpsc receiver of Crossings) are plain owned data.
unsafe impl<T: Handed> Send for Crossing<T> {}

/// How bytes cross from the upstream GPU to the downstream one.
enum Link {
    /// cuMemcpyPeerAsync on a stream of the source GPU, peer access enabled both ways; events
    /// around each copy time it on the GPU too.
    Peer(Stream, [Event; 2]),
    /// GPU → pinned host → GPU in chunks, two streams, 4 slots of 16 MiB.
    Staged(Stager, Event),
    /// Between green-context partitions of one GPU: cuMemcpyDtoDAsync on a stream of its
    /// primary context (the partitions share its memory), timed by events like a peer copy.
    OnDevice(Stream, [Event; 2]),
}

impl Link {
    /// `src` and `dst` are primary contexts (of one GPU for `LinkKind::OnDevice`).
    fn open(src: &Gpu, dst: &Gpu, kind: LinkKind) -> Result<Link> {
        let timed = || -> Result<[Event; 2]> { Ok([Event::timing(src)?, Event::timing(src)?]) };
        match kind {
            LinkKind::NvLink => {
                src.enable_peer_access(dst)?;
                dst.enable_peer_access(src)?;
                Ok(Link::Peer(src.stream()?, timed()?))
            }
            LinkKind::OnDevice => Ok(Link::OnDevice(src.stream()?, timed()?)),
            LinkKind::Pcie | LinkKind::Network => Ok(Link::Staged(
                Stager::new(src, dst, 16 << 20, 4)?,
                Event::sync_only(src)?,
            )),
        }
    }

    /// Copies the first `bytes` of `src` into `dst` and waits for it; the copy's time on the
    /// GPU in seconds where it is measured (peer and on-device copies). Leaves the link's
    /// context current: a caller serving from another context binds its own again.
    fn ship(&self, src: &DeviceBuffer, dst: &DeviceBuffer, bytes: usize) -> Result<Option<f64>> {
        match self {
            Link::Peer(st, [a, b]) | Link::OnDevice(st, [a, b]) => {
                st.bind()?;
                a.record(st)?;
                if matches!(self, Link::Peer(..)) {
                    crate::cuda::device::copy_peer_async(dst, src, bytes, st)?;
                } else {
                    crate::cuda::device::copy_async(dst, src, bytes, st)?;
                }
                b.record(st)?;
                st.synchronize()?;
                Ok(Some(a.elapsed_ms(b)? * 1e-3))
            }
            Link::Staged(stager, start) => {
                start.record(&stager.d2h)?;
                let chunk = staged_chunk(bytes, stager.slot_bytes);
                stager.enqueue(src.ptr, dst.ptr, bytes, chunk, start)?;
                stager.h2d.synchronize()?;
                Ok(None)
            }
        }
    }
}

/// Destination buffers on the downstream GPU, allocated once and given back by the downstream
/// engine after use: a fresh allocation per shipment would put cuMemAlloc (and the first
/// touch of new pages over the link) into every transfer's time. Their total stays within the
/// landing window (`landing::Pool`).
struct LandingPool {
    gpu: Gpu,
    buffers: landing::Pool<DeviceBuffer>,
    back: mpsc::Receiver<Crossing<Vec<DeviceBuffer>>>,
}

impl landing::Landed for DeviceBuffer {
    fn bytes(&self) -> u64 {
        self.bytes as u64
    }
}

impl LandingPool {
    /// A buffer of at least `bytes` (exactly `bytes` when `exact`); binds `home` again after
    /// allocating or freeing on the downstream GPU.
    fn get(&mut self, bytes: usize, exact: bool, home: &Gpu) -> Result<DeviceBuffer> {
        while let Ok(b) = self.back.try_recv() {
            for buffer in b.0 {
                self.buffers.put(buffer);
            }
        }
        let gpu = &self.gpu;
        let b = self
            .buffers
            .get(bytes as u64, exact, |n| gpu.alloc(n as usize))?;
        home.bind()?;
        Ok(b)
    }

    fn put(&mut self, b: DeviceBuffer) {
        self.buffers.put(b);
    }
}

/// Closes the landing window when the downstream thread ends, however it ends, so an upstream
/// waiting for room stops instead of waiting forever.
struct CloseOnExit<'a>(&'a SharedWindow);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What the upstream worker hands to the link, its source buffer on the upstream GPU.
enum Outbound {
    /// Modality-level: the request's image embeddings (None without images).
    Embeddings(Request, Option<DeviceBuffer>),
    /// Stage-level: the prefilled request and its packed KV (a buffer at least `kv_bytes` long).
    Kv(HandOff, DeviceBuffer),
}

/// The two green contexts a split replay on one GPU serves from, made before its threads start
/// and destroyed after they end.
struct Partitions {
    gpu: Gpu,
    up: GreenCtx,
    down: GreenCtx,
}

// SAFETY: each replay thread makes only its own partition's context current (the upstream
// `up`, the downstream `down`; the shipper uses the primary context), which is the driver's one
// rule for green contexts; the handles themselves are only read after creation.
unsafe impl Sync for Partitions {}

impl Partitions {
    /// GPU `ordinal` split as the scenario's partition GPUs ask, or why it cannot be.
    fn new(ordinal: usize, up: &GpuSpec, down: &GpuSpec) -> Result<Partitions> {
        let gpu = Gpu::open(ordinal)?;
        let (a, b) = GreenCtx::split(&gpu, up.sm_count)?;
        if (a.sms, b.sms) != (up.sm_count, down.sm_count) {
            let (_, total, least, align) = crate::cuda::green::sm_resource(&gpu)?;
            return Err(Error::Invalid(format!(
                "GPU {ordinal} ({total} SMs) splits into {} + {} SMs, not the scenario's {} + {}: \
                 give partitions the driver makes (at least {least} SMs, in steps of {align}, \
                 adding up to {total})",
                a.sms, b.sms, up.sm_count, down.sm_count
            )));
        }
        Ok(Partitions {
            gpu,
            up: a,
            down: b,
        })
    }

    fn up_view(&self) -> Result<Gpu> {
        Ok(self.up.view(&self.gpu))
    }

    fn down_view(&self) -> Result<Gpu> {
        Ok(self.down.view(&self.gpu))
    }
}

/// The link's side of a split replay, built by the upstream thread (which warms it up) and
/// handed to the shipper thread with the clock's start.
struct LinkKit {
    home: Gpu,
    link: Link,
    pool: LandingPool,
}

/// What a split replay measured: every request's times, the shipments, the (upstream,
/// downstream) instances, and both instances' steps.
struct Split {
    seen: BTreeMap<u64, Seen>,
    transfers: Vec<TransferRecord>,
    instances: (usize, usize),
    steps: Vec<StepTiming>,
}

/// Serves a disaggregated scenario on two GPUs with three host threads: the upstream thread takes
/// the arrivals and runs the encoder (modality) or the prefill worker (stage); the shipper
/// thread ships each request's embeddings or KV over the scenario's fabric, one after another
/// as concurrent copies on one path were measured to go (waiting for each copy, so its times
/// are the copy's own) while the upstream engine goes on computing, and hands the request over;
/// the downstream thread serves what it has been handed and gives the landing buffers back.
#[allow(clippy::type_complexity)]
fn replay_split(
    s: &Scenario,
    gpu: usize,
    reqs: &[hetsim_sim::workload::Request],
    c: &LlavaConfig,
    cfg: &EngineConfig,
) -> Result<Split> {
    let stage = s.strategy == Strategy::Stage;
    let (up_role, down_role) = if stage {
        (Role::Prefill, Role::Decode)
    } else {
        (Role::Encoder, Role::Llm)
    };
    let inst = &s.cluster.instances;
    let (Some(ui), Some(di)) = (
        inst.iter().position(|i| i.role == up_role),
        inst.iter().position(|i| i.role == down_role),
    ) else {
        return Err(Error::Invalid(format!(
            "{}: no {} or no {} instance",
            s.name,
            up_role.name(),
            down_role.name()
        )));
    };
    let fabric = s.cluster.nodes[inst[di].node].fabric;
    // Partitions of one GPU (the simulator's `<GPU>@<SMs>sm`) are green contexts of GPU `gpu`.
    let partitions = match fabric.kind {
        LinkKind::OnDevice => Some(Partitions::new(gpu, inst[ui].gpu, inst[di].gpu)?),
        _ => None,
    };
    let partitions = partitions.as_ref();
    let (up_ord, down_ord) = match partitions {
        Some(_) => (gpu, gpu),
        None => (gpu + inst[ui].gpus[0], gpu + inst[di].gpus[0]),
    };
    // Each side's GPU as its engine sees it: the GPU, or its partition.
    let open_up = move || partitions.map_or_else(|| Gpu::open(up_ord), |p| p.up_view());
    let open_down = move || partitions.map_or_else(|| Gpu::open(down_ord), |p| p.down_view());
    let place = |ord: usize, role: usize| match partitions {
        Some(_) => format!("{} of GPU {ord}", inst[role].gpu.name),
        None => format!("GPU {ord}"),
    };
    eprintln!(
        "  {} on {}, {} on {}, {} over {} ({})",
        up_role.name(),
        place(up_ord, ui),
        down_role.name(),
        place(down_ord, di),
        if stage { "KV" } else { "embeddings" },
        fabric.name,
        match fabric.kind {
            LinkKind::NvLink => "peer copy",
            LinkKind::OnDevice => "copy on the device",
            LinkKind::Pcie | LinkKind::Network => "GPU → pinned host → GPU",
        }
    );
    let np = c.image_tokens();
    let shape = c.transfer_shape();
    // Prompts of the trace and of the warm-up (one image, 8 text tokens).
    let longest_prompt = reqs
        .iter()
        .map(|r| r.images.len() * np + r.prompt_tokens as usize)
        .max()
        .unwrap_or(1)
        .max(np + 10);
    let kv_capacity = shape.kv_bytes(longest_prompt);
    let most_images = reqs
        .iter()
        .map(|r| r.images.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let largest = if stage {
        kv_capacity
    } else {
        most_images * shape.emb_bytes()
    };
    // Back-pressure: what is handed over and not yet read downstream stays within the window.
    let window = SharedWindow::new(landing::window_bytes(largest as u64));
    let window = &window;
    let barrier = Barrier::new(2);
    // On one GPU the downstream sizes its KV pool by the memory left free, so it sets up once the
    // upstream holds what it needs.
    let upstream_ready = partitions.map(|_| Barrier::new(2));
    let upstream_ready = upstream_ready.as_ref();
    let t0cell: OnceLock<Instant> = OnceLock::new();
    let (out_tx, out_rx) = mpsc::channel::<Crossing<(Outbound, Seen)>>();
    let (kit_tx, kit_rx) = mpsc::channel::<Crossing<(LinkKit, Instant)>>();
    // Shipped source buffers going back upstream for reuse.
    let (src_back_tx, src_back_rx) = mpsc::channel::<Crossing<DeviceBuffer>>();
    let (tx, rx) = mpsc::channel::<Crossing<Box<Shipped>>>();
    let (back_tx, back_rx) = mpsc::channel::<Crossing<Vec<DeviceBuffer>>>();
    // The threads share these; each owns its channel ends.
    let (barrier, t0cell) = (&barrier, &t0cell);

    type Served = (BTreeMap<u64, Seen>, Vec<StepTiming>);
    let upstream = move || -> Result<Served> {
        let setup = (|| -> Result<(Gpu, Engine, LinkKit, Option<DeviceBuffer>)> {
            let ug = open_up()?;
            // Landing buffers and the link live in the primary contexts (one thread at a time
            // may have a green context current: the shipper has its own).
            let dg = Gpu::open(down_ord)?;
            let link = Link::open(&Gpu::open(up_ord)?, &dg, fabric.kind)?;
            let ucfg = if stage {
                EngineConfig {
                    graphs: false,
                    hand_off: true,
                    ..cfg.clone()
                }
            } else {
                // Encode only: a KV pool of one request, no decode graphs.
                EngineConfig {
                    max_batch: 1,
                    kv_blocks: Some(cfg.max_context.div_ceil(KV_BLOCK)),
                    graphs: false,
                    ..cfg.clone()
                }
            };
            ug.bind()?;
            let mut eng = Engine::new(GpuModel::random(c, open_up()?, cfg.seed)?, ucfg)?;
            let mut pool = LandingPool {
                gpu: dg,
                buffers: landing::Pool::new(window.snapshot().limit()),
                back: back_rx,
            };
            let packed = if stage {
                eng.load_kv_kernels()?;
                Some(ug.alloc(kv_capacity)?)
            } else {
                None
            };
            // Warm-up: every encode batch size up to 8 and the largest (prefilled too, on a
            // prefill worker), each request shipped once.
            let eb = cfg.encode_batch.max(1);
            let mut id = u64::MAX;
            for n in (1..=eb.min(8)).chain(std::iter::once(eb)) {
                for _ in 0..n {
                    eng.submit(Request::synthetic(id, 1, 8, 2, c.llm.vocab))?;
                    id -= 1;
                }
                while !eng.is_idle() {
                    if let Some(packed) = &packed {
                        eng.step()?;
                        while let Some(h) = eng.hand_off(packed)? {
                            let dst = pool.get(kv_capacity, false, &ug)?;
                            link.ship(packed, &dst, h.kv_bytes)?;
                            ug.bind()?;
                            pool.put(dst);
                        }
                    } else {
                        for (_, emb) in eng.encode_ready()?.1 {
                            if let Some(src) = emb {
                                let dst = pool.get(src.bytes, true, &ug)?;
                                link.ship(&src, &dst, src.bytes)?;
                                ug.bind()?;
                                pool.put(dst);
                            }
                        }
                    }
                }
            }
            let kit = LinkKit {
                home: Gpu::open(up_ord)?,
                link,
                pool,
            };
            ug.bind()?;
            Ok((ug, eng, kit, packed))
        })();
        if let Some(b) = upstream_ready {
            b.wait();
        }
        barrier.wait();
        let (ug, mut eng, kit, packed) = setup?;
        let t0 = *t0cell.get_or_init(Instant::now);
        if kit_tx.send(Crossing((kit, t0))).is_err() {
            return Ok(Default::default());
        }
        ug.bind()?;
        let off = t0.duration_since(eng.started()).as_secs_f64();
        let now = || t0.elapsed().as_secs_f64();
        let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
        let mut steps = Vec::new();
        // Source buffers (packed KV, embeddings) come back from the shipper once shipped.
        let mut packed_free: Vec<DeviceBuffer> = packed.into_iter().collect();
        let mut next = 0;
        loop {
            while next < reqs.len() && arrival_s(&reqs[next]) <= now() {
                eng.submit(to_engine(&reqs[next], &c.llm))?;
                seen.insert(reqs[next].id, Seen::default());
                next += 1;
            }
            if eng.is_idle() {
                if next == reqs.len() {
                    return Ok((seen, steps));
                }
                let wait = arrival_s(&reqs[next]) - now();
                if wait > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
                continue;
            }
            let start = now();
            let mut out = Vec::new();
            if stage {
                let (step, events) = timed_step(&mut eng, off, ui, &mut seen)?;
                if step.kind != StepKind::Idle {
                    steps.push(step);
                }
                note(&mut seen, events, off);
                loop {
                    while let Ok(b) = src_back_rx.try_recv() {
                        packed_free.push(b.0);
                    }
                    let packed = match packed_free.pop() {
                        Some(b) => b,
                        None => ug.alloc(kv_capacity)?,
                    };
                    match eng.hand_off(&packed)? {
                        Some(h) => {
                            let times = seen.remove(&h.req.id).unwrap_or_default();
                            out.push((Outbound::Kv(h, packed), times));
                        }
                        None => {
                            packed_free.push(packed);
                            break;
                        }
                    }
                }
            } else {
                while let Ok(b) = src_back_rx.try_recv() {
                    eng.recycle(b.0);
                }
                let (events, ready) = eng.encode_ready()?;
                let end = events.first().map_or(start, |e| e.t - off);
                if !events.is_empty() {
                    let images = ready
                        .iter()
                        .filter(|(_, emb)| emb.is_some())
                        .map(|(r, _)| r.images.len())
                        .sum();
                    let mut step =
                        StepTiming::new(start, end, StepKind::Encode { images }, &events, off);
                    step.instance = ui as u64;
                    step.queued = eng.queued() as u64;
                    steps.push(step);
                }
                for (req, emb) in ready {
                    let mut times = seen.remove(&req.id).unwrap_or_default();
                    if emb.is_some() {
                        times.encode_start = Some(start);
                        times.encoded = Some(end);
                    }
                    out.push((Outbound::Embeddings(req, emb), times));
                }
            }
            for o in out {
                let bytes = match &o.0 {
                    Outbound::Kv(..) => kv_capacity,
                    Outbound::Embeddings(_, emb) => emb.as_ref().map_or(0, |e| e.bytes),
                };
                // Waits while the downstream holds a window's worth; false once it stopped.
                let room = bytes == 0 || window.reserve(bytes as u64);
                if !room || out_tx.send(Crossing(o)).is_err() {
                    // The shipper or downstream has stopped (an error there); it reports why.
                    return Ok((seen, steps));
                }
            }
        }
    };

    let shipper = move || -> Result<()> {
        let Ok(kit) = kit_rx.recv() else {
            return Ok(()); // upstream failed to set up; it reports why
        };
        let (
            LinkKit {
                home,
                link,
                mut pool,
            },
            t0,
        ) = kit.0;
        home.bind()?;
        let now = || t0.elapsed().as_secs_f64();
        // (wall, on the GPU) seconds of each measured copy: where the host's view and the
        // copy's own time part.
        let mut timed: Vec<(f64, f64)> = Vec::new();
        for item in out_rx.iter() {
            let (outbound, mut times) = item.0;
            let payload = match outbound {
                Outbound::Embeddings(req, None) => Payload::Encoded(req, None),
                Outbound::Embeddings(req, Some(src)) => {
                    let dst = pool.get(src.bytes, true, &home)?;
                    let a = now();
                    let gpu_s = link.ship(&src, &dst, src.bytes)?;
                    let b = now();
                    (times.tx_start, times.tx_end) = (Some(a), Some(b));
                    timed.extend(gpu_s.map(|g| (b - a, g)));
                    times.emb_bytes = src.bytes as u64;
                    // Back to the encoder for reuse (freed here once upstream has finished).
                    let _ = src_back_tx.send(Crossing(src));
                    home.bind()?;
                    Payload::Encoded(req, Some(dst))
                }
                Outbound::Kv(h, src) => {
                    let dst = pool.get(kv_capacity, false, &home)?;
                    let a = now();
                    let gpu_s = link.ship(&src, &dst, h.kv_bytes)?;
                    let b = now();
                    (times.tx_start, times.tx_end) = (Some(a), Some(b));
                    timed.extend(gpu_s.map(|g| (b - a, g)));
                    times.kv_bytes = h.kv_bytes as u64;
                    // Upstream may have finished: then the buffer is freed here.
                    let _ = src_back_tx.send(Crossing(src));
                    home.bind()?;
                    Payload::Prefilled(h, dst)
                }
            };
            if tx
                .send(Crossing(Box::new(Shipped { payload, times })))
                .is_err()
            {
                return Ok(()); // downstream stopped; it reports why
            }
        }
        let w = window.snapshot();
        eprintln!(
            "  landing buffers: peak {:.0} MiB allocated, {:.0} MiB handed over at once, window {:.0} MiB",
            pool.buffers.peak() as f64 / 1048576.0,
            w.peak() as f64 / 1048576.0,
            w.limit() as f64 / 1048576.0
        );
        if !timed.is_empty() {
            let (wall, gpu): (Vec<f64>, Vec<f64>) = timed.into_iter().unzip();
            eprintln!(
                "  {} copies: median {:.1} µs wall (host clock around copy + sync), {:.1} µs on the GPU (CUDA events)",
                wall.len(),
                crate::stats::median(&wall) * 1e6,
                crate::stats::median(&gpu) * 1e6
            );
        }
        Ok(())
    };

    let downstream = move |rx: mpsc::Receiver<Crossing<Box<Shipped>>>| -> Result<Served> {
        let back = back_tx;
        let _close = CloseOnExit(window);
        if let Some(b) = upstream_ready {
            b.wait();
        }
        let setup = (|| -> Result<Engine> {
            let dg = open_down()?;
            dg.bind()?;
            let mut eng = Engine::new(GpuModel::random(c, dg, cfg.seed)?, cfg.clone())?;
            // LLaVA-1.5 encodes every image at 336²: any size warms it up.
            warm_up(
                &mut eng,
                &c.llm,
                cfg,
                hetsim_sim::profile::DEFAULT_ENCODE_SIZE,
            )?;
            if stage {
                eng.load_kv_kernels()?;
            }
            Ok(eng)
        })();
        barrier.wait();
        let mut eng = setup?;
        eng.model.gpu().bind()?;
        let t0 = *t0cell.get_or_init(Instant::now);
        let off = t0.duration_since(eng.started()).as_secs_f64();
        let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
        let mut steps = Vec::new();
        loop {
            let got = if eng.is_idle() {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break, // the shipper is done and everything is served
                }
            } else {
                match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => {
                        let (step, events) = timed_step(&mut eng, off, di, &mut seen)?;
                        if step.kind != StepKind::Idle {
                            steps.push(step);
                        }
                        note(&mut seen, events, off);
                        let spent = eng.take_spent();
                        if !spent.is_empty() {
                            let bytes: usize = spent.iter().map(|b| b.bytes).sum();
                            // Shipper gone: the buffers are freed here. Sent before the
                            // room is made, so the shipper finds them when it needs them.
                            let _ = back.send(Crossing(spent));
                            window.release(bytes as u64);
                        }
                        continue;
                    }
                }
            };
            let m = *got.0;
            eng.model.gpu().bind()?;
            match m.payload {
                Payload::Encoded(req, emb) => {
                    seen.insert(req.id, m.times);
                    eng.submit_encoded(req, emb)?
                }
                Payload::Prefilled(h, kv) => {
                    seen.insert(h.req.id, m.times);
                    eng.submit_prefilled(h, kv)?
                }
            }
        }
        Ok((seen, steps))
    };

    let (up, ship, down) = std::thread::scope(|sc| {
        let u = sc.spawn(upstream);
        let sh = sc.spawn(shipper);
        let down = downstream(rx);
        // A panicking thread is a bug in the harness, not the user's input.
        let panicked = |who: &str| {
            Error::Sim(hetsim_sim::error::Error::Internal(format!(
                "the {who} thread panicked"
            )))
        };
        let up = u.join().unwrap_or_else(|_| Err(panicked("upstream")));
        let ship = sh.join().unwrap_or_else(|_| Err(panicked("shipper")));
        (up, ship, down)
    });
    // Errors in the order they cause each other: upstream, link, downstream.
    let (up, mut steps) = up?;
    ship?;
    let (mut seen, down_steps) = down?;
    steps.extend(down_steps);
    steps.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    // Requests that finished upstream (one output token on a prefill worker).
    for (id, t) in up {
        seen.entry(id).or_insert(t);
    }
    let transfers = reqs
        .iter()
        .filter_map(|r| {
            let t = seen.get(&r.id)?;
            Some(TransferRecord {
                scenario: s.name.clone(),
                request_id: r.id,
                kind: if stage {
                    TransferKind::Kv
                } else {
                    TransferKind::Embedding
                },
                src_instance: ui as u64,
                dst_instance: di as u64,
                link: fabric.name,
                bytes: if stage { t.kv_bytes } else { t.emb_bytes },
                flows: 1,
                ready_s: if stage { t.first? } else { t.encoded? },
                start_s: t.tx_start?,
                end_s: t.tx_end?,
                source: Source::Exec,
            })
        })
        .collect();
    Ok(Split {
        seen,
        transfers,
        instances: (ui, di),
        steps,
    })
}

/// Everything a served step would otherwise set up the first time it meets a shape happens here,
/// before the clock starts, as a serving engine's start-up profiling run does: every kernel
/// compiled, every decode graph captured (requests with output lengths 2 … max_batch + 1 make the
/// batch shrink through every bucket), and the prefill and encoder scratch grown to the largest
/// step the engine allows (encoder batches of every size up to a full one, prefills filling the
/// token budget, the longest prompt). Without the last part the first two- or three-prompt prefill of a replay allocated
/// ~20 buffers and took up to 2.4× its steady-state time (a step log of 2026-12-03 00:12 UTC,
/// not kept), which alone made the measured TTFT p99 30–40 % worse than the simulator's; with
/// it no served step allocates (exec/results/2026-12-03-h200-ttft-tail/validate-h200/steps.csv.gz).
/// Text tokens of each warm-up prompt with an image.
const WARM_UP_TEXT: usize = 8;

fn warm_up(
    engine: &mut Engine,
    llm: &LlmConfig,
    cfg: &EngineConfig,
    image: ImageSize,
) -> Result<()> {
    let vocab = llm.vocab;
    let with_image = |id, text, output| {
        let mut q = Request::synthetic(id, 1, text, output, vocab);
        q.images = vec![image];
        q
    };
    for k in 0..cfg.max_batch {
        engine.submit(Request::synthetic(
            u64::MAX - k as u64,
            usize::from(k == 0),
            8,
            k + 2,
            vocab,
        ))?;
    }
    engine.run_to_completion()?;
    // Every encoder batch size, each with its prompts prefilled in the same step: the first
    // batch of n images ran 10–20 ms over its steady-state time (not in the host's plan making:
    // exec/results/2026-12-03-h200-ttft-tail/first-shapes/).
    let mut id = u64::MAX - cfg.max_batch as u64;
    for n in 1..=cfg.encode_batch.max(1) {
        for _ in 0..n {
            engine.submit(with_image(id, WARM_UP_TEXT, 1))?;
            id -= 1;
        }
        engine.run_to_completion()?;
    }
    // Under dynamic resolution the image sizes make the encoder's shapes (padded, so a bounded
    // set): each once.
    engine.warm_encode_products(image)?;
    // One text-only prompt as long as a step or a request allows.
    let longest = cfg
        .prefill_tokens
        .min(cfg.max_context)
        .saturating_sub(2)
        .max(1);
    engine.submit(Request::synthetic(id, 0, longest, 1, vocab))?;
    engine.run_to_completion()?;
    Ok(())
}

/// What `hetsim validate` found.
pub struct Validation {
    /// scenario, metric, predicted, measured, error_pct.
    pub comparison: hetsim_sim::table::Table,
    pub median_abs_error_pct: Option<f64>,
    /// Scenarios simulated but not replayed, with the reason.
    pub skipped: Vec<String>,
    pub files: Vec<std::path::PathBuf>,
}

/// Simulates every scenario and replays those this harness can serve for real, on GPU `gpu`;
/// writes both sources' rows (and the comparison) under `out`.
pub fn validate(
    exp: &hetsim_sim::experiment::Experiment,
    out: Option<&std::path::Path>,
    trace: Option<TraceOptions>,
    gpu: usize,
) -> Result<Validation> {
    if trace.is_some() && out.is_none() {
        return Err(Error::Invalid(
            "--trace writes each scenario's timelines into the result directory: give --out DIR too"
                .into(),
        ));
    }
    use hetsim_sim::output::ResultWriter;
    use hetsim_sim::records::MemorySink;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut steps: Option<hetsim_sim::table::Table> = None;
    let mut bench = Vec::new();
    let mut writer = match out {
        Some(dir) => Some(ResultWriter::create(dir)?),
        None => None,
    };
    for (i, s) in exp.scenarios.iter().enumerate() {
        let mut sink = MemorySink::default();
        let timeline = |w: &mut ResultWriter, source| -> Result<(String, TimelineWriter)> {
            let name = timeline::file_name(i, &s.name, source);
            let names = timeline::instance_names(s);
            let opts = trace.unwrap_or_default();
            let t = TimelineWriter::create(&w.staged_path(&name), &s.name, source, &names, opts)?;
            Ok((name, t))
        };
        let run = match (writer.as_mut(), trace) {
            (Some(w), Some(_)) => {
                let (name, mut t) = timeline(w, Source::Sim)?;
                let mut both = TimelineSink {
                    rows: &mut sink,
                    timeline: &mut t,
                };
                let run = hetsim_sim::engine::simulate(s, &mut both, &mut |_| {})?;
                t.finish()?;
                w.record(&name);
                run
            }
            _ => hetsim_sim::engine::simulate(s, &mut sink, &mut |_| {})?,
        };
        if let Some(w) = writer.as_mut() {
            for t in &sink.transfers {
                w.transfers.append(t)?;
            }
            w.summary.append(&run.summary)?;
        }
        bench.push(run.bench.clone());
        rows.extend(sink.requests);
        match replayable(s) {
            Ok(()) => {
                eprintln!("replaying {} on GPU {gpu} …", s.name);
                let Replayed {
                    requests: measured,
                    transfers,
                    steps: step_log,
                    itl_s,
                } = replay(s, gpu)?;
                if let (Some(w), Some(_)) = (writer.as_mut(), trace) {
                    let (name, mut t) = timeline(w, Source::Exec)?;
                    for st in &step_log {
                        t.step(&st.span())?;
                    }
                    for x in &transfers {
                        t.transfer(x)?;
                    }
                    for r in &measured {
                        t.request(r)?;
                    }
                    t.finish()?;
                    w.record(&name);
                }
                let t = step_table(&s.name, &step_log);
                match steps.as_mut() {
                    None => steps = Some(t),
                    Some(all) => all.rows.extend(t.rows),
                }
                let refs: Vec<&RequestRecord> = measured.iter().collect();
                let summary = hetsim_sim::compare::summarize_measured(&run.summary, &refs);
                bench.push(BenchServe::from_requests(&summary, &refs, itl_s));
                if let Some(w) = writer.as_mut() {
                    for t in &transfers {
                        w.transfers.append(t)?;
                    }
                    w.summary.append(&summary)?;
                }
                rows.extend(measured);
            }
            Err(why) => skipped.push(why),
        }
    }
    let cmp = hetsim_sim::compare::compare(&rows);
    let mut files = Vec::new();
    if let Some(mut w) = writer {
        for r in &rows {
            w.requests.append(r)?;
        }
        w.add_file("comparison.csv", cmp.table.to_csv())?;
        w.add_file(bench_serve::FILE, bench_serve::file(&bench))?;
        if let Some(t) = &steps {
            w.add_file("steps.csv", t.to_csv())?;
        }
        files = w.commit()?;
    }
    Ok(Validation {
        comparison: cmp.table,
        median_abs_error_pct: cmp.median_abs_error_pct,
        skipped,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hetsim_sim::experiment::{load_experiment, parse_experiment};

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn a_measured_step_is_drawn_like_a_simulated_one() {
        use crate::serve::engine::EngineEvent;
        let ev = |id, kind, t| EngineEvent {
            id,
            kind,
            token: None,
            t,
        };
        // The engine's clock started 100 s before the replay: events are on the engine's clock.
        let events = [
            ev(7, EventKind::EncodeDone, 100.012),
            ev(7, EventKind::FirstToken, 100.050),
            ev(8, EventKind::FirstToken, 100.050),
        ];
        let kind = StepKind::Prefill {
            seqs: 2,
            tokens: 1200,
            images: 1,
        };
        let mut st = StepTiming::new(0.0, 0.050, kind, &events, 100.0);
        assert!((st.encode_end_s - 0.012).abs() < 1e-9);
        assert_eq!(st.prefilled, [7, 8]);
        st.kv_blocks = 64;
        st.kv_blocks_used = 10;
        let span = st.span();
        assert_eq!(
            (
                span.images,
                span.prefill_seqs,
                span.prefill_tokens,
                span.decode_seqs
            ),
            (1, 2, 1200, 0)
        );
        assert_eq!((span.kv_blocks_used, span.kv_blocks), (10, 64));
        let decode = StepKind::Decode {
            batch: 5,
            bucket: 8,
            context: 3000,
        };
        let d = StepTiming::new(0.05, 0.06, decode, &[], 100.0).span();
        assert_eq!(
            (d.encode_end_s, d.decode_seqs, d.decode_context_tokens),
            (0.05, 5, 3000)
        );
    }

    #[test]
    fn every_validate_scenario_replays() {
        for f in ["validate-pcie.yaml", "validate-nvlink.yaml"] {
            let exp = load_experiment(&root().join("experiments").join(f), None).unwrap();
            assert_eq!(exp.scenarios.len(), 6, "{f}");
            let mut shapes: Vec<&str> = Vec::new();
            for s in &exp.scenarios {
                assert!(replayable(s).is_ok(), "{}: {:?}", s.name, replayable(s));
                shapes.push(s.strategy.name());
            }
            shapes.dedup();
            assert_eq!(shapes, ["colocated", "modality", "stage"], "{f}");
        }
        // One H200 split by green contexts, beside the whole GPU colocated.
        let exp = load_experiment(&root().join("experiments/validate-green.yaml"), None).unwrap();
        let shapes: Vec<&str> = exp.scenarios.iter().map(|s| s.strategy.name()).collect();
        assert_eq!(
            shapes,
            ["modality", "modality", "modality", "colocated", "colocated"]
        );
        for s in &exp.scenarios {
            assert!(replayable(s).is_ok(), "{}: {:?}", s.name, replayable(s));
        }
        // Qwen2.5-VL colocated, light to saturating.
        let exp = load_experiment(&root().join("experiments/validate-qwen.yaml"), None).unwrap();
        assert_eq!(exp.scenarios.len(), 4);
        // Every load keeps the mixed image sizes: a scenario's `workload:` replaces the
        // default's whole, and without the file's anchors the loads above light fell back to
        // one 640×480 image (the replay of 2026-12-04 00:50 UTC).
        let light = &exp.scenarios[0].workload;
        let fixed =
            |d: &hetsim_sim::workload::Dist| matches!(d, hetsim_sim::workload::Dist::Fixed(_));
        assert!(
            light
                .images
                .as_ref()
                .is_some_and(|i| !fixed(&i.width) && !fixed(&i.height))
        );
        for s in &exp.scenarios {
            assert_eq!(s.workload.images, light.images, "{}", s.name);
            assert_eq!(s.workload.prompt_tokens, light.prompt_tokens, "{}", s.name);
            assert_eq!(s.workload.output_tokens, light.output_tokens, "{}", s.name);
            assert_eq!(s.model.name, "qwen2.5-vl-7b");
            assert!(replayable(s).is_ok(), "{}: {:?}", s.name, replayable(s));
        }
    }

    fn scenario(deployment: &str) -> Scenario {
        let deployment: String = deployment.lines().map(|l| format!("      {l}\n")).collect();
        let text = format!(
            "name: t\nseed: 1\ndefaults:\n  model: llava-1.5-7b\n  cluster:\n    nodes: [{{name: box, gpus: [{{gpu: H200-SXM, count: 4}}], fabric: nvlink4}}]\n  workload:\n    requests: 4\n    arrival: {{process: poisson, rate: 2}}\n    images: {{count: 1, width: 640, height: 480}}\n    prompt_tokens: 20\n    output_tokens: 8\nscenarios:\n  - name: s\n    deployment:\n{deployment}"
        );
        let exp = parse_experiment(&text, std::path::Path::new("t.yaml"), None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        exp.scenarios.into_iter().next().unwrap()
    }

    #[test]
    fn shapes_outside_the_two_gpu_replay_are_refused() {
        let ok = scenario(
            "  strategy: modality\n  instances: [{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM}]\n",
        );
        assert!(replayable(&ok).is_ok(), "{:?}", replayable(&ok));
        for (dep, want) in [
            (
                "  strategy: modality\n  instances: [{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM, tp: 2}]\n",
                "tp 1",
            ),
            (
                "  strategy: modality\n  instances: [{role: encoder, gpu: H200-SXM, count: 2}, {role: llm, gpu: H200-SXM}]\n",
                "one encoder and one llm",
            ),
            (
                "  strategy: stage\n  instances: [{role: prefill, gpu: H200-SXM, count: 2}, {role: decode, gpu: H200-SXM}]\n",
                "one prefill and one decode",
            ),
            (
                "  strategy: stage\n  kv_transfer: layerwise\n  instances: [{role: prefill, gpu: H200-SXM}, {role: decode, gpu: H200-SXM}]\n",
                "after prefill",
            ),
            (
                "  strategy: epd\n  instances: [{role: encoder, gpu: H200-SXM}, {role: prefill, gpu: H200-SXM}, {role: decode, gpu: H200-SXM}]\n",
                "do not replay",
            ),
            (
                "  strategy: modality\n  work_stealing: true\n  instances: [{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM}]\n",
                "work stealing",
            ),
            (
                "  strategy: colocated\n  instances: [{role: all, gpu: H200-SXM, count: 2}]\n",
                "one instance",
            ),
        ] {
            let s = scenario(dep);
            let why = replayable(&s).unwrap_err();
            assert!(why.contains(want), "{dep}: {why}");
        }
    }

    #[test]
    fn replay_refuses_before_touching_a_gpu() {
        let s = scenario(
            "  strategy: stage\n  kv_transfer: layerwise\n  instances: [{role: prefill, gpu: H200-SXM}, {role: decode, gpu: H200-SXM}]\n",
        );
        match replay(&s, 0) {
            Err(Error::Invalid(why)) => assert!(why.contains("layer by layer"), "{why}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("layer-wise stage replay should be refused"),
        }
    }

    fn qwen_scenario(deployment: &str) -> Scenario {
        let mut text = String::from(
            "name: t\nseed: 1\ndefaults:\n  model: qwen2.5-vl-7b\n  cluster:\n    nodes: [{name: box, gpus: [{gpu: H200-SXM, count: 2}], fabric: nvlink4}]\n  workload:\n    requests: 40\n    arrival: {process: poisson, rate: 2}\n    images: {count: {dist: choice, values: [0, 1, 2]}, width: {dist: choice, values: [640, 1280]}, height: {dist: choice, values: [480, 720]}}\n    prompt_tokens: 20\n    output_tokens: 8\nscenarios:\n  - name: s\n    deployment:\n",
        );
        for l in deployment.lines() {
            text.push_str(&format!("      {l}\n"));
        }
        let exp = parse_experiment(&text, std::path::Path::new("t.yaml"), None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        exp.scenarios.into_iter().next().unwrap()
    }

    #[test]
    fn qwen_requests_take_their_image_tokens_from_their_sizes() {
        let s = qwen_scenario("  strategy: colocated\n  instances: [{role: all, gpu: H200-SXM}]\n");
        assert!(replayable(&s).is_ok(), "{:?}", replayable(&s));
        let c = ServedConfig::builtin(&s.model.name, None).unwrap();
        let mut src = s.workload.requests(s.seed).unwrap();
        let mut reqs = Vec::new();
        while let Some(r) = src.next_request().unwrap() {
            reqs.push(r);
        }
        // 640×480 is 391 LLM tokens, 640×720 644×728 → 23×26 merged = 598, 1280×480 1288×476 →
        // 46×17 = 782, 1280×720 1,196.
        let tokens = |(w, h): (u32, u32)| match (w, h) {
            (640, 480) => 391,
            (640, 720) => 598,
            (1280, 480) => 782,
            (1280, 720) => 1196,
            other => panic!("{other:?} is not a size of the workload"),
        };
        let mut want = 1;
        for r in &reqs {
            let q = to_engine(r, c.llm());
            assert_eq!(q.images, r.images);
            let marks = q
                .prompt
                .iter()
                .filter(|&&t| t == crate::serve::model::host::IMAGE_TOKEN);
            assert_eq!(marks.count(), r.images.len());
            assert_eq!(q.prompt.len(), 1 + r.images.len() + 19);
            for &i in &r.images {
                assert_eq!(c.image_tokens(i).unwrap(), tokens(i));
            }
            want = want.max(1 + r.images.iter().map(|&i| tokens(i)).sum::<usize>() + 20 + 8);
        }
        assert!(
            want > 1 + 1196 + 28,
            "the workload draws two images somewhere"
        );
        assert_eq!(longest_context(&reqs, &c).unwrap(), want);
        let largest = largest_image(&reqs, &c).unwrap();
        assert_eq!(largest, (1280, 720));
    }

    #[test]
    fn qwen_split_replays_are_refused_before_any_gpu_work() {
        for dep in [
            "  strategy: modality\n  instances: [{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM}]\n",
            "  strategy: stage\n  instances: [{role: prefill, gpu: H200-SXM}, {role: decode, gpu: H200-SXM}]\n",
        ] {
            let s = qwen_scenario(dep);
            let why = replayable(&s).unwrap_err();
            assert!(
                why.contains("not served yet") && why.contains("qwen2.5-vl-7b"),
                "{why}"
            );
            match replay(&s, 0) {
                Err(e @ Error::Invalid(_)) => assert_eq!(e.exit_code(), 2),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("a Qwen2.5-VL split replay should be refused"),
            }
        }
    }
}
