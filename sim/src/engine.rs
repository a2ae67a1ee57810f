//! The discrete-event engine: requests flow through encoder, prefill and decode instances and
//! across links, on an integer-nanosecond clock.
//!
//! The loop pops an event, asks the instance's `Scheduler` for the next step or the `Network`
//! for new completion times, carries the decision out (times it with the instance's
//! `PhaseModel`, schedules its end), and hands what happened to `accounting`, which writes rows.
//! Routing, KV handoff between instances and transfers live here.
//!
//! Determinism: one event queue ordered by (time, sequence number), a seeded workload, and no
//! iteration over hashed containers. Invariants (time never runs backwards, KV in use never over
//! capacity, bytes sent = bytes received, every request finished or reported dropped) are
//! asserted as the run goes and reported in `Invariants` for tests.

mod accounting;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::cluster::Role;
use crate::error::{Error, InputError};
use crate::experiment::{KvTransferMode, Routing, Scenario};
use crate::interference::{Interference, Phase};
use crate::kv::KvPool;
use crate::network::{Completion, FlowId, Network};
use crate::perf::{ComputeDuty, PhaseModel, Work};
use crate::records::{DropReason, RecordSink};
use crate::scheduler::{Next, ReqId, Scheduler, Sequence, Sequences, StepPlan};
use crate::timeline::StepSpan;
use crate::workload::{Request, RequestSource};
use accounting::Accounting;
pub use accounting::{Invariants, RunResult};

/// Nanoseconds of a duration, at most `MAX_SIM_NS` (so `now + ns(…)` cannot overflow; a run
/// that passes `MAX_SIM_NS` is refused in `run`).
fn ns(seconds: f64) -> u64 {
    (seconds * 1e9).ceil().clamp(0.0, MAX_SIM_NS as f64) as u64
}

/// `bounds::MAX_SIM_SECONDS` on the nanosecond clock.
pub const MAX_SIM_NS: u64 = (crate::bounds::MAX_SIM_SECONDS * 1e9) as u64;

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
    /// Layerwise KV: the prefill step still producing the data; until it ends flows are capped.
    producer: Option<Producer>,
}

/// A step that produces a layerwise KV transfer's bytes as it runs, one layer at a time.
#[derive(Debug, Clone, Copy)]
struct Producer {
    /// The step's forward pass: the first layer starts at `start_ns`, the last ends at `end_ns`.
    start_ns: u64,
    end_ns: u64,
    layers: u64,
}

impl Producer {
    /// The first layer's KV exists: the transfer's first bytes can leave.
    fn first_layer_ns(&self) -> u64 {
        self.start_ns + (self.end_ns - self.start_ns).div_ceil(self.layers.max(1))
    }

    /// While the step runs a flow of `bytes` cannot leave faster than its layers appear; a
    /// transfer that starts after the first layer then trails production by one layer, and the
    /// last layer's share goes at full speed once the step ends.
    fn cap_bytes_per_s(&self, bytes: u64, now: u64) -> Option<f64> {
        (self.end_ns > now).then(|| bytes as f64 / secs(self.end_ns - self.start_ns).max(1e-9))
    }
}

/// A request in flight, as the event loop sees it (what the scheduler decides on is its
/// `Sequence`): where it is, what it shipped, and when each stage happened.
struct Req {
    r: Request,
    visual: u64,
    /// The instance holding the request's KV blocks.
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
    /// The request's latest token (its ITL counts from here).
    last_token: Option<u64>,
    encoder: Option<usize>,
    prefill_inst: Option<usize>,
    decode_inst: Option<usize>,
    /// Instances whose load counts this request (least-loaded routing).
    assigned: Vec<usize>,
}

/// A step in progress.
struct Step {
    start: u64,
    end: u64,
    encode_end: u64,
    plan: StepPlan,
    /// FLOPs and HBM bytes per GPU.
    work: Work,
    /// Share of the instance's batch the step fills: sequences of `max_batch`, or images of
    /// `encoder_batch_images` for an encoder's own step.
    occupancy: f64,
}

