//! One instance's scheduler: which images to encode, which prompt chunks to prefill and which
//! sequences to decode in the next step, and whom to preempt when KV memory runs out.
//!
//! It is a state machine that *returns* its decisions: [`Scheduler::plan_step`] (or
//! [`Scheduler::plan_encode`] on an encoder) composes the next step, taking KV blocks and
//! preempting as it goes, and hands back a [`StepPlan`]; the caller times the plan, runs it, and
//! reports it done with [`Scheduler::complete_step`], which says what became of each sequence.
//! It knows no clock, no network and no `PhaseModel`: the event loop (`engine`) does the timing.
//!
//! Policy, as vLLM's: requests are served first come, first served; decodes go oldest first; when
//! a decode needs a block and none is free, the newest partial prefill loses its blocks first,
//! then the most recently admitted running sequence is preempted (recompute: it goes back to the
//! front of the waiting queue to prefill its prompt and the tokens it generated); a prefill that
//! cannot get memory takes it from partial prefills queued behind it, else waits.
//! [`Schedule::Mixed`] puts decodes and prefill chunks in one step; [`Schedule::PrefillFirst`]
//! (vLLM v0, the project's GPU engine) prefills whatever new prompts fit, else decodes.
//!
//! Driving it step by step, e.g. to compare with another engine's scheduler on the same stream:
//!
//! ```
//! use hetsim_sim::engine_spec::{EngineSpec, Schedule};
//! use hetsim_sim::kv::KvPool;
//! use hetsim_sim::scheduler::{Next, Scheduler, Sequence, Sequences};
//!
//! let engine = EngineSpec { schedule: Schedule::PrefillFirst, ..EngineSpec::default() };
//! let mut seqs = Sequences::new();
//! let mut sched = Scheduler::new(KvPool::new(16, 1000), false, true);
//! // Request 7: a 100-token prompt, 3 output tokens.
//! seqs.insert(7, Sequence::new(100, 3));
//! sched.admit(7);
//! let plan = sched.plan_step(&mut seqs, &engine);
//! assert_eq!(plan.prefill_chunks, vec![(7, 100)]);
//! let done = sched.complete_step(&mut seqs, &plan);
//! assert_eq!(done.prefilled[0].next, Next::Decoding); // first token out, now decoding
//! let plan = sched.plan_step(&mut seqs, &engine);
//! assert_eq!(plan.decodes, vec![7]);
//! sched.complete_step(&mut seqs, &plan);
//! let plan = sched.plan_step(&mut seqs, &engine);
//! assert_eq!(sched.complete_step(&mut seqs, &plan).finished, vec![7]);
//! seqs.remove(&7); // finished: its KV blocks are back in the pool
//! assert!(sched.is_idle() && sched.kv.used_blocks() == 0);
//! ```

use std::collections::{BTreeMap, VecDeque};

use crate::catalog::ImageTokens;
use crate::engine_spec::{EngineSpec, Schedule};
use crate::kv::KvPool;
use crate::perf::BatchShape;

/// A request's id (the workload's).
pub type ReqId = u64;

/// What the scheduler knows of a request, wherever it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// The request's images (to be encoded unless `encoded`).
    pub images: Vec<ImageTokens>,
    pub encoded: bool,
    /// Visual plus prompt tokens.
    pub context: u64,
    pub output_tokens: u64,
    /// Tokens the current prefill must compute: the context, or after a preemption the context
    /// and the tokens generated before it.
    pub prefill_target: u64,
    pub prefilled: u64,
    pub generated: u64,
    /// KV blocks held on the instance where the sequence lives.
    pub blocks: u64,
    pub preemptions: u64,
}

impl Sequence {
    /// A text request (or one whose images are encoded elsewhere) of `context` tokens.
    pub fn new(context: u64, output_tokens: u64) -> Sequence {
        Sequence {
            images: Vec::new(),
            encoded: true,
            context,
            output_tokens,
            prefill_target: context,
            prefilled: 0,
            generated: 0,
            blocks: 0,
            preemptions: 0,
        }
    }

