//! The engine's scheduling decisions, apart from the GPU: which requests the next step encodes,
//! prefills, imports or decodes, and which KV blocks each holds. Plain data, so it runs (and is
//! tested) without a GPU; [`Engine`](super::engine::Engine) carries each step out.
//!
//! Policy, one step at a time (prefill first, as vLLM's default):
//! 1. A prefill pass, first come first served over the prompts ready for it (text-only, or
//!    encoded elsewhere) and those waiting for the vision encoder: while they fit
//!    `prefill_tokens` tokens (the first always does), the batch `max_batch` sequences, the
//!    pool its free blocks, and the waiting ones one encode batch of `encode_batch` images (at
//!    least one request). The waiting ones it takes are encoded first, in the same step, as
//!    vLLM runs the vision tower for the requests a step schedules; images that cannot be
//!    prefilled yet wait unencoded. (The encoder worker of a modality-level deployment
//!    encodes whatever waits: `take_encode_only`.)
//! 2. Else, on a decode worker, move requests prefilled elsewhere into the pool while the batch
//!    has room and their KV fits.
//! 3. Else one decode step of every running request, padded to its batch-size bucket.
//!
//! KV blocks of 16 tokens for a request's whole length (prompt + output; the prompt only on a
//! prefill worker, `hand_off`) are taken when it is chosen for prefill or import, so a running
//! request never waits for memory; they are freed when it finishes or is handed off. A request
//! finishes when it has generated its output length: the prefill makes the first token, each
//! decode step one more.
//!
//! Driving it by hand, as the engine does and as a test does without a GPU: submit requests with
//! their lengths, ask for the next step, carry it out, report it done (which returns the
//! requests that finished in it).
//!
//! ```
//! use hetsim_exec::serve::scheduler::{Scheduler, SchedulerConfig, SeqSpec, Step};
//!
//! let mut s = Scheduler::new(SchedulerConfig {
//!     max_batch: 4,
//!     max_context: 256,
//!     prefill_tokens: 256,
//!     encode_batch: 8,
//!     kv_blocks: 64,
//!     hand_off: false,
//! });
//! s.submit(SeqSpec { id: 7, images: 0, prompt_tokens: 20, output_tokens: 2 }).unwrap();
//! assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![7] });
//! assert_eq!(s.step_done(), Vec::<u64>::new()); // first token
//! assert_eq!(s.next_step().unwrap(), Step::Decode { ids: vec![7], bucket: 1 });
//! assert_eq!(s.step_done(), vec![7]); // second token: done
//! assert!(s.is_idle());
//! ```

use crate::error::{Error, Result};
use crate::serve::model::gpu::KV_BLOCK;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Largest decode batch.
    pub max_batch: usize,
    /// Longest request (prompt + output tokens).
    pub max_context: usize,
    /// Tokens in one prefill step (the first prompt of a step is taken whatever its length).
    pub prefill_tokens: usize,
    /// Images in one encode step (the first request of a step is taken whatever its images).
    pub encode_batch: usize,
    /// KV blocks of [`KV_BLOCK`] tokens in the pool.
    pub kv_blocks: usize,
    /// A prefill worker: requests hold KV for their prompt only and wait to be handed off after
    /// prefill instead of decoding.
    pub hand_off: bool,
}

/// A request as the scheduler sees it: its lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpec {
    pub id: u64,
    /// Images to encode (0: the request goes straight to prefill).
    pub images: usize,
    /// Prompt tokens in the KV cache, each image counted as its embedding rows.
    pub prompt_tokens: usize,
    pub output_tokens: usize,
}

/// A request's state here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub spec: SeqSpec,
    /// KV blocks it holds (empty until chosen for prefill or import).
    pub blocks: Vec<i32>,
    /// Tokens in its KV cache.
    pub len: usize,
    /// Tokens generated so far.
    pub generated: usize,
    /// Submission order: prefill is first come, first served across the queues.
    pub arrival: u64,
}

