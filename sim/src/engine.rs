//! The discrete-event engine: requests flow through encoder, prefill and decode instances and
//! across links, on an integer-nanosecond clock.
//!
//! Determinism: one event queue ordered by (time, sequence number), a seeded workload, and no
//! iteration over hashed containers. Invariants (time never runs backwards, KV in use never over
//! capacity, bytes sent = bytes received, every request finished or reported dropped) are
//! asserted as the run goes and reported in `Invariants` for tests.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::catalog::ImageTokens;
use crate::cluster::Role;
use crate::engine_spec::Schedule;
use crate::error::{Error, InputError};
use crate::experiment::{KvTransferMode, Routing, Scenario};
use crate::kv::KvPool;
use crate::network::{Completion, FlowId, Network};
use crate::perf::{BatchShape, PhaseModel};
use crate::records::{
    DropReason, InstanceRecord, LinkRecord, RecordSink, RequestRecord, RequestStatus, Source,
    SummaryRecord, TransferKind, TransferRecord,
};
use crate::stats::LogHistogram;
use crate::workload::{Request, RequestSource};

type ReqId = u64;

fn ns(seconds: f64) -> u64 {
    (seconds * 1e9).ceil().max(0.0) as u64
}

fn secs(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    StepDone(usize),
    TransferStart(usize),
    FlowDone(FlowId, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedding,
    Kv,
}

struct PlannedFlow {
    ports: Vec<usize>,
    bytes: u64,
}

struct Transfer {
    req: ReqId,
    kind: Kind,
    src: usize,
    dst: usize,
    bytes: u64,
    link: &'static str,
    planned: Vec<PlannedFlow>,
    flows: Vec<FlowId>,
    flows_left: usize,
    ready_ns: u64,
    start_ns: u64,
    /// Layerwise KV: the prefill step producing the data ends here; until then flows are capped.
    produced_by_ns: Option<(u64, u64)>,
}

/// A request in flight.
struct Req {
    r: Request,
    images: Vec<ImageTokens>,
    visual: u64,
    context: u64,
    encoded: bool,
    prefill_target: u64,
    prefilled: u64,
    generated: u64,
    /// KV blocks held at `home`.
    blocks: u64,
    home: Option<usize>,
    /// KV blocks reserved at the decode instance while the KV is shipped there.
    reserved: u64,
    emb_bytes: u64,
    kv_bytes: u64,
    kv_transfer: Option<usize>,
    encode_start: Option<u64>,
    encode_end: Option<u64>,
    emb_start: Option<u64>,
    emb_end: Option<u64>,
    prefill_start: Option<u64>,
    first_token: Option<u64>,
    kv_start: Option<u64>,
    kv_end: Option<u64>,
    decode_start: Option<u64>,
    encoder: Option<usize>,
    prefill_inst: Option<usize>,
    decode_inst: Option<usize>,
    preemptions: u64,
    /// Instances whose load counts this request (least-loaded routing).
    assigned: Vec<usize>,
}

/// What one LLM step will do, as it is put together.
#[derive(Default)]
struct Composition {
    batch: BatchShape,
    used: u64,
    decodes: Vec<ReqId>,
    chunks: Vec<(ReqId, u64)>,
    images: Vec<ImageTokens>,
    encoded: Vec<ReqId>,
}

struct Step {
    start: u64,
    end: u64,
    encode_end: u64,
    encoded: Vec<ReqId>,
    chunks: Vec<(ReqId, u64)>,
    decodes: Vec<ReqId>,
}

struct Instance {
    role: Role,
    perf: Box<dyn PhaseModel>,
    kv: KvPool,
    /// Encodes images of requests that arrive unencoded.
    encodes: bool,
    /// Keeps requests after prefill and decodes them.
    decodes: bool,
    /// An encoder that serves LLM requests when no image waits (work stealing).
    steals: bool,
    step: Option<Step>,
    encode_queue: VecDeque<ReqId>,
    waiting: VecDeque<ReqId>,
    running: Vec<ReqId>,
    incoming: VecDeque<ReqId>,
    /// Requests routed here and not yet gone (least-loaded routing).
    load: u64,
    busy_ns: u64,
    steps: u64,
    images_encoded: u64,
    prefill_tokens: u64,
    decode_tokens: u64,
    preemptions: u64,
}

/// What the invariant checks saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invariants {
    pub arrived: u64,
    pub finished: u64,
    pub dropped: u64,
    /// Requests still in flight when the event queue ran dry (always 0 unless the engine is wrong).
    pub stalled: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Most KV blocks in use on any instance as a share of its capacity (≤ 1).
    pub peak_kv_fraction: f64,
}

pub struct RunResult {
    pub summary: SummaryRecord,
    pub instances: Vec<InstanceRecord>,
    pub links: Vec<LinkRecord>,
    pub invariants: Invariants,
}

pub struct Simulation<'a> {
    s: &'a Scenario,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    source: RequestSource,
    next_arrival: Option<Request>,
    reqs: BTreeMap<ReqId, Req>,
    inst: Vec<Instance>,
    pools: BTreeMap<Role, Vec<usize>>,
    round_robin: BTreeMap<Role, usize>,
    net: Network,
    transfers: Vec<Option<Transfer>>,
    free_transfers: Vec<usize>,
    flow_owner: Vec<Option<usize>>,
    sink: &'a mut dyn RecordSink,
    inv: Invariants,
    ttft: LogHistogram,
    tpot: LogHistogram,
    e2e: LogHistogram,
    good: u64,
    output_tokens: u64,
    emb_bytes: u64,
    kv_bytes: u64,
    horizon_ns: Option<u64>,
}