struct Instance {
    role: Role,
    perf: Box<dyn PhaseModel>,
    sched: Scheduler,
    /// An encoder that serves LLM requests when no image waits (work stealing).
    steals: bool,
    step: Option<Step>,
    /// Requests waiting for KV room here before their KV is shipped (decode instances).
    incoming: VecDeque<ReqId>,
    /// Requests routed here and not yet gone (least-loaded routing).
    load: u64,
    /// Recent share of time in compute-bound steps: the GPU's power state.
    duty: ComputeDuty,
    /// Instances on other partitions of this instance's GPU, and how much their load slows this
    /// one's steps (`interference`; empty off a partition or without a measurement).
    siblings: Vec<usize>,
    interference: Interference,
}

impl Instance {
    fn is_idle(&self) -> bool {
        self.step.is_none() && self.sched.is_idle() && self.incoming.is_empty()
    }
}

pub struct Simulation<'a> {
    s: &'a Scenario,
    now: u64,
    event_seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    source: RequestSource,
    next_arrival: Option<Request>,
    reqs: BTreeMap<ReqId, Req>,
    /// The scheduler's state of the same requests as `reqs`.
    seqs: Sequences,
    inst: Vec<Instance>,
    pools: BTreeMap<Role, Vec<usize>>,
    round_robin: BTreeMap<Role, usize>,
    net: Network,
    transfers: Vec<Option<Transfer>>,
    free_transfers: Vec<usize>,
    flow_owner: Vec<Option<usize>>,
    acc: Accounting<'a>,
    horizon_ns: Option<u64>,
}

