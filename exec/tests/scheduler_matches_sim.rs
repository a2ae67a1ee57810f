//! The GPU engine's scheduler (`serve::scheduler`) against the simulator's model of it
//! (`hetsim_sim::scheduler` with `schedule: prefill_first`), step by step on the same request
//! streams: the same prefills, the same decode batches, the same requests finishing. This is
//! what makes a simulated `prefill_first` run a prediction of the engine, not of something like
//! it. Randomised streams replay from their seed.
//!
//! The comparison holds where the two are meant to agree: text requests (or requests encoded
//! elsewhere) whose prompts fit the prefill budget, and a KV pool large enough that neither
//! waits for memory. They differ by design beyond that: the engine reserves a request's whole
//! length at admission and never preempts, while the simulator (as vLLM) grows a sequence's
//! blocks as it decodes and preempts the newest when they run out; the engine also takes a
//! first prompt longer than the budget, which the simulator's experiment validation refuses.

use hetsim_exec::serve::scheduler::{Scheduler, SchedulerConfig, SeqSpec, Step};
use hetsim_sim::engine_spec::{EngineSpec, Schedule};
use hetsim_sim::kv::KvPool;
use hetsim_sim::scheduler::{self as sim, Next, Sequence, Sequences};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A request of the stream: the step before which it arrives, and its lengths.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    step: u64,
    id: u64,
    prompt: u64,
    output: u64,
}

/// What one step of either scheduler did, in the terms both share.
#[derive(Debug, PartialEq)]
enum Did {
    Idle,
    Prefill(Vec<u64>),
    Decode(Vec<u64>),
}

fn stream(rng: &mut Xoshiro256PlusPlus, budget: u64) -> Vec<Arrival> {
    let n = rng.random_range(1..40);
    let mut step = 0;
    (0..n)
        .map(|id| {
            step += rng.random_range(0..4);
            Arrival {
                step,
                id,
                prompt: rng.random_range(1..=budget.min(700)),
                output: rng.random_range(1..60),
            }
        })
        .collect()
}

fn compare(seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let max_batch = rng.random_range(1..=16);
    let budget = rng.random_range(64..=2048);
    let arrivals = stream(&mut rng, budget);

    let mut engine = Scheduler::new(SchedulerConfig {
        max_batch: max_batch as usize,
        max_context: 4096,
        prefill_tokens: budget as usize,
        encode_batch: 8,
        kv_blocks: 100_000,
        hand_off: false,
    });
    let spec = EngineSpec {
        schedule: Schedule::PrefillFirst,
        token_budget: budget,
        max_batch,
        chunked_prefill: false,
        ..EngineSpec::default()
    };
    let mut model = sim::Scheduler::new(KvPool::new(16, 100_000), false, true);
    let mut seqs = Sequences::new();

    let mut next = 0;
    let mut finished = 0;
    for step in 0.. {
        while next < arrivals.len() && arrivals[next].step <= step {
            let a = arrivals[next];
            engine
                .submit(SeqSpec {
                    id: a.id,
                    images: 0,
                    prompt_tokens: a.prompt as usize,
                    output_tokens: a.output as usize,
                })
                .unwrap();
            seqs.insert(a.id, Sequence::new(a.prompt, a.output));
            model.admit(a.id);
            next += 1;
        }

        let ours = match engine.next_step().unwrap() {
            Step::Idle => Did::Idle,
            Step::Prefill { ids } => Did::Prefill(ids),
            Step::Decode { ids, .. } => Did::Decode(ids),
            other => panic!("seed {seed}: a text stream made the engine {other:?}"),
        };
        let plan = model.plan_step(&mut seqs, &spec);
        assert!(plan.preemptions() == 0, "seed {seed}: the model preempted");
        let theirs = match (&plan.prefill_chunks[..], &plan.decodes[..]) {
            ([], []) => Did::Idle,
            (chunks, []) => Did::Prefill(chunks.iter().map(|&(id, _)| id).collect()),
            ([], decodes) => Did::Decode(decodes.to_vec()),
            _ => panic!("seed {seed}: prefill_first mixed prefills and decodes: {plan:?}"),
        };
        assert_eq!(ours, theirs, "seed {seed}, step {step}");

        let mut done_here = engine.step_done();
        let outcome = model.complete_step(&mut seqs, &plan);
        let mut model_done = outcome.finished.clone();
        model_done.extend(
            outcome
                .prefilled
                .iter()
                .filter(|p| p.next == Next::Finished)
                .map(|p| p.id),
        );
        for id in &model_done {
            seqs.remove(id);
        }
        done_here.sort_unstable();
        model_done.sort_unstable();
        assert_eq!(done_here, model_done, "seed {seed}, step {step}: finished");
        finished += done_here.len();

        if next == arrivals.len() && engine.is_idle() {
            assert!(model.is_idle(), "seed {seed}: the model has work left");
            break;
        }
    }
    assert_eq!(finished, arrivals.len(), "seed {seed}");
    assert_eq!(model.kv.used_blocks(), 0, "seed {seed}");
}

#[test]
fn engine_scheduler_matches_the_simulators_prefill_first() {
    for seed in 0..300 {
        compare(seed);
    }
}