impl<'a> Simulation<'a> {
    pub fn new(
        s: &'a Scenario,
        sink: &'a mut dyn RecordSink,
    ) -> Result<Simulation<'a>, InputError> {
        let mut inst = Vec::new();
        let mut pools: BTreeMap<Role, Vec<usize>> = BTreeMap::new();
        for (i, spec) in s.cluster.instances.iter().enumerate() {
            let perf = s.phase_model(i);
            let encodes = match spec.role {
                Role::Encoder | Role::All => true,
                Role::Prefill => !s.strategy.has_encoder_pool(),
                Role::Llm | Role::Decode => false,
            };
            inst.push(Instance {
                role: spec.role,
                perf,
                kv: KvPool::new(s.engine.block_tokens, s.memory[i].kv_blocks),
                encodes,
                decodes: matches!(spec.role, Role::All | Role::Llm | Role::Decode)
                    || (spec.role == Role::Encoder && s.work_stealing),
                steals: spec.role == Role::Encoder && s.work_stealing,
                step: None,
                encode_queue: VecDeque::new(),
                waiting: VecDeque::new(),
                running: Vec::new(),
                incoming: VecDeque::new(),
                load: 0,
                busy_ns: 0,
                steps: 0,
                images_encoded: 0,
                prefill_tokens: 0,
                decode_tokens: 0,
                preemptions: 0,
            });
            pools.entry(spec.role).or_default().push(i);
        }
        let net = Network::new(
            s.cluster.ports.iter().map(|p| p.bytes_per_s).collect(),
            s.cluster.sharing,
        );
        let mut sim = Simulation {
            s,
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            source: s.workload.requests(s.seed)?,
            next_arrival: None,
            reqs: BTreeMap::new(),
            inst,
            pools,
            round_robin: BTreeMap::new(),
            net,
            transfers: Vec::new(),
            free_transfers: Vec::new(),
            flow_owner: Vec::new(),
            sink,
            inv: Invariants::default(),
            ttft: LogHistogram::default(),
            tpot: LogHistogram::default(),
            e2e: LogHistogram::default(),
            good: 0,
            output_tokens: 0,
            emb_bytes: 0,
            kv_bytes: 0,
            horizon_ns: s.run.horizon_s.map(ns),
        };
        sim.pull_arrival()?;
        Ok(sim)
    }

    fn push(&mut self, at: u64, e: Event) {
        assert!(
            at >= self.now,
            "event scheduled in the past: {at} < {}",
            self.now
        );
        self.events.push(Reverse((at, self.seq, e)));
        self.seq += 1;
    }

    fn pull_arrival(&mut self) -> Result<(), InputError> {
        if let Some(r) = self.source.next_request()? {
            let at = r.arrival_ns.max(self.now);
            self.next_arrival = Some(r);
            self.push(at, Event::Arrival);
        }
        Ok(())
    }

    /// Runs to the end; `progress` is called with the requests done so far, now and then.
    pub fn run(mut self, progress: &mut dyn FnMut(u64)) -> Result<RunResult, Error> {
        let mut stopped_at_horizon = false;
        while let Some(Reverse((at, _, e))) = self.events.pop() {
            if let Some(h) = self.horizon_ns
                && at > h
            {
                stopped_at_horizon = true;
                self.now = h;
                break;
            }
            assert!(at >= self.now, "time ran backwards: {at} < {}", self.now);
            self.now = at;
            match e {
                Event::Arrival => self.arrive()?,
                Event::StepDone(i) => self.step_done(i)?,
                Event::TransferStart(t) => self.transfer_start(t),
                Event::FlowDone(id, version) => self.flow_done(Completion {
                    id,
                    at_ns: at,
                    version,
                })?,
            }
            let done = self.inv.finished + self.inv.dropped;
            if done.is_multiple_of(1024) && done > 0 {
                progress(done);
            }
        }
        // Nothing left to happen: whatever is still in flight is a bug, reported as stalled.
        let reason = if stopped_at_horizon {
            DropReason::Horizon
        } else {
            DropReason::Stalled
        };
        let left: Vec<ReqId> = self.reqs.keys().copied().collect();
        for id in left {
            if !stopped_at_horizon {
                self.inv.stalled += 1;
            }
            self.drop_request(id, reason)?;
        }
        progress(self.inv.finished + self.inv.dropped);
        Ok(self.finish())
    }

    // ---- arrivals and routing ----

    fn arrive(&mut self) -> Result<(), Error> {
        let r = self
            .next_arrival
            .take()
            .expect("an arrival event has its request");
        self.pull_arrival()?;
        self.inv.arrived += 1;
        let model = &self.s.model;
        let mut images = Vec::with_capacity(r.images.len());
        for &(w, h) in &r.images {
            let t = model
                .image_tokens(w as u64, h as u64)
                .map_err(|e| InputError::new(format!("request {}: {}", r.id, e.message())))?;
            images.push(t);
        }
        let visual: u64 = images.iter().map(|t| t.llm_tokens).sum();
        let context = visual + r.prompt_tokens as u64;
        let id = r.id;
        let has_images = !images.is_empty();
        self.reqs.insert(
            id,
            Req {
                r,
                images,
                visual,
                context,
                encoded: !has_images,
                prefill_target: context,
                prefilled: 0,
                generated: 0,
                blocks: 0,
                home: None,
                reserved: 0,
                emb_bytes: 0,
                kv_bytes: 0,
                kv_transfer: None,
                encode_start: None,
                encode_end: None,
                emb_start: None,
                emb_end: None,
                prefill_start: None,
                first_token: None,
                kv_start: None,
                kv_end: None,
                decode_start: None,
                encoder: None,
                prefill_inst: None,
                decode_inst: None,
                preemptions: 0,
                assigned: Vec::new(),
            },
        );
        if has_images && self.s.strategy.has_encoder_pool() {
            let e = self
                .route(Role::Encoder, |_| true)
                .expect("validated: an encoder pool exists");
            self.reqs.get_mut(&id).expect("inserted").encoder = Some(e);
            self.assign(e, id);
            self.inst[e].encode_queue.push_back(id);
            self.try_step(e)?;
        } else {
            self.enter_llm(id)?;
        }
        Ok(())
    }

    /// The pool a request's prefill runs in.
    fn prefill_role(&self) -> Role {
        *self
            .s
            .strategy
            .roles()
            .iter()
            .find(|r| matches!(r, Role::All | Role::Llm | Role::Prefill))
            .expect("every strategy prefills")
    }

    /// Sends a request (encoded, or needing the LLM instance to encode it) to the prefill pool.
    fn enter_llm(&mut self, id: ReqId) -> Result<(), Error> {
        if let Some(reason) = self.inadmissible(id) {
            return self.drop_request(id, reason);
        }
        let role = self.prefill_role();
        let r = &self.reqs[&id];
        let need_tokens = if role == Role::Prefill {
            r.context
        } else {
            r.context + r.r.output_tokens as u64
        };
        let fits = |inst: &Instance| inst.kv.blocks_for(need_tokens) <= inst.kv.total_blocks;
        let Some(i) = self.route(role, fits) else {
            return self.drop_request(id, DropReason::KvCapacity);
        };
        self.assign(i, id);
        self.inst[i].waiting.push_back(id);
        self.try_step(i)?;
        Ok(())
    }

    /// Without chunked prefill a prompt longer than the step's token budget can never be
    /// scheduled; vLLM refuses such a prompt, and so does this engine.
    fn inadmissible(&self, id: ReqId) -> Option<DropReason> {
        let e = &self.s.engine;
        (!e.chunked_prefill && self.reqs[&id].context > e.token_budget)
            .then_some(DropReason::PromptOverTokenBudget)
    }

    /// Picks an instance of `role` among those `ok` accepts. LLM work may also go to a stealing
    /// encoder with no image waiting.
    fn route(&mut self, role: Role, ok: impl Fn(&Instance) -> bool) -> Option<usize> {
        let stealers = self
            .pools
            .get(&Role::Encoder)
            .into_iter()
            .flatten()
            .copied()
            .filter(|e| {
                let x = &self.inst[*e];
                role == Role::Llm && x.steals && x.encode_queue.is_empty()
            });
        let pool: Vec<usize> = self
            .pools
            .get(&role)?
            .iter()
            .copied()
            .chain(stealers)
            .filter(|i| ok(&self.inst[*i]))
            .collect();
        if pool.is_empty() {
            return None;
        }
        Some(match self.s.routing {
            Routing::RoundRobin => {
                let k = self.round_robin.entry(role).or_insert(0);
                let pick = pool[*k % pool.len()];
                *k += 1;
                pick
            }
            Routing::LeastLoaded => *pool
                .iter()
                .min_by_key(|i| (self.inst[**i].load, **i))
                .expect("non-empty"),
        })
    }

    // ---- steps ----

    fn try_step(&mut self, i: usize) -> Result<(), Error> {
        if self.inst[i].step.is_some() {
            return Ok(());
        }
        let x = &self.inst[i];
        if x.role == Role::Encoder && (!x.steals || !x.encode_queue.is_empty()) {
            self.try_encoder_step(i);
            Ok(())
        } else {
            self.try_llm_step(i)
        }
    }

    fn try_encoder_step(&mut self, i: usize) {
        let limit = self.s.engine.encoder_batch_images;
        let mut batch = Vec::new();
        let mut images = Vec::new();
        while let Some(&id) = self.inst[i].encode_queue.front() {
            let n = self.reqs[&id].images.len() as u64;
            // A request's images go in one batch; a request with more than the limit goes alone.
            if !batch.is_empty() && images.len() as u64 + n > limit {
                break;
            }
            self.inst[i].encode_queue.pop_front();
            images.extend(self.reqs[&id].images.iter().copied());
            batch.push(id);
        }
        if batch.is_empty() {
            return;
        }
        let dur = ns(self.inst[i].perf.encode_s(&images));
        for id in &batch {
            self.reqs
                .get_mut(id)
                .expect("queued request is live")
                .encode_start = Some(self.now);
        }
        let end = self.now + dur;
        self.inst[i].images_encoded += images.len() as u64;
        self.inst[i].step = Some(Step {
            start: self.now,
            end,
            encode_end: end,
            encoded: batch,
            chunks: Vec::new(),
            decodes: Vec::new(),
        });
        self.push(end, Event::StepDone(i));
    }

    /// One decode token for every running request (oldest first), growing their KV and
    /// preempting the newest where memory runs out.
    fn compose_decodes(&mut self, i: usize, c: &mut Composition) {
        let (budget, max_batch) = (self.s.engine.token_budget, self.s.engine.max_batch);
        if !self.inst[i].decodes {
            return;
        }
        let mut k = 0;
        while k < self.inst[i].running.len()
            && c.used < budget
            && (c.decodes.len() as u64) < max_batch
        {
            let id = self.inst[i].running[k];
            let r = &self.reqs[&id];
            // This step writes the KV of the last sampled token at position context + generated − 1.
            let tokens = r.context + r.generated;
            let more = self.inst[i].kv.blocks_for(tokens).saturating_sub(r.blocks);
            if more > 0 && !self.take_blocks_preempting(i, id, more) {
                continue; // `id` itself was preempted; the running list shrank under k.
            }
            let r = self.reqs.get_mut(&id).expect("running request is live");
            r.blocks += more;
            c.batch.add_decode(tokens);
            c.decodes.push(id);
            c.used += 1;
            k += 1;
        }
    }

    /// Prefill chunks of waiting requests, first come first served, within the token budget.
    fn compose_prefills(&mut self, i: usize, c: &mut Composition) {
        let (budget, max_batch) = (self.s.engine.token_budget, self.s.engine.max_batch);
        let running = match self.s.engine.schedule {
            Schedule::Mixed => 0,
            Schedule::PrefillFirst => self.inst[i].running.len(),
        };
        for w in 0..self.inst[i].waiting.len() {
            if c.used >= budget || (running + c.decodes.len() + c.chunks.len()) as u64 >= max_batch
            {
                break;
            }
            let id = self.inst[i].waiting[w];
            let r = &self.reqs[&id];
            let remaining = r.prefill_target - r.prefilled;
            let mut chunk = remaining.min(budget - c.used);
            if chunk < remaining && !self.s.engine.chunked_prefill {
                // A recomputation longer than the budget (prompt + tokens generated before
                // preemption) runs whole, alone; anything else waits for a step with room.
                if c.used > 0 || r.generated == 0 {
                    break;
                }
                chunk = remaining;
            }
            let more = self.inst[i]
                .kv
                .blocks_for(r.prefilled + chunk)
                .saturating_sub(r.blocks);
            // First come, first served: a request that cannot get memory takes it from partial
            // prefills that started after it, else blocks those behind it.
            if !self.take_blocks_for_prefill(i, w, more) {
                break;
            }
            let r = &self.reqs[&id];
            if !r.encoded && r.prefilled == 0 {
                debug_assert!(
                    self.inst[i].encodes,
                    "unencoded request reached an instance that cannot encode"
                );
                c.images.extend(r.images.iter().copied());
                c.encoded.push(id);
            }
            c.batch
                .add_prefill_chunk(r.prefilled, chunk, r.prefilled + chunk == r.prefill_target);
            let r = self.reqs.get_mut(&id).expect("waiting request is live");
            r.blocks += more;
            r.home = Some(i);
            c.chunks.push((id, chunk));
            c.used += chunk;
        }
    }

    fn try_llm_step(&mut self, i: usize) -> Result<(), Error> {
        let mut c = Composition::default();
        match self.s.engine.schedule {
            Schedule::Mixed => {
                self.compose_decodes(i, &mut c);
                self.compose_prefills(i, &mut c);
            }
            // vLLM v0 and the project's GPU engine: a step prefills new prompts if any can start
            // (and the batch has room for them), else decodes.
            Schedule::PrefillFirst => {
                if (self.inst[i].running.len() as u64) < self.s.engine.max_batch {
                    self.compose_prefills(i, &mut c);
                }
                if c.chunks.is_empty() {
                    self.compose_decodes(i, &mut c);
                }
            }
        }
        let Composition {
            batch,
            decodes,
            chunks,
            images,
            encoded,
            ..
        } = c;
        if decodes.is_empty() && chunks.is_empty() {
            return Ok(());
        }
        let enc = ns(self.inst[i].perf.encode_s(&images));
        let dur = enc + ns(self.inst[i].perf.forward_s(&batch));
        let (start, end) = (self.now, self.now + dur);
        for id in &encoded {
            let r = self.reqs.get_mut(id).expect("live");
            r.encode_start = Some(start);
            r.encode_end = Some(start + enc);
            r.encoder = Some(i);
        }
        self.inst[i].images_encoded += images.len() as u64;
        for (id, _) in &chunks {
            let r = self.reqs.get_mut(id).expect("live");
            r.prefill_start.get_or_insert(start + enc);
        }
        if self.s.kv_transfer == KvTransferMode::Layerwise && self.inst[i].role == Role::Prefill {
            let finishing: Vec<ReqId> = chunks
                .iter()
                .filter(|(id, c)| {
                    let r = &self.reqs[id];
                    r.prefilled + c == r.prefill_target && r.generated == 0 && r.r.output_tokens > 1
                })
                .map(|(id, _)| *id)
                .collect();
            for id in finishing {
                self.start_kv_handoff(id, i, Some((start + enc, end)))?;
            }
        }
        self.inst[i].step = Some(Step {
            start,
            end,
            encode_end: start + enc,
            encoded,
            chunks,
            decodes,
        });
        self.push(end, Event::StepDone(i));
        Ok(())
    }

    /// Takes `more` blocks for the decoding request `id` on instance `i`, preempting the newest
    /// requests until they fit: partial prefills first, then running requests from the most
    /// recently admitted (recompute, as vLLM). False if `id` itself was preempted.
    fn take_blocks_preempting(&mut self, i: usize, id: ReqId, more: u64) -> bool {
        loop {
            if self.inst[i].kv.try_take(more) {
                return true;
            }
            if let Some(w) = self.newest_partial_prefill(i, 0) {
                self.abandon_partial_prefill(i, w);
                continue;
            }
            let victim = *self.inst[i]
                .running
                .last()
                .expect("the requester is running");
            self.preempt(i, victim);
            if victim == id {
                return false;
            }
        }
    }

    /// Takes `more` blocks for the prefill chunk of `waiting[w]`, abandoning partial prefills
    /// queued behind it if need be.
    fn take_blocks_for_prefill(&mut self, i: usize, w: usize, more: u64) -> bool {
        loop {
            if self.inst[i].kv.try_take(more) {
                return true;
            }
            match self.newest_partial_prefill(i, w + 1) {
                Some(v) => self.abandon_partial_prefill(i, v),
                None => return false,
            }
        }
    }

    /// Index in `waiting` (at or after `from`) of the newest request holding KV blocks.
    fn newest_partial_prefill(&self, i: usize, from: usize) -> Option<usize> {
        let waiting = &self.inst[i].waiting;
        (from..waiting.len())
            .rev()
            .find(|&w| self.reqs[&waiting[w]].blocks > 0)
    }

    /// Frees a partial prefill's blocks; it starts over when its turn comes again.
    fn abandon_partial_prefill(&mut self, i: usize, w: usize) {
        let id = self.inst[i].waiting[w];
        let r = self.reqs.get_mut(&id).expect("waiting request is live");
        self.inst[i].kv.give_back(r.blocks);
        self.inst[i].preemptions += 1;
        r.blocks = 0;
        r.prefilled = 0;
        r.preemptions += 1;
    }

    fn preempt(&mut self, i: usize, id: ReqId) {
        let inst = &mut self.inst[i];
        let pos = inst
            .running
            .iter()
            .rposition(|x| *x == id)
            .expect("preempting a running request");
        inst.running.remove(pos);
        inst.preemptions += 1;
        let r = self.reqs.get_mut(&id).expect("live");
        inst.kv.give_back(r.blocks);
        r.blocks = 0;
        r.preemptions += 1;
        // Recompute the prompt and the tokens generated so far; the images stay encoded (cached).
        r.prefill_target = r.context + r.generated;
        r.prefilled = 0;
        inst.waiting.push_front(id);
    }

    fn step_done(&mut self, i: usize) -> Result<(), Error> {
        let step = self.inst[i]
            .step
            .take()
            .expect("a step-done event has its step");
        self.inst[i].busy_ns += step.end - step.start;
        self.inst[i].steps += 1;
        // An encoder's own step (a stealing encoder also runs LLM steps, which have tokens).
        if self.inst[i].role == Role::Encoder && step.chunks.is_empty() && step.decodes.is_empty() {
            for id in step.encoded {
                self.encoded_elsewhere(i, id, step.encode_end)?;
            }
            self.try_step(i)?;
            return Ok(());
        }
        for id in &step.encoded {
            self.reqs.get_mut(id).expect("live").encoded = true;
        }
        let mut completed = Vec::new();
        for (id, chunk) in step.chunks {
            self.inst[i].prefill_tokens += chunk;
            let r = self.reqs.get_mut(&id).expect("live");
            r.prefilled += chunk;
            if r.prefilled == r.prefill_target {
                completed.push(id);
            }
        }
        self.inst[i].waiting.retain(|id| !completed.contains(id));
        for id in completed {
            let r = self.reqs.get_mut(&id).expect("live");
            if r.generated == 0 {
                r.generated = 1;
                r.first_token = Some(self.now);
                r.prefill_inst = Some(i);
            }
            if r.generated >= r.r.output_tokens as u64 {
                self.finish_request(i, id)?;
            } else if self.inst[i].decodes {
                r.decode_start.get_or_insert(self.now);
                r.decode_inst = Some(i);
                self.inst[i].running.push(id);
            } else {
                match r.kv_transfer {
                    Some(t) => self.lift_cap(t),
                    None => self.start_kv_handoff(id, i, None)?,
                }
            }
        }
        for id in step.decodes {
            self.inst[i].decode_tokens += 1;
            let r = self.reqs.get_mut(&id).expect("live");
            r.generated += 1;
            if r.generated >= r.r.output_tokens as u64 {
                let pos = self.inst[i]
                    .running
                    .iter()
                    .position(|x| *x == id)
                    .expect("decoding request is running");
                self.inst[i].running.remove(pos);
                self.finish_request(i, id)?;
            }
        }
        // Freed blocks may let a queued KV transfer in.
        if self.inst[i].role == Role::Decode {
            self.admit_incoming(i);
        }
        self.try_step(i)?;
        Ok(())
    }

    fn assign(&mut self, i: usize, id: ReqId) {
        self.inst[i].load += 1;
        self.reqs.get_mut(&id).expect("live").assigned.push(i);
    }

    fn release(&mut self, i: usize, id: ReqId) {
        let r = self.reqs.get_mut(&id).expect("live");
        let pos = r
            .assigned
            .iter()
            .position(|x| *x == i)
            .expect("released where assigned");
        r.assigned.remove(pos);
        self.inst[i].load -= 1;
    }

    /// An encoder instance finished a request's images: ship the embeddings to the LLM side.
    fn encoded_elsewhere(&mut self, e: usize, id: ReqId, at: u64) -> Result<(), Error> {
        self.release(e, id);
        let role = self.prefill_role();
        let r = self.reqs.get_mut(&id).expect("live");
        r.encode_end = Some(at);
        r.encoded = true;
        if let Some(reason) = self.inadmissible(id) {
            return self.drop_request(id, reason);
        }
        let r = &self.reqs[&id];
        let need = if role == Role::Prefill {
            r.context
        } else {
            r.context + r.r.output_tokens as u64
        };
        let Some(dst) = self.route(role, |inst| {
            inst.kv.blocks_for(need) <= inst.kv.total_blocks
        }) else {
            return self.drop_request(id, DropReason::KvCapacity);
        };
        self.assign(dst, id);
        if dst == e {
            // A stealing encoder keeps the request: the embeddings are already here.
            self.inst[e].waiting.push_back(id);
            return Ok(());
        }
        let bytes = self.s.model.emb_bytes(self.reqs[&id].visual, self.s.dtype);
        self.start_transfer(Kind::Embedding, id, e, dst, bytes, None);
        Ok(())
    }

    // ---- KV handoff (stage-level) ----

    /// Chooses a decode instance and queues the request's KV for it; with `layerwise`, the
    /// transfer may start now, capped by the running prefill step (start, end).
    fn start_kv_handoff(
        &mut self,
        id: ReqId,
        src: usize,
        layerwise: Option<(u64, u64)>,
    ) -> Result<(), Error> {
        let r = &self.reqs[&id];
        let need = r.context + r.r.output_tokens as u64;
        let dst = match r.decode_inst {
            Some(d) => d,
            None => {
                let Some(d) = self.route(Role::Decode, |inst| {
                    inst.kv.blocks_for(need) <= inst.kv.total_blocks
                }) else {
                    // No decode instance can ever hold it. Drop it once prefill is over.
                    if layerwise.is_none() {
                        self.drop_request(id, DropReason::KvCapacity)?;
                    }
                    return Ok(());
                };
                self.assign(d, id);
                self.reqs.get_mut(&id).expect("live").decode_inst = Some(d);
                d
            }
        };
        if layerwise.is_some() {
            // Stream only if room is there now and nobody queues ahead; else ship after prefill.
            let blocks = self.inst[dst].kv.blocks_for(self.reqs[&id].context);
            if self.inst[dst].incoming.is_empty() && self.inst[dst].kv.try_take(blocks) {
                self.reqs.get_mut(&id).expect("live").reserved = blocks;
                let bytes = self
                    .s
                    .model
                    .llm
                    .kv_bytes(self.reqs[&id].context, self.s.dtype);
                let t = self.start_transfer(Kind::Kv, id, src, dst, bytes, layerwise);
                self.reqs.get_mut(&id).expect("live").kv_transfer = Some(t);
            }
            return Ok(());
        }
        self.inst[dst].incoming.push_back(id);
        self.admit_incoming(dst);
        Ok(())
    }

    fn admit_incoming(&mut self, d: usize) {
        while let Some(&id) = self.inst[d].incoming.front() {
            let blocks = self.inst[d].kv.blocks_for(self.reqs[&id].context);
            if !self.inst[d].kv.try_take(blocks) {
                break;
            }
            self.inst[d].incoming.pop_front();
            let src = self.reqs[&id]
                .home
                .expect("KV lives at its prefill instance");
            self.reqs.get_mut(&id).expect("live").reserved = blocks;
            let bytes = self
                .s
                .model
                .llm
                .kv_bytes(self.reqs[&id].context, self.s.dtype);
            let t = self.start_transfer(Kind::Kv, id, src, d, bytes, None);
            self.reqs.get_mut(&id).expect("live").kv_transfer = Some(t);
        }
    }

    // ---- transfers ----

    fn start_transfer(
        &mut self,
        kind: Kind,
        req: ReqId,
        src: usize,
        dst: usize,
        bytes: u64,
        producer: Option<(u64, u64)>,
    ) -> usize {
        let c = &self.s.cluster;
        let (a, b) = (&c.instances[src], &c.instances[dst]);
        // Embeddings leave from the encoder's first GPU; KV shards leave from every TP rank.
        let pairs: Vec<(usize, usize)> = match kind {
            Kind::Embedding => vec![(a.gpus[0], b.gpus[0])],
            Kind::Kv => a
                .gpus
                .iter()
                .enumerate()
                .map(|(k, g)| (*g, b.gpus[k % b.gpus.len()]))
                .collect(),
        };
        let n = pairs.len() as u64;
        let mut planned = Vec::new();
        let mut startup: f64 = 0.0;
        let mut link = c.nodes[a.node].fabric.name;
        for (k, (ga, gb)) in pairs.into_iter().enumerate() {
            let share = bytes / n + u64::from((k as u64) < bytes % n);
            let route = c.route(ga, gb, share).expect("instances own distinct GPUs");
            startup = startup.max(route.startup_s);
            link = route.link.name;
            planned.push(PlannedFlow {
                ports: route.ports,
                bytes: share,
            });
        }
        let t = Transfer {
            req,
            kind,
            src,
            dst,
            bytes,
            link,
            flows_left: planned.len(),
            planned,
            flows: Vec::new(),
            ready_ns: self.now,
            start_ns: self.now,
            produced_by_ns: producer,
        };
        let tid = match self.free_transfers.pop() {
            Some(k) => {
                self.transfers[k] = Some(t);
                k
            }
            None => {
                self.transfers.push(Some(t));
                self.transfers.len() - 1
            }
        };
        let r = self.reqs.get_mut(&req).expect("live");
        match kind {
            Kind::Embedding => r.emb_start = Some(self.now),
            Kind::Kv => r.kv_start = Some(self.now),
        }
        self.push(self.now + ns(startup), Event::TransferStart(tid));
        tid
    }

    fn transfer_start(&mut self, tid: usize) {
        let t = self.transfers[tid].as_mut().expect("live transfer");
        let planned = std::mem::take(&mut t.planned);
        // Layerwise: the data cannot leave faster than the prefill step produces it.
        let cap_for = |bytes: u64, now: u64, producer: Option<(u64, u64)>| match producer {
            Some((_, end)) if end > now => Some(bytes as f64 / secs(end - now).max(1e-9)),
            _ => None,
        };
        let producer = t.produced_by_ns;
        let mut comps = Vec::new();
        let mut ids = Vec::new();
        for f in planned {
            let (id, c) = self.net.start(
                self.now,
                f.ports,
                f.bytes,
                cap_for(f.bytes, self.now, producer),
            );
            ids.push(id);
            comps = c;
        }
        for id in &ids {
            if self.flow_owner.len() <= *id {
                self.flow_owner.resize(id + 1, None);
            }
            self.flow_owner[*id] = Some(tid);
        }
        self.transfers[tid].as_mut().expect("live").flows = ids;
        self.schedule(comps);
    }

    fn schedule(&mut self, comps: Vec<Completion>) {
        for c in comps {
            self.push(c.at_ns, Event::FlowDone(c.id, c.version));
        }
    }

    /// The prefill step that produces a layerwise transfer ended: the rest may go at full speed.
    fn lift_cap(&mut self, tid: usize) {
        let t = self.transfers[tid].as_mut().expect("live transfer");
        t.produced_by_ns = None;
        let flows = t.flows.clone();
        for f in flows {
            let comps = self.net.set_cap(self.now, f, None);
            self.schedule(comps);
        }
    }

    fn flow_done(&mut self, c: Completion) -> Result<(), Error> {
        if !self.net.is_current(&c) {
            return Ok(());
        }
        let (_, comps) = self.net.complete(self.now, c.id);
        self.schedule(comps);
        let tid = self.flow_owner[c.id]
            .take()
            .expect("every flow belongs to a transfer");
        let t = self.transfers[tid].as_mut().expect("live transfer");
        t.flows_left -= 1;
        if t.flows_left > 0 {
            return Ok(());
        }
        let t = self.transfers[tid].take().expect("live transfer");
        self.free_transfers.push(tid);
        // A layerwise flow can finish before its prefill step ends only if the cap was lifted; the
        // request's first token is still given by the step.
        self.sink.transfer(&TransferRecord {
            scenario: self.s.name.clone(),
            request_id: t.req,
            kind: match t.kind {
                Kind::Embedding => TransferKind::Embedding,
                Kind::Kv => TransferKind::Kv,
            },
            src_instance: t.src as u64,
            dst_instance: t.dst as u64,
            link: t.link,
            bytes: t.bytes,
            flows: t.flows.len() as u64,
            ready_s: secs(t.ready_ns),
            start_s: secs(t.start_ns),
            end_s: secs(self.now),
            source: Source::Sim,
        })?;
        match t.kind {
            Kind::Embedding => {
                self.emb_bytes += t.bytes;
                let r = self.reqs.get_mut(&t.req).expect("live");
                r.emb_end = Some(self.now);
                r.emb_bytes += t.bytes;
                self.inst[t.dst].waiting.push_back(t.req);
                self.try_step(t.dst)?;
            }
            Kind::Kv => {
                self.kv_bytes += t.bytes;
                let r = self.reqs.get_mut(&t.req).expect("live");
                r.kv_end = Some(self.now);
                r.kv_bytes += t.bytes;
                r.kv_transfer = None;
                if r.first_token.is_none() {
                    // Layerwise stream outran its step (cannot, with the cap): keep the order honest.
                    return Err(Error::Internal(format!(
                        "KV of request {} arrived before its prefill ended (now {} start {:?} kv {:?} producer {:?} {}/{})",
                        t.req,
                        self.now,
                        r.prefill_start,
                        r.kv_start,
                        t.produced_by_ns,
                        r.prefilled,
                        r.prefill_target
                    )));
                }
                let src = r.home.expect("KV lived at the prefill instance");
                self.inst[src].kv.give_back(r.blocks);
                r.blocks = r.reserved;
                r.reserved = 0;
                r.home = Some(t.dst);
                r.decode_start = Some(self.now);
                self.release(src, t.req);
                self.inst[t.dst].running.push(t.req);
                self.try_step(t.dst)?;
                self.try_step(src)?;
            }
        }
        Ok(())
    }

    // ---- ends ----

    fn finish_request(&mut self, i: usize, id: ReqId) -> Result<(), Error> {
        let mut r = self.reqs.remove(&id).expect("live");
        self.inst[i].kv.give_back(r.blocks);
        r.blocks = 0;
        for a in r.assigned.drain(..) {
            self.inst[a].load -= 1;
        }
        self.inv.finished += 1;
        let arrival = r.r.arrival_ns;
        let first = r
            .first_token
            .expect("a finished request has its first token");
        let ttft = secs(first - arrival);
        let e2e = secs(self.now - arrival);
        let out = r.r.output_tokens as u64;
        let tpot = (out > 1).then(|| secs(self.now - first) / (out - 1) as f64);
        self.ttft.record(ttft);
        self.e2e.record(e2e);
        if let Some(t) = tpot {
            self.tpot.record(t);
        }
        if ttft <= self.s.slo.ttft_s && tpot.is_none_or(|t| t <= self.s.slo.tpot_s) {
            self.good += 1;
        }
        self.output_tokens += out;
        self.emit(&r, RequestStatus::Finished, Some((ttft, tpot, e2e)))
    }

    fn drop_request(&mut self, id: ReqId, reason: DropReason) -> Result<(), Error> {
        let r = self.reqs.remove(&id).expect("live");
        for &a in &r.assigned {
            self.inst[a].load -= 1;
        }
        if let Some(h) = r.home {
            self.inst[h].kv.give_back(r.blocks);
        }
        if let (Some(d), true) = (r.decode_inst, r.reserved > 0) {
            self.inst[d].kv.give_back(r.reserved);
        }
        self.inv.dropped += 1;
        self.emit(&r, RequestStatus::Dropped(reason), None)
    }

    fn emit(
        &mut self,
        r: &Req,
        status: RequestStatus,
        lat: Option<(f64, Option<f64>, f64)>,
    ) -> Result<(), Error> {
        let o = |t: Option<u64>| t.map(secs);
        let rec = RequestRecord {
            scenario: self.s.name.clone(),
            strategy: self.s.strategy,
            request_id: r.r.id,
            status,
            arrival_s: secs(r.r.arrival_ns),
            n_images: r.images.len() as u64,
            visual_tokens: r.visual,
            prompt_tokens: r.r.prompt_tokens as u64,
            output_tokens: r.r.output_tokens as u64,
            emb_bytes: r.emb_bytes,
            kv_bytes: r.kv_bytes,
            ttft_s: lat.map(|l| l.0),
            tpot_s: lat.and_then(|l| l.1),
            e2e_s: lat.map(|l| l.2),
            encode_start_s: o(r.encode_start),
            encode_end_s: o(r.encode_end),
            emb_transfer_start_s: o(r.emb_start),
            emb_transfer_end_s: o(r.emb_end),
            prefill_start_s: o(r.prefill_start),
            prefill_end_s: o(r.first_token),
            kv_transfer_start_s: o(r.kv_start),
            kv_transfer_end_s: o(r.kv_end),
            decode_start_s: o(r.decode_start),
            finish_s: lat.map(|_| secs(self.now)),
            encoder_instance: r.encoder.map(|x| x as u64),
            prefill_instance: r.prefill_inst.map(|x| x as u64),
            decode_instance: r.decode_inst.map(|x| x as u64),
            preemptions: r.preemptions,
            source: Source::Sim,
        };
        self.sink.request(&rec)
    }

    fn finish(self) -> RunResult {
        let s = self.s;
        let duration_ns = self.now.max(1);
        let duration = secs(duration_ns);
        let mut inv = self.inv.clone();
        inv.bytes_sent = self.net.bytes_sent;
        inv.bytes_received = self.net.bytes_received;
        let mut instances = Vec::new();
        let mut usd_per_s_total = 0.0;
        for (i, (x, spec)) in self.inst.iter().zip(&s.cluster.instances).enumerate() {
            let usd_per_s: f64 = spec
                .gpus
                .iter()
                .map(|g| {
                    s.pricing
                        .usd_per_second(spec.gpu, s.cluster.on_nvlink(*g))
                        .expect("prices checked by the experiment")
                })
                .sum();
            if x.kv.total_blocks > 0 {
                inv.peak_kv_fraction = inv
                    .peak_kv_fraction
                    .max(x.kv.peak_used as f64 / x.kv.total_blocks as f64);
            }
            instances.push(InstanceRecord {
                scenario: s.name.clone(),
                instance_id: i as u64,
                role: x.role.name(),
                gpu: spec.gpu.name,
                tp: spec.tp(),
                node: s.cluster.nodes[spec.node].name.clone(),
                busy_s: secs(x.busy_ns),
                utilization: x.busy_ns as f64 / duration_ns as f64,
                steps: x.steps,
                images_encoded: x.images_encoded,
                prefill_tokens: x.prefill_tokens,
                decode_tokens: x.decode_tokens,
                kv_capacity_tokens: x.kv.total_blocks * x.kv.block_tokens,
                peak_kv_tokens: x.kv.peak_used * x.kv.block_tokens,
                preemptions: x.preemptions,
                weight_gib_per_gpu: s.memory[i].weight_bytes / (1u64 << 30) as f64,
                cost_usd: usd_per_s * duration,
                source: Source::Sim,
            });
        }
        // Every GPU of the cluster is paid for, used by an instance or not.
        usd_per_s_total += s
            .cluster
            .usd_per_second(&s.pricing)
            .expect("prices checked by the experiment");
        let links: Vec<LinkRecord> = s
            .cluster
            .ports
            .iter()
            .zip(&self.net.usage)
            .filter(|(_, u)| u.bytes > 0)
            .map(|(p, u)| LinkRecord {
                scenario: s.name.clone(),
                port: p.name.clone(),
                link: p.link.name,
                bytes: u.bytes,
                busy_s: secs(u.busy_ns),
                utilization: u.bytes as f64 / (p.bytes_per_s * duration),
                source: Source::Sim,
            })
            .collect();
        let busiest = links.iter().max_by(|a, b| {
            a.utilization
                .total_cmp(&b.utilization)
                .then(b.port.cmp(&a.port))
        });
        let cost = usd_per_s_total * duration;
        let q = |h: &LogHistogram, p: f64| h.quantile(p);
        let summary = SummaryRecord {
            scenario: s.name.clone(),
            strategy: s.strategy,
            model: s.model.name.clone(),
            gpus: gpu_mix(s),
            gpu_count: s.cluster.gpus.len() as u64,
            rate_rps: s.workload.arrival.as_ref().map(|a| a.rate()),
            seed: s.seed,
            requests: inv.arrived,
            finished: inv.finished,
            dropped: inv.dropped,
            duration_s: duration,
            throughput_rps: inv.finished as f64 / duration,
            output_tokens: self.output_tokens,
            output_tokens_per_s: self.output_tokens as f64 / duration,
            goodput_rps: self.good as f64 / duration,
            slo_attainment: if inv.arrived > 0 {
                self.good as f64 / inv.arrived as f64
            } else {
                0.0
            },
            slo_ttft_s: s.slo.ttft_s,
            slo_tpot_s: s.slo.tpot_s,
            ttft_p50_s: q(&self.ttft, 0.5),
            ttft_p90_s: q(&self.ttft, 0.9),
            ttft_p99_s: q(&self.ttft, 0.99),
            tpot_p50_s: q(&self.tpot, 0.5),
            tpot_p90_s: q(&self.tpot, 0.9),
            tpot_p99_s: q(&self.tpot, 0.99),
            e2e_p50_s: q(&self.e2e, 0.5),
            e2e_p90_s: q(&self.e2e, 0.9),
            e2e_p99_s: q(&self.e2e, 0.99),
            emb_bytes: self.emb_bytes,
            kv_bytes: self.kv_bytes,
            bytes_sent: inv.bytes_sent,
            bytes_received: inv.bytes_received,
            busiest_link: busiest.map(|l| l.port.clone()),
            busiest_link_utilization: busiest.map_or(0.0, |l| l.utilization),
            pricing: match s.pricing.mode {
                crate::cost::PricingMode::Capex => "capex",
                crate::cost::PricingMode::Rental => "rental",
            },
            usd_per_hour: usd_per_s_total * 3600.0,
            cost_usd: cost,
            tokens_per_dollar: if cost > 0.0 {
                self.output_tokens as f64 / cost
            } else {
                0.0
            },
            source: Source::Sim,
        };
        RunResult {
            summary,
            instances,
            links,
            invariants: inv,
        }
    }
}

/// "2×RTX-4090 + 2×A100-PCIe-80GB", in cluster order.
pub fn gpu_mix(s: &Scenario) -> String {
    let mut mix: Vec<(&str, u64)> = Vec::new();
    for g in &s.cluster.gpus {
        match mix.iter_mut().find(|(n, _)| *n == g.spec.name) {
            Some((_, c)) => *c += 1,
            None => mix.push((g.spec.name, 1)),
        }
    }
    mix.iter()
        .map(|(n, c)| format!("{c}×{n}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Simulates one scenario, streaming rows into `sink`.
pub fn simulate(
    s: &Scenario,
    sink: &mut dyn RecordSink,
    progress: &mut dyn FnMut(u64),
) -> Result<RunResult, Error> {
    Simulation::new(s, sink)?.run(progress)
}