impl<'a> Simulation<'a> {
    pub fn new(
        s: &'a Scenario,
        sink: &'a mut dyn RecordSink,
    ) -> Result<Simulation<'a>, InputError> {
        let mut inst = Vec::new();
        let mut pools: BTreeMap<Role, Vec<usize>> = BTreeMap::new();
        let mut siblings = crate::interference::siblings(s).into_iter();
        for (i, spec) in s.cluster.instances.iter().enumerate() {
            let perf = s.phase_model(i);
            let encodes = match spec.role {
                Role::Encoder | Role::All => true,
                Role::Prefill => !s.strategy.has_encoder_pool(),
                Role::Llm | Role::Decode => false,
            };
            let decodes = matches!(spec.role, Role::All | Role::Llm | Role::Decode)
                || (spec.role == Role::Encoder && s.work_stealing);
            let kv = KvPool::new(s.engine.block_tokens, s.memory[i].kv_blocks);
            inst.push(Instance {
                role: spec.role,
                perf,
                sched: Scheduler::new(kv, encodes, decodes),
                steals: spec.role == Role::Encoder && s.work_stealing,
                step: None,
                incoming: VecDeque::new(),
                load: 0,
                duty: ComputeDuty::default(),
                siblings: siblings.next().unwrap_or_default(),
                interference: crate::interference::of_instance(s, i),
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
            event_seq: 0,
            events: BinaryHeap::new(),
            source: s.workload.requests(s.seed)?,
            next_arrival: None,
            reqs: BTreeMap::new(),
            seqs: Sequences::new(),
            inst,
            pools,
            round_robin: BTreeMap::new(),
            net,
            transfers: Vec::new(),
            free_transfers: Vec::new(),
            flow_owner: Vec::new(),
            acc: Accounting::new(s, sink),
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
        self.events.push(Reverse((at, self.event_seq, e)));
        self.event_seq += 1;
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
            if at > MAX_SIM_NS {
                return Err(InputError::new(format!(
                    "{}: the simulated clock passed {} s (a step or transfer of days: check the profile's bandwidths and the workload's sizes, or set `run.horizon_s`)",
                    self.s.name,
                    crate::bounds::Num(crate::bounds::MAX_SIM_SECONDS)
                ))
                .into());
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
            let done = self.acc.done();
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
                self.acc.inv.stalled += 1;
            }
            self.drop_request(id, reason)?;
        }
        if stopped_at_horizon {
            self.drop_after_horizon()?;
        }
        progress(self.acc.done());
        Ok(self.acc.finish(self.now, &self.inst, &self.net))
    }

    // ---- arrivals and routing ----

    fn arrive(&mut self) -> Result<(), Error> {
        let r = self
            .next_arrival
            .take()
            .expect("an arrival event has its request");
        self.pull_arrival()?;
        let (id, has_images) = self.admit(r)?;
        if has_images && self.s.strategy.has_encoder_pool() {
            let e = self
                .route(Role::Encoder, |_| true)
                .expect("validated: an encoder pool exists");
            self.reqs.get_mut(&id).expect("inserted").encoder = Some(e);
            self.assign(e, id);
            self.inst[e].sched.encode_queue.push_back(id);
            self.try_step(e)?;
        } else {
            self.enter_llm(id)?;
        }
        Ok(())
    }

    /// The workload's requests after the horizon: each is reported `dropped:horizon`, so the
    /// tables hold every request the workload asked for (docs/experiment.md `run`).
    fn drop_after_horizon(&mut self) -> Result<(), Error> {
        while let Some(r) = self.next_arrival.take() {
            self.next_arrival = self.source.next_request()?;
            let (id, _) = self.admit(r)?;
            self.drop_request(id, DropReason::Horizon)?;
        }
        Ok(())
    }

    /// Counts an arrived request and gives it its sequence and bookkeeping, not yet routed.
    fn admit(&mut self, r: Request) -> Result<(ReqId, bool), Error> {
        self.acc.inv.arrived += 1;
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
        self.seqs.insert(
            id,
            Sequence::with_images(context, r.output_tokens as u64, images),
        );
        self.reqs.insert(
            id,
            Req {
                r,
                visual,
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
                last_token: None,
                encoder: None,
                prefill_inst: None,
                decode_inst: None,
                assigned: Vec::new(),
            },
        );
        Ok((id, has_images))
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

    /// Tokens of KV a request needs where it prefills: its context, and its output too where it
    /// also decodes.
    fn prefill_kv_tokens(&self, id: ReqId) -> u64 {
        let s = &self.seqs[&id];
        if self.prefill_role() == Role::Prefill {
            s.context
        } else {
            s.context + s.output_tokens
        }
    }

    /// Sends a request (encoded, or needing the LLM instance to encode it) to the prefill pool.
    fn enter_llm(&mut self, id: ReqId) -> Result<(), Error> {
        if let Some(reason) = self.inadmissible(id) {
            return self.drop_request(id, reason);
        }
        let need = self.prefill_kv_tokens(id);
        let fits = |inst: &Instance| inst.sched.kv.blocks_for(need) <= inst.sched.kv.total_blocks;
        let Some(i) = self.route(self.prefill_role(), fits) else {
            return self.drop_request(id, DropReason::KvCapacity);
        };
        self.assign(i, id);
        self.inst[i].sched.admit(id);
        self.try_step(i)?;
        Ok(())
    }

    /// Without chunked prefill a prompt longer than the step's token budget can never be
    /// scheduled; vLLM refuses such a prompt, and so does this engine.
    fn inadmissible(&self, id: ReqId) -> Option<DropReason> {
        let e = &self.s.engine;
        (!e.chunked_prefill && self.seqs[&id].context > e.token_budget)
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
                role == Role::Llm && x.steals && x.sched.encode_queue.is_empty()
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
        let x = &self.inst[i];
        if x.step.is_some() {
            return Ok(());
        }
        if x.role == Role::Encoder && (!x.steals || !x.sched.encode_queue.is_empty()) {
            self.try_encoder_step(i);
            Ok(())
        } else {
            self.try_llm_step(i)
        }
    }

    fn try_encoder_step(&mut self, i: usize) {
        let limit = self.s.engine.encoder_batch_images;
        let Some(plan) = self.inst[i].sched.plan_encode(&self.seqs, limit) else {
            return;
        };
        let work = self.inst[i].perf.encode_work(&plan.images);
        let slowdown = self.sustained_slowdown(i, true, work.seconds);
        let work = self.beside_siblings(i, Phase::Encode, work * slowdown);
        let end = self.now + ns(work.seconds);
        for id in &plan.encode {
            self.reqs
                .get_mut(id)
                .expect("queued request is live")
                .encode_start = Some(self.now);
        }
        let occupancy = plan.images.len() as f64 / limit as f64;
        self.start_step(i, end, end, plan, work, occupancy);
    }

    fn try_llm_step(&mut self, i: usize) -> Result<(), Error> {
        let plan = self.inst[i].sched.plan_step(&mut self.seqs, &self.s.engine);
        self.acc.tally[i].preemptions += plan.preemptions();
        if plan.is_empty() {
            return Ok(());
        }
        let compute = !plan.images.is_empty() || plan.batch.prefill_tokens > 0;
        let perf = &self.inst[i].perf;
        let (enc_work, fwd_work) = (
            perf.encode_work(&plan.images),
            perf.forward_after_encode_work(&plan.images, &plan.batch),
        );
        let slowdown = self.sustained_slowdown(i, compute, enc_work.seconds + fwd_work.seconds);
        let forward = Phase::of_forward(plan.batch.prefill_tokens);
        let (enc_work, fwd_work) = (
            self.beside_siblings(i, Phase::Encode, enc_work * slowdown),
            self.beside_siblings(i, forward, fwd_work * slowdown),
        );
        let enc = ns(enc_work.seconds);
        let dur = enc + ns(fwd_work.seconds);
        let (start, end) = (self.now, self.now + dur);
        for id in &plan.encode {
            let r = self.reqs.get_mut(id).expect("live");
            r.encode_start = Some(start);
            r.encode_end = Some(start + enc);
            r.encoder = Some(i);
        }
        for (id, _) in &plan.prefill_chunks {
            let r = self.reqs.get_mut(id).expect("live");
            r.prefill_start.get_or_insert(start + enc);
            r.home = Some(i);
        }
        if self.s.kv_transfer == KvTransferMode::Layerwise && self.inst[i].role == Role::Prefill {
            let finishing: Vec<ReqId> = plan
                .prefill_chunks
                .iter()
                .filter(|(id, c)| {
                    let s = &self.seqs[id];
                    s.prefilled + c == s.prefill_target && s.generated == 0 && s.output_tokens > 1
                })
                .map(|(id, _)| *id)
                .collect();
            let producer = Producer {
                start_ns: start + enc,
                end_ns: end,
                layers: self.s.model.llm.layers,
            };
            for id in finishing {
                self.start_kv_handoff(id, i, Some(producer))?;
            }
        }
        let sequences = plan.prefill_chunks.len() + plan.decodes.len();
        let occupancy = sequences as f64 / self.s.engine.max_batch as f64;
        self.start_step(i, start + enc, end, plan, enc_work + fwd_work, occupancy);
        Ok(())
    }

    /// The factor a step of `step_s` seconds from rest starting now on instance `i` is slowed
    /// by: its GPU's power state, for a compute-bound step (a step with images or prefill
    /// tokens; decode steps are memory-bound).
    fn sustained_slowdown(&self, i: usize, compute: bool, step_s: f64) -> f64 {
        let x = &self.inst[i];
        if compute {
            x.perf.sustained_slowdown(x.duty.at(self.now), step_s)
        } else {
            1.0
        }
    }

    /// `work` of `phase` starting now on instance `i`, its time stretched by the memory traffic of
    /// its sibling partitions (`interference`), as known at the step's start (a step's time is
    /// fixed when it starts): a sibling's step in flight draws its bytes over its scheduled time,
    /// for the whole of this step if the sibling has work queued after it (it runs steps back to
    /// back), else only until it ends.
    fn beside_siblings(&self, i: usize, phase: Phase, work: Work) -> Work {
        let x = &self.inst[i];
        if work.seconds <= 0.0 || !x.interference.measured(phase) {
            return work;
        }
        let sibling: f64 = x
            .siblings
            .iter()
            .filter_map(|j| self.inst[*j].step.as_ref().map(|st| (&self.inst[*j], st)))
            .map(|(y, st)| {
                crate::interference::sibling_demand(
                    st.work.bytes,
                    secs(st.start),
                    secs(st.end),
                    secs(self.now),
                    work.seconds,
                    !y.sched.is_idle(),
                )
            })
            .sum();
        let slowdown = x
            .interference
            .slowdown(phase, work.bytes / work.seconds, sibling);
        // Only the time: the step moves the same bytes and does the same FLOPs.
        Work {
            seconds: work.seconds * slowdown,
            ..work
        }
    }

    /// Starts instance `i`'s step now; its encoding ends at `encode_end`, the step at `end`.
    fn start_step(
        &mut self,
        i: usize,
        encode_end: u64,
        end: u64,
        plan: StepPlan,
        work: Work,
        occupancy: f64,
    ) {
        self.acc.tally[i].images_encoded += plan.images.len() as u64;
        let compute = !plan.images.is_empty() || plan.batch.prefill_tokens > 0;
        self.inst[i].duty.record(self.now, end, compute);
        self.inst[i].step = Some(Step {
            start: self.now,
            end,
            encode_end,
            plan,
            work,
            occupancy,
        });
        self.push(end, Event::StepDone(i));
    }

    fn step_done(&mut self, i: usize) -> Result<(), Error> {
        let step = self.inst[i]
            .step
            .take()
            .expect("a step-done event has its step");
        let tally = &mut self.acc.tally[i];
        tally.busy_ns += step.end - step.start;
        tally.steps += 1;
        tally.flops += step.work.flops;
        tally.hbm_bytes += step.work.bytes;
        tally.occupied_ns += step.occupancy * (step.end - step.start) as f64;
        let plan = step.plan;
        let done = self.inst[i].sched.complete_step(&mut self.seqs, &plan);
        let sched = &self.inst[i].sched;
        self.acc.step(&StepSpan {
            instance: i as u64,
            start_s: secs(step.start),
            encode_end_s: secs(step.encode_end.min(step.end)),
            end_s: secs(step.end),
            images: plan.images.len() as u64,
            prefill_seqs: plan.prefill_chunks.len() as u64,
            prefill_tokens: plan.batch.prefill_tokens,
            decode_seqs: plan.decodes.len() as u64,
            decode_context_tokens: plan.batch.decode_ctx_tokens,
            kv_blocks_used: sched.kv.used_blocks(),
            kv_blocks: self.s.memory[i].kv_blocks,
            queued: (sched.encode_queue.len() + sched.waiting.len()) as u64,
            running: sched.running.len() as u64,
        })?;
        // An encoder's own step (a stealing encoder also runs LLM steps, which have tokens).
        if self.inst[i].role == Role::Encoder && plan.is_empty() {
            for id in plan.encode {
                self.encoded_elsewhere(i, id, step.encode_end)?;
            }
            return self.try_step(i);
        }
        let tally = &mut self.acc.tally[i];
        tally.prefill_tokens += plan.prefill_chunks.iter().map(|(_, c)| c).sum::<u64>();
        tally.decode_tokens += plan.decodes.len() as u64;
        // Each decoded sequence got its next token now. Sequences that decoded in the step
        // before share one gap: counted as a run, not one by one.
        let mut run: Option<(u64, u64)> = None;
        for id in &plan.decodes {
            let r = self.reqs.get_mut(id).expect("a decoded request is live");
            let last = r
                .last_token
                .replace(self.now)
                .expect("a decoding request has its first token");
            let gap = self.now - last;
            match &mut run {
                Some((g, n)) if *g == gap => *n += 1,
                _ => {
                    if let Some((g, n)) = run.replace((gap, 1)) {
                        self.acc.token_gaps(g, n);
                    }
                }
            }
        }
        if let Some((g, n)) = run {
            self.acc.token_gaps(g, n);
        }
        for p in done.prefilled {
            let r = self.reqs.get_mut(&p.id).expect("live");
            if p.first_token {
                r.first_token = Some(self.now);
                r.last_token = Some(self.now);
                r.prefill_inst = Some(i);
            }
            match p.next {
                Next::Finished => self.finish_request(p.id)?,
                Next::Decoding => {
                    r.decode_start.get_or_insert(self.now);
                    r.decode_inst = Some(i);
                }
                Next::HandOff => match r.kv_transfer {
                    Some(t) => self.lift_cap(t),
                    None => self.start_kv_handoff(p.id, i, None)?,
                },
            }
        }
        for id in done.finished {
            self.finish_request(id)?;
        }
        // Freed blocks may let a queued KV transfer in.
        if self.inst[i].role == Role::Decode {
            self.admit_incoming(i);
        }
        self.try_step(i)
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
        self.reqs.get_mut(&id).expect("live").encode_end = Some(at);
        if let Some(reason) = self.inadmissible(id) {
            return self.drop_request(id, reason);
        }
        let need = self.prefill_kv_tokens(id);
        let Some(dst) = self.route(self.prefill_role(), |inst| {
            inst.sched.kv.blocks_for(need) <= inst.sched.kv.total_blocks
        }) else {
            return self.drop_request(id, DropReason::KvCapacity);
        };
        self.assign(dst, id);
        if dst == e {
            // A stealing encoder keeps the request: the embeddings are already here.
            self.inst[e].sched.admit(id);
            return Ok(());
        }
        let bytes = self.s.model.emb_bytes(self.reqs[&id].visual, self.s.dtype);
        self.start_transfer(Kind::Embedding, id, e, dst, bytes, self.now, None);
        Ok(())
    }

    // ---- KV handoff (stage-level) ----

    /// Chooses a decode instance and queues the request's KV for it; with `layerwise`, the
    /// transfer may start with the running prefill step's first layer, capped by the step.
    fn start_kv_handoff(
        &mut self,
        id: ReqId,
        src: usize,
        layerwise: Option<Producer>,
    ) -> Result<(), Error> {
        let seq = &self.seqs[&id];
        let (context, need) = (seq.context, seq.context + seq.output_tokens);
        let dst = match self.reqs[&id].decode_inst {
            Some(d) => d,
            None => {
                let Some(d) = self.route(Role::Decode, |inst| {
                    inst.sched.kv.blocks_for(need) <= inst.sched.kv.total_blocks
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
        if let Some(producer) = layerwise {
            // Stream only if room is there now and nobody queues ahead; else ship after prefill.
            let x = &mut self.inst[dst];
            let blocks = x.sched.kv.blocks_for(context);
            if x.incoming.is_empty() && x.sched.kv.try_take(blocks) {
                self.reqs.get_mut(&id).expect("live").reserved = blocks;
                let bytes = self.s.model.llm.kv_bytes(context, self.s.dtype);
                let ready = producer.first_layer_ns();
                let t = self.start_transfer(Kind::Kv, id, src, dst, bytes, ready, Some(producer));
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
            let context = self.seqs[&id].context;
            let blocks = self.inst[d].sched.kv.blocks_for(context);
            if !self.inst[d].sched.kv.try_take(blocks) {
                break;
            }
            self.inst[d].incoming.pop_front();
            let src = self.reqs[&id]
                .home
                .expect("KV lives at its prefill instance");
            self.reqs.get_mut(&id).expect("live").reserved = blocks;
            let bytes = self.s.model.llm.kv_bytes(context, self.s.dtype);
            let t = self.start_transfer(Kind::Kv, id, src, d, bytes, self.now, None);
            let r = self.reqs.get_mut(&id).expect("live");
            r.kv_transfer = Some(t);
            // The KV was ready when prefill ended; it left once the destination had room.
            if let Some(done) = r.first_token {
                self.transfers[t].as_mut().expect("just started").ready_ns = done;
            }
        }
    }

    // ---- transfers ----

    /// Starts shipping `bytes` of request `req` from instance `src` to `dst`; the first bytes
    /// can leave at `ready_ns` (now, or a layerwise producer's first layer).
    #[allow(clippy::too_many_arguments)]
    fn start_transfer(
        &mut self,
        kind: Kind,
        req: ReqId,
        src: usize,
        dst: usize,
        bytes: u64,
        ready_ns: u64,
        producer: Option<Producer>,
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
            ready_ns,
            start_ns: ready_ns,
            producer,
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
            Kind::Embedding => r.emb_start = Some(ready_ns),
            Kind::Kv => r.kv_start = Some(ready_ns),
        }
        self.push(ready_ns + ns(startup), Event::TransferStart(tid));
        tid
    }

    fn transfer_start(&mut self, tid: usize) {
        let t = self.transfers[tid].as_mut().expect("live transfer");
        let planned = std::mem::take(&mut t.planned);
        let producer = t.producer;
        let mut comps = Vec::new();
        let mut ids = Vec::new();
        for f in planned {
            let cap = producer.and_then(|p| p.cap_bytes_per_s(f.bytes, self.now));
            let (id, c) = self.net.start(self.now, f.ports, f.bytes, cap);
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
        t.producer = None;
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
        self.acc.transfer_done(&t, self.now)?;
        match t.kind {
            Kind::Embedding => {
                let r = self.reqs.get_mut(&t.req).expect("live");
                r.emb_end = Some(self.now);
                r.emb_bytes += t.bytes;
                self.inst[t.dst].sched.admit(t.req);
                self.try_step(t.dst)?;
            }
            Kind::Kv => {
                let r = self.reqs.get_mut(&t.req).expect("live");
                let seq = self.seqs.get_mut(&t.req).expect("live");
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
                        t.producer,
                        seq.prefilled,
                        seq.prefill_target
                    )));
                }
                let src = r.home.expect("KV lived at the prefill instance");
                self.inst[src].sched.kv.give_back(seq.blocks);
                seq.blocks = r.reserved;
                r.reserved = 0;
                r.home = Some(t.dst);
                r.decode_start = Some(self.now);
                self.release(src, t.req);
                self.inst[t.dst].sched.running.push(t.req);
                self.try_step(t.dst)?;
                self.try_step(src)?;
            }
        }
        Ok(())
    }

    // ---- ends ----

    /// A request produced its last token; the scheduler already freed its blocks.
    fn finish_request(&mut self, id: ReqId) -> Result<(), Error> {
        let r = self.reqs.remove(&id).expect("live");
        let seq = self.seqs.remove(&id).expect("live");
        for &a in &r.assigned {
            self.inst[a].load -= 1;
        }
        self.acc.finished(&r, &seq, self.now)
    }

    fn drop_request(&mut self, id: ReqId, reason: DropReason) -> Result<(), Error> {
        let r = self.reqs.remove(&id).expect("live");
        let seq = self.seqs.remove(&id).expect("live");
        for &a in &r.assigned {
            self.inst[a].load -= 1;
        }
        if let Some(h) = r.home {
            self.inst[h].sched.kv.give_back(seq.blocks);
        }
        if let (Some(d), true) = (r.decode_inst, r.reserved > 0) {
            self.inst[d].sched.kv.give_back(r.reserved);
        }
        self.acc.dropped(&r, &seq, reason)
    }
}

/// The cluster's GPUs that instances use, in cluster order (a cluster may hold idle GPUs).
pub fn used_gpus(s: &Scenario) -> Vec<usize> {
    let mut used: Vec<usize> = s
        .cluster
        .instances
        .iter()
        .flat_map(|i| i.gpus.iter().copied())
        .collect();
    used.sort_unstable();
    used.dedup();
    used
}

/// "2×RTX-4090 + 2×A100-PCIe-80GB": the GPUs instances use, in cluster order.
pub fn gpu_mix(s: &Scenario) -> String {
    let mut mix: Vec<(&str, u64)> = Vec::new();
    for g in used_gpus(s).into_iter().map(|g| &s.cluster.gpus[g]) {
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