/// What the next step does, by request id (oldest first; decode in id order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    /// Encode the images of `encode` (`images` in all), then prefill `prefill` (may be empty).
    Encode {
        encode: Vec<u64>,
        images: usize,
        prefill: Vec<u64>,
    },
    /// Scatter the KV of requests prefilled elsewhere into their blocks; they join decoding.
    Import { ids: Vec<u64> },
    /// Prefill these prompts in one packed pass; each makes its first token.
    Prefill { ids: Vec<u64> },
    /// One token for each running request, the batch padded to `bucket` rows.
    Decode { ids: Vec<u64>, bucket: usize },
}

/// Batch-size buckets: powers of two up to max_batch (and max_batch itself).
pub fn bucket(batch: usize, max_batch: usize) -> usize {
    batch.next_power_of_two().min(max_batch)
}

/// One prefill pass being filled: the first prompt is taken whatever its length; the next ones
/// while the pass stays within `prefill_tokens` tokens and the batch within `max_batch`; each
/// only if its KV blocks are free.
struct PrefillPass {
    taken: usize,
    tokens: usize,
    free_blocks: usize,
}

impl PrefillPass {
    fn new(s: &Scheduler) -> PrefillPass {
        PrefillPass {
            taken: 0,
            tokens: 0,
            free_blocks: s.free_blocks.len(),
        }
    }