    /// A request whose `images` (already counted in `context`) are still to be encoded.
    pub fn with_images(context: u64, output_tokens: u64, images: Vec<ImageTokens>) -> Sequence {
        Sequence {
            encoded: images.is_empty(),
            images,
            ..Sequence::new(context, output_tokens)
        }
    }
}

/// Every live sequence, by id: requests move between instances, their state goes with them.
pub type Sequences = BTreeMap<ReqId, Sequence>;

/// What one step does, as the scheduler composed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepPlan {
    /// Requests whose images the step encodes (before its forward pass, if it has one).
    pub encode: Vec<ReqId>,
    /// Their images, in order.
    pub images: Vec<ImageTokens>,
    /// (request, new tokens) prefilled, first come first served.
    pub prefill_chunks: Vec<(ReqId, u64)>,
    /// Running sequences that decode one token, oldest first.
    pub decodes: Vec<ReqId>,
    /// The forward pass the prefill chunks and decodes make.
    pub batch: BatchShape,
    /// Running sequences preempted to make room, in order (back at the waiting queue's front).
    pub preempted: Vec<ReqId>,
    /// Partial prefills whose blocks were taken (they start over when their turn comes).
    pub abandoned: Vec<ReqId>,
}

impl StepPlan {
    /// Preemptions of either kind the composition made.
    pub fn preemptions(&self) -> u64 {
        (self.preempted.len() + self.abandoned.len()) as u64
    }

    /// No prefill chunk and no decode: nothing for an LLM step to run.
    pub fn is_empty(&self) -> bool {
        self.decodes.is_empty() && self.prefill_chunks.is_empty()
    }
}

/// Where a sequence whose prefill a step completed goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It needed one token only: done, its blocks are freed.
    Finished,
    /// It decodes here (now among the running sequences).
    Decoding,
    /// This instance does not decode: its KV must be shipped to a decode instance.
    HandOff,
}

/// A sequence whose prefill (or recomputation) a step completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefilled {
    pub id: ReqId,
    /// The step sampled the request's first token (false after a recomputation).
    pub first_token: bool,
    pub next: Next,
}

/// What a completed step changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutcome {
    /// In the plan's order.
    pub prefilled: Vec<Prefilled>,
    /// Decoding sequences that produced their last token (their blocks are freed), in order.
    pub finished: Vec<ReqId>,
}

/// The queues and KV pool of one instance.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub kv: KvPool,
    /// Encodes the images of requests that reach its LLM queue unencoded.
    pub encodes: bool,
    /// Keeps requests after prefill and decodes them.
    pub decodes: bool,
    /// Requests waiting for an encoder step (encoder instances).
    pub encode_queue: VecDeque<ReqId>,
    /// Requests waiting for (the rest of) their prefill, first come first served.
    pub waiting: VecDeque<ReqId>,
    /// Decoding sequences, oldest admitted first.
    pub running: Vec<ReqId>,
}

