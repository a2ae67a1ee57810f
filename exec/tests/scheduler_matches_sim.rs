//! The GPU engine's scheduler (`serve::scheduler`) against the simulator's model of it
//! (`hetsim_sim::scheduler` with `schedule: prefill_first`), step by step on the same request
//! streams: the same prefills, the same decode batches, the same requests finishing. This is
//! what makes a simulated `prefill_first` run a prediction of the engine, not of something like
//! it. Randomised streams replay from their seed.
//!
//! The comparison holds where the two are meant to agree: text requests and requests with
//! images to encode (both encode exactly what the step prefills, and nothing ahead of it),
//! whose prompts fit the prefill budget, an encode batch that does not bind (the simulator's
//! prefill step has no image cap), and a KV pool large enough that neither waits for memory. They differ by design beyond that: the engine reserves a request's whole
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
    /// Context tokens (visual ones included).
    prompt: u64,
    output: u64,
    images: usize,
}

/// What one step of either scheduler did, in the terms both share.
#[derive(Debug, PartialEq)]
enum Did {
    Idle,
    /// The prompts prefilled, and the requests whose images were encoded first.
    Prefill(Vec<u64>, Vec<u64>),
    Decode(Vec<u64>),
}

fn stream(rng: &mut Xoshiro256PlusPlus, budget: u64, with_images: bool) -> Vec<Arrival> {
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
                images: if with_images {
                    rng.random_range(0..=2)
                } else {
                    0
                },
            }
        })
        .collect()
}

fn compare(seed: u64, with_images: bool) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let max_batch = rng.random_range(1..=16);
    let budget = rng.random_range(64..=2048);
    let arrivals = stream(&mut rng, budget, with_images);
    let image = hetsim_sim::catalog::models::builtin_model("llava-1.5-7b")
        .unwrap()
        .image_tokens(336, 336)
        .unwrap();

    let mut engine = Scheduler::new(SchedulerConfig {
        max_batch: max_batch as usize,
        max_context: 4096,
        prefill_tokens: budget as usize,
        // The simulator's prefill step encodes every image it admits: no cap to match here.
        encode_batch: 1_000,
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
    let mut model = sim::Scheduler::new(KvPool::new(16, 100_000), with_images, true);
    let mut seqs = Sequences::new();

    let mut next = 0;
    let mut finished = 0;
    for step in 0.. {
        while next < arrivals.len() && arrivals[next].step <= step {
            let a = arrivals[next];
            engine
                .submit(SeqSpec {
                    id: a.id,
                    images: a.images,
                    prompt_tokens: a.prompt as usize,
                    output_tokens: a.output as usize,
                })
                .unwrap();
            let images = vec![image; a.images];
            seqs.insert(a.id, Sequence::with_images(a.prompt, a.output, images));
            model.admit(a.id);
            next += 1;
        }

        let ours = match engine.next_step().unwrap() {
            Step::Idle => Did::Idle,
            Step::Prefill { ids } => Did::Prefill(ids, Vec::new()),
            Step::Encode {
                encode, prefill, ..
            } => Did::Prefill(prefill, encode),
            Step::Decode { ids, .. } => Did::Decode(ids),
            other => panic!("seed {seed}: a colocated stream made the engine {other:?}"),
        };
        let plan = model.plan_step(&mut seqs, &spec);
        assert!(plan.preemptions() == 0, "seed {seed}: the model preempted");
        let theirs = match (&plan.prefill_chunks[..], &plan.decodes[..]) {
            ([], []) => Did::Idle,
            (chunks, []) => Did::Prefill(
                chunks.iter().map(|&(id, _)| id).collect(),
                plan.encode.clone(),
            ),
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
        compare(seed, false);
    }
}

/// With images: both encode exactly the requests the step prefills, nothing ahead of admission.
#[test]
fn with_images_both_encode_what_they_prefill_in_the_same_step() {
    for seed in 0..300 {
        compare(seed, true);
    }
}