    fn admit(&mut self, s: &Scheduler, id: u64) -> bool {
        let len = s.seqs[&id].spec.prompt_tokens;
        let blocks = s.blocks_needed(&id);
        let room = s.running.len() + self.taken < s.cfg.max_batch;
        let fits = self.taken == 0 || self.tokens + len <= s.cfg.prefill_tokens;
        if !room || !fits || blocks > self.free_blocks {
            return false;
        }
        self.taken += 1;
        self.tokens += len;
        self.free_blocks -= blocks;
        true
    }
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    seqs: BTreeMap<u64, Sequence>,
    /// Waiting for the vision encoder.
    waiting: VecDeque<u64>,
    /// Encoded (or without images), waiting for prefill.
    encoded: VecDeque<u64>,
    running: BTreeSet<u64>,
    /// Prefill worker: prefilled, waiting to be handed off.
    prefilled: VecDeque<u64>,
    /// Decode worker: prefilled elsewhere, waiting for room.
    imported: VecDeque<u64>,
    /// Free block ids, the next to take last.
    free_blocks: Vec<i32>,
    /// The step handed out by `next_step` and not yet reported done.
    pending: Option<Step>,
    /// Requests submitted so far (each one's `arrival`).
    submitted: u64,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Scheduler {
        Scheduler {
            free_blocks: (0..cfg.kv_blocks as i32).rev().collect(),
            cfg,
            seqs: BTreeMap::new(),
            waiting: VecDeque::new(),
            encoded: VecDeque::new(),
            running: BTreeSet::new(),
            prefilled: VecDeque::new(),
            imported: VecDeque::new(),
            pending: None,
            submitted: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Queue a request: for the encoder if it has images, else for prefill.
    pub fn submit(&mut self, spec: SeqSpec) -> Result<()> {
        self.check(&spec)?;
        if spec.images > 0 {
            self.waiting.push_back(spec.id);
        } else {
            self.encoded.push_back(spec.id);
        }
        let seq = self.fresh(spec);
        self.seqs.insert(seq.spec.id, seq);
        Ok(())
    }

    /// Queue a request whose images were encoded elsewhere: it waits for prefill.
    pub fn submit_encoded(&mut self, spec: SeqSpec) -> Result<()> {
        self.check(&spec)?;
        self.encoded.push_back(spec.id);
        let seq = self.fresh(spec);
        self.seqs.insert(seq.spec.id, seq);
        Ok(())
    }

    /// Decode worker: queue a request prefilled elsewhere (its prompt's KV and first token).
    pub fn submit_prefilled(&mut self, spec: SeqSpec) -> Result<()> {
        self.check(&spec)?;
        self.imported.push_back(spec.id);
        let seq = Sequence {
            len: spec.prompt_tokens,
            generated: 1,
            ..self.fresh(spec)
        };
        self.seqs.insert(seq.spec.id, seq);
        Ok(())
    }

    fn fresh(&mut self, spec: SeqSpec) -> Sequence {
        self.submitted += 1;
        Sequence {
            spec,
            blocks: Vec::new(),
            len: 0,
            generated: 0,
            arrival: self.submitted,
        }
    }

    fn check(&self, spec: &SeqSpec) -> Result<()> {
        let id = spec.id;
        if self.seqs.contains_key(&id) {
            return Err(Error::Invalid(format!("request {id} is already queued")));
        }
        if spec.output_tokens == 0 {
            return Err(Error::Invalid(format!(
                "request {id}: output tokens must be at least 1"
            )));
        }
        let total = spec.prompt_tokens + spec.output_tokens;
        if total > self.cfg.max_context {
            return Err(Error::Invalid(format!(
                "request {id}: {total} tokens (prompt + output) exceed the engine's max context {}",
                self.cfg.max_context
            )));
        }
        if total > self.cfg.kv_blocks * KV_BLOCK {
            return Err(Error::Invalid(format!(
                "request {id}: {total} tokens do not fit the KV pool ({} blocks)",
                self.cfg.kv_blocks
            )));
        }
        Ok(())
    }

    /// The state of request `id`, while it is here.
    pub fn sequence(&self, id: u64) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    /// Nothing queued or running.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Requests waiting for the vision encoder.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests waiting to be encoded or prefilled.
    pub fn queued(&self) -> usize {
        self.waiting.len() + self.encoded.len()
    }

    pub fn free_blocks(&self) -> usize {
        self.free_blocks.len()
    }

    /// Decide the next step (see the module doc) and take the KV blocks it needs. Errors where
    /// nothing can run but requests remain: prefilled ones wait to be handed off, or one needs
    /// more blocks than are free with nothing running to free them.
    ///
    /// Also an error while the step before has not been reported done (it failed, or the
    /// caller skipped `step_done`): what it changed is unknown.
    pub fn next_step(&mut self) -> Result<Step> {
        if let Some(step) = &self.pending {
            return Err(Error::Check(format!(
                "the scheduler's last step ({step:?}) was not reported done"
            )));
        }
        let (encode, prefill) = self.next_pass();
        let step = if !encode.is_empty() {
            let images = encode.iter().map(|id| self.seqs[id].spec.images).sum();
            self.take_pass(&encode, &prefill);
            Step::Encode {
                encode,
                images,
                prefill,
            }
        } else if self.can_import() {
            Step::Import {
                ids: self.take_imports(),
            }
        } else if !prefill.is_empty() {
            self.take_pass(&[], &prefill);
            Step::Prefill { ids: prefill }
        } else if !self.running.is_empty() {
            let ids: Vec<u64> = self.running.iter().copied().collect();
            let bucket = bucket(ids.len(), self.cfg.max_batch);
            Step::Decode { ids, bucket }
        } else if !self.prefilled.is_empty() {
            return Err(Error::Invalid(format!(
                "{} prefilled request(s) wait to be handed off (Engine::hand_off) and hold the KV blocks the next needs",
                self.prefilled.len()
            )));
        } else if let Some(id) = self
            .encoded
            .front()
            .or(self.imported.front())
            .or(self.waiting.front())
        {
            return Err(Error::Invalid(format!(
                "request {id} needs more KV blocks than the pool has"
            )));
        } else {
            Step::Idle
        };
        self.pending = Some(step.clone());
        Ok(step)
    }

    /// The step from `next_step` has been carried out: every prefilled request has its first
    /// token, every decoded one a token more. Returns the requests that finished in it (their
    /// blocks are free again), in the order of the step's ids.
    pub fn step_done(&mut self) -> Vec<u64> {
        let mut finished = Vec::new();
        match self.pending.take() {
            None | Some(Step::Idle) => {}
            Some(Step::Encode { prefill: ids, .. }) | Some(Step::Prefill { ids }) => {
                for id in ids {
                    let s = self.seq_mut(id);
                    s.len = s.spec.prompt_tokens;
                    s.generated = 1;
                    if s.generated >= s.spec.output_tokens {
                        self.finish(id);
                        finished.push(id);
                    } else if self.cfg.hand_off {
                        self.prefilled.push_back(id);
                    } else {
                        self.running.insert(id);
                    }
                }
            }
            Some(Step::Import { ids }) => self.running.extend(ids),
            Some(Step::Decode { ids, .. }) => {
                for id in ids {
                    let s = self.seq_mut(id);
                    s.len += 1;
                    s.generated += 1;
                    if s.generated >= s.spec.output_tokens {
                        self.running.remove(&id);
                        self.finish(id);
                        finished.push(id);
                    }
                }
            }
        }
        finished
    }

    /// Encode-only use (the encoder of a modality-level deployment): the next batch of waiting
    /// requests to encode (`Step::Encode`'s choice, without prefill), or None when none waits.
    pub fn take_encode_only(&mut self) -> Option<(Vec<u64>, usize)> {
        (!self.waiting.is_empty()).then(|| self.take_encode_batch())
    }

    /// Encode-only use: every encoded request leaves (handed to a prefill elsewhere).
    pub fn take_encoded(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.encoded.drain(..).collect();
        for id in &ids {
            self.seqs.remove(id);
        }
        ids
    }

    /// Prefill worker: the oldest prefilled request waiting to be handed off.
    pub fn prefilled_front(&self) -> Option<&Sequence> {
        self.prefilled.front().and_then(|id| self.seqs.get(id))
    }

    /// Prefill worker: the oldest prefilled request leaves (its KV has been gathered); its
    /// blocks are free again.
    pub fn pop_prefilled(&mut self) -> Option<Sequence> {
        let id = self.prefilled.pop_front()?;
        let s = self.seqs.remove(&id)?;
        self.free_blocks.extend(s.blocks.iter().rev());
        Some(s)
    }

    /// Whole waiting requests, oldest first, up to `encode_batch` images (at least one
    /// request); they move to the prefill queue.
    fn take_encode_batch(&mut self) -> (Vec<u64>, usize) {
        let mut ids = Vec::new();
        let mut images = 0;
        while let Some(&id) = self.waiting.front() {
            if !self.fits_encode_batch(ids.len(), images, id) {
                break;
            }
            let n = self.seqs[&id].spec.images;
            self.waiting.pop_front();
            images += n;
            ids.push(id);
        }
        self.encoded.extend(&ids);
        (ids, images)
    }

    /// The batch has room and the oldest imported request's KV fits.
    fn can_import(&self) -> bool {
        self.running.len() < self.cfg.max_batch
            && self
                .imported
                .front()
                .is_some_and(|id| self.blocks_needed(id) <= self.free_blocks.len())
    }

    /// The first request of an encode batch goes whatever its images; the others while the
    /// batch's images stay within `encode_batch`.
    fn fits_encode_batch(&self, taken: usize, images: usize, id: u64) -> bool {
        taken == 0 || images + self.seqs[&id].spec.images <= self.cfg.encode_batch
    }

    /// The next prefill pass, first come first served over the prompts ready for it (text-only
    /// or encoded) and those waiting for the encoder, the latter within one encode batch: which
    /// to encode first, and which to prefill (in arrival order). The engine encodes only what it
    /// prefills in the same step, as vLLM runs the vision tower for the requests a step
    /// schedules; images that cannot be prefilled yet wait unencoded (the simulator's
    /// `prefill_first` schedule does the same).
    fn next_pass(&self) -> (Vec<u64>, Vec<u64>) {
        let mut pass = PrefillPass::new(self);
        let (mut encode, mut prefill, mut images) = (Vec::new(), Vec::new(), 0);
        let (mut ready, mut waiting) = (
            self.encoded.iter().peekable(),
            self.waiting.iter().peekable(),
        );
        loop {
            let from_waiting = match (ready.peek(), waiting.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(a), Some(b)) => self.seqs[b].arrival < self.seqs[a].arrival,
            };
            let queue = if from_waiting {
                &mut waiting
            } else {
                &mut ready
            };
            let id = **queue.peek().expect("chosen because it is there");
            if from_waiting && !self.fits_encode_batch(encode.len(), images, id) {
                break;
            }
            if !pass.admit(self, id) {
                break;
            }
            queue.next();
            if from_waiting {
                images += self.seqs[&id].spec.images;
                encode.push(id);
            }
            prefill.push(id);
        }
        (encode, prefill)
    }

    /// Takes `next_pass`'s choice out of the queues (each a prefix of its queue), with the
    /// prompts' KV blocks.
    fn take_pass(&mut self, encode: &[u64], prefill: &[u64]) {
        self.waiting.drain(..encode.len());
        self.encoded.drain(..prefill.len() - encode.len());
        for &id in prefill {
            self.take_blocks(id);
        }
    }

    /// Imported requests that fit, their blocks taken. They join the batch only when the step
    /// is done, so they count against its room here.
    fn take_imports(&mut self) -> Vec<u64> {
        let mut ids = Vec::new();
        while self.running.len() + ids.len() < self.cfg.max_batch {
            let Some(&id) = self.imported.front() else {
                break;
            };
            if self.blocks_needed(&id) > self.free_blocks.len() {
                break;
            }
            self.imported.pop_front();
            self.take_blocks(id);
            ids.push(id);
        }
        ids
    }

    /// Tokens of KV a request holds here from prefill or import on: its whole length, or only
    /// its prompt on a prefill worker.
    fn blocks_needed(&self, id: &u64) -> usize {
        let s = &self.seqs[id].spec;
        let tokens = if self.cfg.hand_off {
            s.prompt_tokens
        } else {
            s.prompt_tokens + s.output_tokens
        };
        tokens.div_ceil(KV_BLOCK)
    }

    /// Callers check `blocks_needed` against the free blocks first.
    fn take_blocks(&mut self, id: u64) {
        let n = self.blocks_needed(&id);
        let at = self
            .free_blocks
            .len()
            .checked_sub(n)
            .expect("blocks checked against the free list before they are taken");
        let taken: Vec<i32> = self.free_blocks.drain(at..).rev().collect();
        self.seq_mut(id).blocks = taken;
    }

    fn finish(&mut self, id: u64) {
        if let Some(s) = self.seqs.remove(&id) {
            self.free_blocks.extend(s.blocks.iter().rev());
        }
    }

    fn seq_mut(&mut self, id: u64) -> &mut Sequence {
        self.seqs
            .get_mut(&id)
            .expect("a step's ids are sequences of this scheduler")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_batch: usize, kv_blocks: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_batch,
            max_context: 4096,
            prefill_tokens: 1024,
            encode_batch: 4,
            kv_blocks,
            hand_off: false,
        }
    }