impl Scheduler {
    pub fn new(kv: KvPool, encodes: bool, decodes: bool) -> Scheduler {
        Scheduler {
            kv,
            encodes,
            decodes,
            encode_queue: VecDeque::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// Queues a request for prefill.
    pub fn admit(&mut self, id: ReqId) {
        self.waiting.push_back(id);
    }

    /// Nothing queued and nothing running.
    pub fn is_idle(&self) -> bool {
        self.encode_queue.is_empty() && self.waiting.is_empty() && self.running.is_empty()
    }

    /// An encoder step: whole requests from the encode queue, up to `limit` images (a request
    /// with more goes alone). `None` if the queue is empty.
    pub fn plan_encode(&mut self, seqs: &Sequences, limit: u64) -> Option<StepPlan> {
        let mut plan = StepPlan::default();
        while let Some(&id) = self.encode_queue.front() {
            let images = &seqs[&id].images;
            if !plan.encode.is_empty() && (plan.images.len() + images.len()) as u64 > limit {
                break;
            }
            self.encode_queue.pop_front();
            plan.images.extend(images.iter().copied());
            plan.encode.push(id);
        }
        (!plan.encode.is_empty()).then_some(plan)
    }

    /// The next LLM step; blocks for its tokens are taken now. A plan with no prefill chunk
    /// and no decode ([`StepPlan::is_empty`]) means nothing can run yet, though making room
    /// may still have preempted.
    pub fn plan_step(&mut self, seqs: &mut Sequences, engine: &EngineSpec) -> StepPlan {
        let mut plan = StepPlan::default();
        match engine.schedule {
            Schedule::Mixed => {
                self.compose_decodes(seqs, engine, &mut plan);
                self.compose_prefills(seqs, engine, &mut plan);
            }
            Schedule::PrefillFirst => {
                if (self.running.len() as u64) < engine.max_batch {
                    self.compose_prefills(seqs, engine, &mut plan);
                }
                if plan.prefill_chunks.is_empty() {
                    self.compose_decodes(seqs, engine, &mut plan);
                }
            }
        }
        plan
    }

    /// Applies a finished step: prefill progress, one token for every decode, finished
    /// sequences' blocks back to the pool. The caller removes finished sequences from `seqs`.
    pub fn complete_step(&mut self, seqs: &mut Sequences, plan: &StepPlan) -> StepOutcome {
        let mut out = StepOutcome::default();
        for id in &plan.encode {
            seqs.get_mut(id).expect("encoded request is live").encoded = true;
        }
        let mut completed = Vec::new();
        for &(id, chunk) in &plan.prefill_chunks {
            let s = seqs.get_mut(&id).expect("prefilling request is live");
            s.prefilled += chunk;
            if s.prefilled == s.prefill_target {
                completed.push(id);
            }
        }
        self.waiting.retain(|id| !completed.contains(id));
        for id in completed {
            let s = seqs.get_mut(&id).expect("prefilled request is live");
            let first_token = s.generated == 0;
            if first_token {
                s.generated = 1;
            }
            let next = if s.generated >= s.output_tokens {
                self.kv.give_back(s.blocks);
                s.blocks = 0;
                Next::Finished
            } else if self.decodes {
                self.running.push(id);
                Next::Decoding
            } else {
                Next::HandOff
            };
            out.prefilled.push(Prefilled {
                id,
                first_token,
                next,
            });
        }
        for &id in &plan.decodes {
            let s = seqs.get_mut(&id).expect("decoding request is live");
            s.generated += 1;
            if s.generated >= s.output_tokens {
                let pos = self
                    .running
                    .iter()
                    .position(|x| *x == id)
                    .expect("decoding request is running");
                self.running.remove(pos);
                self.kv.give_back(s.blocks);
                s.blocks = 0;
                out.finished.push(id);
            }
        }
        out
    }

    /// One decode token for every running sequence (oldest first), growing their KV and
    /// preempting the newest where memory runs out.
    fn compose_decodes(&mut self, seqs: &mut Sequences, engine: &EngineSpec, plan: &mut StepPlan) {
        if !self.decodes {
            return;
        }
        let mut k = 0;
        while k < self.running.len()
            && plan.batch.tokens() < engine.token_budget
            && (plan.decodes.len() as u64) < engine.max_batch
        {
            let id = self.running[k];
            let s = &seqs[&id];
            // This step writes the KV of the last sampled token at position context + generated − 1.
            let tokens = s.context + s.generated;
            let more = self.kv.blocks_for(tokens).saturating_sub(s.blocks);
            if more > 0 && !self.take_blocks_preempting(seqs, id, more, plan) {
                continue; // `id` itself was preempted; the running list shrank under k.
            }
            seqs.get_mut(&id).expect("running request is live").blocks += more;
            plan.batch.add_decode(tokens);
            plan.decodes.push(id);
            k += 1;
        }
    }

    /// Prefill chunks of waiting requests, first come first served, within the token budget.
    fn compose_prefills(&mut self, seqs: &mut Sequences, engine: &EngineSpec, plan: &mut StepPlan) {
        let budget = engine.token_budget;
        let running = match engine.schedule {
            Schedule::Mixed => 0,
            Schedule::PrefillFirst => self.running.len(),
        };
        for w in 0..self.waiting.len() {
            let used = plan.batch.tokens();
            let sequences = running + plan.decodes.len() + plan.prefill_chunks.len();
            if used >= budget || sequences as u64 >= engine.max_batch {
                break;
            }
            let id = self.waiting[w];
            let s = &seqs[&id];
            let remaining = s.prefill_target - s.prefilled;
            let mut chunk = remaining.min(budget - used);
            if chunk < remaining && !engine.chunked_prefill {
                // A recomputation longer than the budget (prompt + tokens generated before
                // preemption) runs whole, alone; anything else waits for a step with room.
                if used > 0 || s.generated == 0 {
                    break;
                }
                chunk = remaining;
            }
            let more = self
                .kv
                .blocks_for(s.prefilled + chunk)
                .saturating_sub(s.blocks);
            // First come, first served: a request that cannot get memory takes it from partial
            // prefills that started after it, else blocks those behind it.
            if !self.take_blocks_for_prefill(seqs, w, more, plan) {
                break;
            }
            let s = seqs.get_mut(&id).expect("waiting request is live");
            if !s.encoded && s.prefilled == 0 {
                debug_assert!(
                    self.encodes,
                    "unencoded request reached an instance that cannot encode"
                );
                plan.images.extend(s.images.iter().copied());
                plan.encode.push(id);
            }
            plan.batch.add_prefill_chunk(
                s.prefilled,
                chunk,
                s.prefilled + chunk == s.prefill_target,
            );
            s.blocks += more;
            plan.prefill_chunks.push((id, chunk));
        }
    }

    /// Takes `more` blocks for the decoding sequence `id`, preempting the newest until they fit:
    /// partial prefills first, then running sequences from the most recently admitted. False if
    /// `id` itself was preempted.
    fn take_blocks_preempting(
        &mut self,
        seqs: &mut Sequences,
        id: ReqId,
        more: u64,
        plan: &mut StepPlan,
    ) -> bool {
        loop {
            if self.kv.try_take(more) {
                return true;
            }
            if let Some(w) = self.newest_partial_prefill(seqs, 0) {
                self.abandon_partial_prefill(seqs, w, plan);
                continue;
            }
            let victim = *self.running.last().expect("the requester is running");
            self.preempt(seqs, victim, plan);
            if victim == id {
                return false;
            }
        }
    }

    /// Takes `more` blocks for the prefill chunk of `waiting[w]`, abandoning partial prefills
    /// queued behind it if need be.
    fn take_blocks_for_prefill(
        &mut self,
        seqs: &mut Sequences,
        w: usize,
        more: u64,
        plan: &mut StepPlan,
    ) -> bool {
        loop {
            if self.kv.try_take(more) {
                return true;
            }
            match self.newest_partial_prefill(seqs, w + 1) {
                Some(v) => self.abandon_partial_prefill(seqs, v, plan),
                None => return false,
            }
        }
    }

    /// Index in `waiting` (at or after `from`) of the newest request holding KV blocks.
    fn newest_partial_prefill(&self, seqs: &Sequences, from: usize) -> Option<usize> {
        (from..self.waiting.len())
            .rev()
            .find(|&w| seqs[&self.waiting[w]].blocks > 0)
    }

    /// Frees a partial prefill's blocks; it starts over when its turn comes again.
    fn abandon_partial_prefill(&mut self, seqs: &mut Sequences, w: usize, plan: &mut StepPlan) {
        let id = self.waiting[w];
        let s = seqs.get_mut(&id).expect("waiting request is live");
        self.kv.give_back(s.blocks);
        s.blocks = 0;
        s.prefilled = 0;
        s.preemptions += 1;
        plan.abandoned.push(id);
    }

    /// Moves a running sequence back to the front of the waiting queue, freeing its blocks.
    fn preempt(&mut self, seqs: &mut Sequences, id: ReqId, plan: &mut StepPlan) {
        let pos = self
            .running
            .iter()
            .rposition(|x| *x == id)
            .expect("preempting a running request");
        self.running.remove(pos);
        let s = seqs.get_mut(&id).expect("running request is live");
        self.kv.give_back(s.blocks);
        s.blocks = 0;
        s.preemptions += 1;
        // Recompute the prompt and the tokens generated so far; the images stay encoded (cached).
        s.prefill_target = s.context + s.generated;
        s.prefilled = 0;
        self.waiting.push_front(id);
        plan.preempted.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KV blocks of 4 tokens, so block counts stay small enough to check by hand.
    const BLOCK: u64 = 4;

    fn engine(schedule: Schedule, token_budget: u64, max_batch: u64, chunked: bool) -> EngineSpec {
        EngineSpec {
            schedule,
            token_budget,
            max_batch,
            chunked_prefill: chunked,
            block_tokens: BLOCK,
            ..EngineSpec::default()
        }
    }

    fn scheduler(total_blocks: u64) -> (Scheduler, Sequences) {
        let sched = Scheduler::new(KvPool::new(BLOCK, total_blocks), true, true);
        (sched, Sequences::new())
    }

    /// A decoding sequence of `context` tokens that has generated `generated`, holding `blocks`.
    fn run(
        s: &mut Scheduler,
        q: &mut Sequences,
        id: ReqId,
        context: u64,
        generated: u64,
        blocks: u64,
    ) {
        assert!(s.kv.try_take(blocks));
        let seq = Sequence {
            prefilled: context,
            generated,
            blocks,
            ..Sequence::new(context, 100)
        };
        q.insert(id, seq);
        s.running.push(id);
    }

    /// A waiting sequence of `context` tokens with `prefilled` of them done, holding `blocks`.
    fn wait(
        s: &mut Scheduler,
        q: &mut Sequences,
        id: ReqId,
        context: u64,
        prefilled: u64,
        blocks: u64,
    ) {
        assert!(s.kv.try_take(blocks));
        let seq = Sequence {
            prefilled,
            blocks,
            ..Sequence::new(context, 100)
        };
        q.insert(id, seq);
        s.admit(id);
    }

    fn image(llm_tokens: u64) -> ImageTokens {
        ImageTokens {
            resized_width: 336,
            resized_height: 336,
            tiles: 1,
            encoder_tokens: 577,
            projector_tokens: 576,
            feature_tokens: llm_tokens,
            llm_tokens,
        }
    }

    #[test]
    fn a_decode_out_of_memory_preempts_the_newest_running_sequence() {
        // Three sequences of 8 context tokens, 1 generated, 2 blocks each: 6 of 7 blocks in use.
        // Each decode writes position 8, the 9th token: 3 blocks. Sequence 1 takes the free block;
        // sequence 2 finds none, so 3 (admitted last) is preempted, freeing 2; 2 takes one of them.
        let (mut s, mut q) = scheduler(7);
        for id in 1..=3 {
            run(&mut s, &mut q, id, 8, 1, 2);
        }
        let plan = s.plan_step(&mut q, &engine(Schedule::Mixed, 8192, 256, true));
        assert_eq!(plan.decodes, vec![1, 2]);
        assert_eq!(plan.preempted, vec![3]);
        assert_eq!(s.running, vec![1, 2]);
        // 3 waits at the front to recompute its prompt and its token: 9 tokens, 3 blocks, and
        // only 1 is free, so it does not prefill in this step.
        assert!(plan.prefill_chunks.is_empty());
        assert_eq!(s.waiting, VecDeque::from([3]));
        let three = &q[&3];
        assert_eq!(
            (three.prefill_target, three.prefilled, three.blocks),
            (9, 0, 0)
        );
        assert_eq!(three.preemptions, 1);
        assert_eq!(s.kv.used_blocks(), 6);
        assert_eq!(plan.batch.decode_ctx_tokens, 18);
    }

    #[test]
    fn the_newest_running_sequence_preempts_itself() {
        // Two sequences holding 2 blocks each, none free: 1 needs a third block and preempts 2;
        // with 2 blocks free it takes one. 2 is gone from the step.
        let (mut s, mut q) = scheduler(4);
        run(&mut s, &mut q, 1, 8, 1, 2);
        run(&mut s, &mut q, 2, 8, 1, 2);
        let plan = s.plan_step(&mut q, &engine(Schedule::PrefillFirst, 8192, 256, true));
        assert_eq!((plan.decodes, plan.preempted), (vec![1], vec![2]));
        // Sequence 2 alone, with its own block short: it is the newest, so it preempts itself.
        let (mut s, mut q) = scheduler(2);
        run(&mut s, &mut q, 2, 8, 1, 2);
        let plan = s.plan_step(&mut q, &engine(Schedule::PrefillFirst, 8192, 256, true));
        assert!(plan.is_empty());
        assert_eq!(plan.preempted, vec![2]);
        assert_eq!((s.kv.used_blocks(), s.waiting.len()), (0, 1));
    }

    #[test]
    fn a_partial_prefill_loses_its_blocks_before_any_running_sequence() {
        // Running 1 (8 tokens, 2 blocks) needs a third block; partial prefill 5 (8 of 20 done, 2
        // blocks) holds the rest of the 4. 5 starts over, 1 decodes, and 5's 20 tokens (5 blocks)
        // do not fit the 1 block left.
        let (mut s, mut q) = scheduler(4);
        run(&mut s, &mut q, 1, 8, 1, 2);
        wait(&mut s, &mut q, 5, 20, 8, 2);
        let plan = s.plan_step(&mut q, &engine(Schedule::Mixed, 8192, 256, true));
        assert_eq!(plan.decodes, vec![1]);
        assert_eq!((plan.abandoned, plan.preempted), (vec![5], vec![]));
        assert!(plan.prefill_chunks.is_empty());
        assert_eq!(
            (q[&5].prefilled, q[&5].blocks, q[&5].preemptions),
            (0, 0, 1)
        );
        assert_eq!(s.kv.used_blocks(), 3);
    }

    #[test]
    fn a_prefill_takes_blocks_from_partial_prefills_behind_it_never_ahead() {
        // Waiting: 1 (new, 8 tokens = 2 blocks), then 2 (8 of 16 done, holding 2 of 3 blocks).
        // 1 comes first: it takes 2's blocks; 2 then needs 4 blocks and 1 is free.
        let (mut s, mut q) = scheduler(3);
        wait(&mut s, &mut q, 1, 8, 0, 0);
        wait(&mut s, &mut q, 2, 16, 8, 2);
        let plan = s.plan_step(&mut q, &engine(Schedule::Mixed, 8192, 256, true));
        assert_eq!(plan.prefill_chunks, vec![(1, 8)]);
        assert_eq!(plan.abandoned, vec![2]);
        assert_eq!((q[&1].blocks, q[&2].blocks, s.kv.used_blocks()), (2, 0, 2));

        // The other order: partial 2 is ahead and needs 2 more blocks, 1 is free; nothing behind
        // it holds any, so it waits, and 1 waits behind it (first come, first served).
        let (mut s, mut q) = scheduler(3);
        wait(&mut s, &mut q, 2, 16, 8, 2);
        wait(&mut s, &mut q, 1, 8, 0, 0);
        let plan = s.plan_step(&mut q, &engine(Schedule::Mixed, 8192, 256, true));
        assert!(plan.is_empty() && plan.abandoned.is_empty());
        assert_eq!(q[&2].blocks, 2);
    }

    #[test]
    fn chunked_prefill_splits_a_prompt_across_steps_within_the_budget() {
        // Budget 10: prompt A of 25 tokens goes 10 + 10 + 5; B (4 tokens) joins the last step.
        let e = engine(Schedule::Mixed, 10, 256, true);
        let (mut s, mut q) = scheduler(100);
        wait(&mut s, &mut q, 1, 25, 0, 0);
        wait(&mut s, &mut q, 2, 4, 0, 0);
        let mut chunks = Vec::new();
        let mut last = StepPlan::default();
        for _ in 0..3 {
            last = s.plan_step(&mut q, &e);
            chunks.push(last.prefill_chunks.clone());
            s.complete_step(&mut q, &last);
        }
        assert_eq!(
            chunks,
            vec![vec![(1, 10)], vec![(1, 10)], vec![(1, 5), (2, 4)]]
        );
        // The last step: A's 5 tokens after 20 cached, B's 4 from scratch, both sample a token.
        // Query–key pairs: 5 · (20 + 6/2) + 4 · (0 + 5/2) = 115 + 10.
        assert_eq!(last.batch.prefill_tokens, 9);
        assert_eq!(last.batch.prefill_pairs, 125.0);
        assert_eq!(last.batch.prefill_kv_tokens, 29);
        assert_eq!(last.batch.logits, 2);
        // 25 tokens take 7 blocks, 4 take 1; both now decode.
        assert_eq!((q[&1].blocks, q[&2].blocks), (7, 1));
        assert_eq!(s.running, vec![1, 2]);
    }

    #[test]
    fn unchunked_prefill_runs_prompts_whole_and_recomputations_alone() {
        let e = engine(Schedule::Mixed, 10, 256, false);
        // 6 + 6 tokens under a budget of 10: the second prompt waits for the next step.
        let (mut s, mut q) = scheduler(100);
        wait(&mut s, &mut q, 1, 6, 0, 0);
        wait(&mut s, &mut q, 2, 6, 0, 0);
        assert_eq!(s.plan_step(&mut q, &e).prefill_chunks, vec![(1, 6)]);
        // The same with chunking: the second prompt's first 4 tokens fill the budget.
        let (mut s, mut q) = scheduler(100);
        wait(&mut s, &mut q, 1, 6, 0, 0);
        wait(&mut s, &mut q, 2, 6, 0, 0);
        let chunked = engine(Schedule::Mixed, 10, 256, true);
        assert_eq!(
            s.plan_step(&mut q, &chunked).prefill_chunks,
            vec![(1, 6), (2, 4)]
        );

        // A preempted sequence recomputing 25 prompt + 3 generated tokens exceeds the budget: it
        // runs whole, alone, and the prompt behind it waits.
        let (mut s, mut q) = scheduler(100);
        wait(&mut s, &mut q, 1, 25, 0, 0);
        q.get_mut(&1).unwrap().generated = 3;
        q.get_mut(&1).unwrap().prefill_target = 28;
        wait(&mut s, &mut q, 2, 4, 0, 0);
        let plan = s.plan_step(&mut q, &e);
        assert_eq!(plan.prefill_chunks, vec![(1, 28)]);
        let done = s.complete_step(&mut q, &plan);
        assert_eq!(
            done.prefilled,
            vec![Prefilled {
                id: 1,
                first_token: false,
                next: Next::Decoding
            }]
        );
        assert_eq!(q[&1].generated, 3);
    }

    #[test]
    fn max_batch_bounds_the_sequences_of_a_step() {
        // Three running sequences and one waiting prompt, at most 2 sequences a step: the two
        // oldest decode, nothing else fits.
        let (mut s, mut q) = scheduler(100);
        for id in 1..=3 {
            run(&mut s, &mut q, id, 8, 1, 3);
        }
        wait(&mut s, &mut q, 4, 8, 0, 0);
        let plan = s.plan_step(&mut q, &engine(Schedule::Mixed, 8192, 2, true));
        assert_eq!(plan.decodes, vec![1, 2]);
        assert!(plan.prefill_chunks.is_empty());
    }

    #[test]
    fn prefill_first_prefills_alone_where_mixed_shares_the_step() {
        // One running sequence, two waiting prompts of 8 tokens, at most 2 sequences a step.
        let setup = || {
            let (mut s, mut q) = scheduler(100);
            run(&mut s, &mut q, 1, 8, 1, 3);
            wait(&mut s, &mut q, 2, 8, 0, 0);
            wait(&mut s, &mut q, 3, 8, 0, 0);
            (s, q)
        };
        // Prefill first: the running sequence counts against the batch, so one prompt prefills,
        // and the step has no decode.
        let (mut s, mut q) = setup();
        let plan = s.plan_step(&mut q, &engine(Schedule::PrefillFirst, 8192, 2, true));
        assert_eq!((plan.prefill_chunks, plan.decodes), (vec![(2, 8)], vec![]));
        // Mixed: the decode, then one prompt.
        let (mut s, mut q) = setup();
        let plan = s.plan_step(&mut q, &engine(Schedule::Mixed, 8192, 2, true));
        assert_eq!((plan.prefill_chunks, plan.decodes), (vec![(2, 8)], vec![1]));
        // Prefill first with the batch full of running sequences: decodes only.
        let (mut s, mut q) = setup();
        run(&mut s, &mut q, 4, 8, 1, 3);
        let plan = s.plan_step(&mut q, &engine(Schedule::PrefillFirst, 8192, 2, true));
        assert_eq!((plan.prefill_chunks, plan.decodes), (vec![], vec![1, 4]));
    }

    #[test]
    fn a_completed_prefill_decodes_hands_off_or_finishes() {
        let e = engine(Schedule::Mixed, 8192, 256, true);
        // A prefill-only instance: 1 (3 output tokens) is handed off, 2 (1 output token) finishes
        // and its 2 blocks come back; 1 keeps its 3 blocks until its KV is shipped.
        let mut s = Scheduler::new(KvPool::new(BLOCK, 10), false, false);
        let mut q = Sequences::new();
        q.insert(1, Sequence::new(12, 3));
        q.insert(2, Sequence::new(5, 1));
        s.admit(1);
        s.admit(2);
        let plan = s.plan_step(&mut q, &e);
        assert_eq!(s.kv.used_blocks(), 5);
        let done = s.complete_step(&mut q, &plan);
        let next: Vec<_> = done
            .prefilled
            .iter()
            .map(|p| (p.id, p.first_token, p.next))
            .collect();
        assert_eq!(
            next,
            vec![(1, true, Next::HandOff), (2, true, Next::Finished)]
        );
        assert_eq!((s.kv.used_blocks(), q[&1].generated), (3, 1));
        assert!(s.is_idle());
    }

    #[test]
    fn an_encoder_step_takes_whole_requests_up_to_its_image_limit() {
        // Limit 4 images; requests of 2, 3 and 5 images: [2], [3], then the 5 alone.
        let mut s = Scheduler::new(KvPool::new(BLOCK, 0), true, false);
        let mut q = Sequences::new();
        for (id, n) in [(1, 2), (2, 3), (3, 5)] {
            q.insert(
                id,
                Sequence::with_images(10 * n, 1, vec![image(10); n as usize]),
            );
            s.encode_queue.push_back(id);
        }
        let mut steps = Vec::new();
        while let Some(plan) = s.plan_encode(&q, 4) {
            steps.push((plan.encode, plan.images.len()));
        }
        assert_eq!(steps, vec![(vec![1], 2), (vec![2], 3), (vec![3], 5)]);
        // With a limit of 5, the first two share a step.
        for id in 1..=3 {
            s.encode_queue.push_back(id);
        }
        assert_eq!(s.plan_encode(&q, 5).map(|p| p.encode), Some(vec![1, 2]));
    }
}