    fn text(id: u64, prompt_tokens: usize, output_tokens: usize) -> SeqSpec {
        SeqSpec {
            id,
            images: 0,
            prompt_tokens,
            output_tokens,
        }
    }

    /// Runs every step to the end; the steps, each with the requests that finished in it.
    fn run(s: &mut Scheduler) -> Vec<(Step, Vec<u64>)> {
        let mut out = Vec::new();
        while !s.is_idle() {
            let step = s.next_step().unwrap();
            out.push((step, s.step_done()));
        }
        out
    }

    #[test]
    fn blocks_are_taken_for_the_whole_length_and_returned_at_the_end() {
        let mut s = Scheduler::new(config(8, 10));
        // 20 + 13 = 33 tokens: 3 blocks of 16.
        s.submit(text(1, 20, 13)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![1] });
        assert_eq!(s.sequence(1).unwrap().blocks, vec![0, 1, 2]);
        assert_eq!(s.free_blocks(), 7);
        assert!(s.step_done().is_empty());
        assert_eq!(s.sequence(1).unwrap().len, 20);
        let steps = run(&mut s);
        // 12 more tokens after the first, one a decode step; the last step finishes it.
        assert_eq!(steps.len(), 12);
        assert_eq!(steps[11].1, vec![1]);
        assert_eq!(s.free_blocks(), 10);
    }

    #[test]
    fn admission_waits_for_free_blocks() {
        // 6 blocks: request 1 takes 4 (64 tokens), request 2 needs 3 and waits for 1 to finish.
        let mut s = Scheduler::new(config(8, 6));
        s.submit(text(1, 60, 4)).unwrap();
        s.submit(text(2, 40, 2)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![1] });
        s.step_done();
        for _ in 0..2 {
            assert_eq!(
                s.next_step().unwrap(),
                Step::Decode {
                    ids: vec![1],
                    bucket: 1
                }
            );
            assert!(s.step_done().is_empty());
        }
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![1],
                bucket: 1
            }
        );
        assert_eq!(s.step_done(), vec![1]);
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![2] });
        assert_eq!(s.sequence(2).unwrap().blocks.len(), 3);
    }

    #[test]
    fn a_request_longer_than_the_pool_or_context_is_refused() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_context: 100,
            ..config(8, 4)
        });
        let e = s.submit(text(1, 90, 20)).unwrap_err().to_string();
        assert!(e.contains("110 tokens (prompt + output) exceed"), "{e}");
        let e = s.submit(text(2, 60, 10)).unwrap_err().to_string();
        assert!(
            e.contains("70 tokens do not fit the KV pool (4 blocks)"),
            "{e}"
        );
        let e = s.submit(text(3, 10, 0)).unwrap_err().to_string();
        assert!(e.contains("output tokens must be at least 1"), "{e}");
        s.submit(text(4, 10, 1)).unwrap();
        let e = s.submit(text(4, 10, 1)).unwrap_err().to_string();
        assert!(e.contains("request 4 is already queued"), "{e}");
    }

    #[test]
    fn prefill_comes_before_decode_and_fills_its_token_budget() {
        let mut s = Scheduler::new(SchedulerConfig {
            prefill_tokens: 100,
            ..config(8, 100)
        });
        s.submit(text(1, 40, 5)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![1] });
        s.step_done();
        // A new prompt goes first although request 1 could decode; 40 + 50 fit 100 tokens,
        // the third (30 more) does not and waits for the next prefill step.
        s.submit(text(2, 40, 5)).unwrap();
        s.submit(text(3, 50, 5)).unwrap();
        s.submit(text(4, 30, 5)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![2, 3] });
        s.step_done();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![4] });
        s.step_done();
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![1, 2, 3, 4],
                bucket: 4
            }
        );
    }

    #[test]
    fn a_prompt_past_the_token_budget_is_prefilled_alone() {
        let mut s = Scheduler::new(SchedulerConfig {
            prefill_tokens: 100,
            ..config(8, 100)
        });
        s.submit(text(1, 300, 1)).unwrap();
        s.submit(text(2, 10, 1)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![1] });
        // Output length 1: the prefill's token is the last.
        assert_eq!(s.step_done(), vec![1]);
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![2] });
        assert_eq!(s.step_done(), vec![2]);
        assert!(s.is_idle());
    }

    #[test]
    fn decode_batches_are_padded_to_power_of_two_buckets() {
        assert_eq!(
            (1..=9).map(|b| bucket(b, 8)).collect::<Vec<_>>(),
            vec![1, 2, 4, 4, 8, 8, 8, 8, 8]
        );
        assert_eq!(bucket(33, 48), 48);
        let mut s = Scheduler::new(config(8, 100));
        for id in 0..5 {
            s.submit(text(id, 10, 3)).unwrap();
        }
        assert_eq!(
            s.next_step().unwrap(),
            Step::Prefill {
                ids: vec![0, 1, 2, 3, 4]
            }
        );
        s.step_done();
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![0, 1, 2, 3, 4],
                bucket: 8
            }
        );
    }

    #[test]
    fn the_batch_never_passes_max_batch() {
        let mut s = Scheduler::new(config(2, 100));
        for id in 0..3 {
            s.submit(text(id, 10, 2)).unwrap();
        }
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![0, 1] });
        s.step_done();
        // The batch is full: decode, and request 2 waits until a slot frees.
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![0, 1],
                bucket: 2
            }
        );
        assert_eq!(s.step_done(), vec![0, 1]);
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![2] });
    }

    #[test]
    fn requests_finish_at_their_output_length() {
        let mut s = Scheduler::new(config(8, 100));
        s.submit(text(1, 10, 1)).unwrap();
        s.submit(text(2, 10, 3)).unwrap();
        s.submit(text(3, 10, 2)).unwrap();
        let done: Vec<Vec<u64>> = run(&mut s).into_iter().map(|(_, f)| f).collect();
        // Prefill: 1 is done (1 token); decode 1: 3 is done (2); decode 2: 2 is done (3).
        assert_eq!(done, vec![vec![1], vec![3], vec![2]]);
    }

    #[test]
    fn images_are_encoded_in_whole_requests_then_prefilled_in_the_same_step() {
        let mut s = Scheduler::new(config(8, 100));
        let img = |id, images| SeqSpec {
            id,
            images,
            prompt_tokens: 600,
            output_tokens: 2,
        };
        s.submit(img(1, 3)).unwrap();
        s.submit(img(2, 2)).unwrap();
        // 3 + 2 images pass the batch of 4: request 2 waits for the next encode.
        assert_eq!(
            s.next_step().unwrap(),
            Step::Encode {
                encode: vec![1],
                images: 3,
                prefill: vec![1]
            }
        );
        s.step_done();
        assert_eq!(
            s.next_step().unwrap(),
            Step::Encode {
                encode: vec![2],
                images: 2,
                prefill: vec![2]
            }
        );
    }

    #[test]
    fn images_wait_unencoded_while_no_prefill_can_take_them() {
        let mut s = Scheduler::new(config(1, 100));
        s.submit(text(1, 20, 3)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![1] });
        s.step_done();
        s.submit(SeqSpec {
            id: 2,
            images: 1,
            prompt_tokens: 600,
            output_tokens: 2,
        })
        .unwrap();
        // The batch of one is full: request 1 decodes, request 2's image is not encoded ahead.
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![1],
                bucket: 1
            }
        );
        assert!(s.step_done().is_empty());
        assert_eq!(s.waiting(), 1);
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![1],
                bucket: 1
            }
        );
        assert_eq!(s.step_done(), vec![1]);
        // Room again: encoded and prefilled in one step.
        assert_eq!(
            s.next_step().unwrap(),
            Step::Encode {
                encode: vec![2],
                images: 1,
                prefill: vec![2]
            }
        );
    }

    #[test]
    fn a_prefill_worker_holds_prompt_blocks_until_hand_off() {
        let mut s = Scheduler::new(SchedulerConfig {
            hand_off: true,
            ..config(8, 20)
        });
        // 32-token prompts: 2 blocks each (the output's KV lives on the decode worker).
        s.submit(text(1, 32, 100)).unwrap();
        s.submit(text(2, 32, 100)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![1, 2] });
        assert_eq!(s.free_blocks(), 16);
        assert!(s.step_done().is_empty());
        assert_eq!(s.running(), 0);
        assert_eq!(s.prefilled_front().unwrap().spec.id, 1);
        assert_eq!(s.pop_prefilled().unwrap().blocks, vec![0, 1]);
        assert_eq!(s.free_blocks(), 18);
        assert_eq!(s.pop_prefilled().unwrap().spec.id, 2);
        assert!(s.is_idle());
    }

    #[test]
    fn a_decode_worker_imports_while_there_is_room() {
        let mut s = Scheduler::new(config(2, 100));
        for id in 0..3 {
            s.submit_prefilled(text(id, 20, 3)).unwrap();
        }
        assert_eq!(s.next_step().unwrap(), Step::Import { ids: vec![0, 1] });
        assert_eq!(s.sequence(0).unwrap().len, 20);
        s.step_done();
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![0, 1],
                bucket: 2
            }
        );
        s.step_done();
        assert_eq!(
            s.next_step().unwrap(),
            Step::Decode {
                ids: vec![0, 1],
                bucket: 2
            }
        );
        // The prefill made token 1, two decodes tokens 2 and 3: done, room for request 2.
        assert_eq!(s.step_done(), vec![0, 1]);
        assert_eq!(s.next_step().unwrap(), Step::Import { ids: vec![2] });
    }

    #[test]
    fn stuck_queues_are_errors_not_hangs() {
        let mut s = Scheduler::new(SchedulerConfig {
            hand_off: true,
            ..config(8, 3)
        });
        s.submit(text(1, 32, 1)).unwrap();
        s.submit(text(2, 32, 5)).unwrap();
        s.submit(text(3, 32, 5)).unwrap();
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![1] });
        assert_eq!(s.step_done(), vec![1]);
        assert_eq!(s.next_step().unwrap(), Step::Prefill { ids: vec![2] });
        s.step_done();
        let e = s.next_step().unwrap_err().to_string();
        assert!(
            e.contains("1 prefilled request(s) wait to be handed off"),
            "{e}"
        );
    }
}
