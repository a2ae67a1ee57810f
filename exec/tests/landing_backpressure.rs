//! The two-GPU replay's back-pressure on the CPU: the real schedulers of both workers
//! (`serve::scheduler`) and the replay's landing window and pool (`serve::landing`) driven by an
//! overloaded trace in simulated time, with no GPU. The upstream worker (prefill worker, or
//! encoder) is far faster than the downstream one (decode worker, or LLM), so requests pile up
//! between them. With the window, the landing buffers on the downstream GPU stay within it and
//! every request is still served; without it (an unlimited window, as the replay was before),
//! they grow with the backlog to tens of GiB, which on the GPU is a cuMemAlloc failure.

use std::collections::{BTreeMap, VecDeque};

use hetsim_exec::serve::landing::{self, Landed, Pool, Window};
use hetsim_exec::serve::scheduler::{Scheduler, SchedulerConfig, SeqSpec, Step};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// LLaVA-1.5-7B: KV bytes per token (2 · 32 layers · 4096 · bf16) and one image's embeddings
/// (576 rows of 4096 · bf16).
const KV_PER_TOKEN: u64 = 2 * 32 * 4096 * 2;
const EMB_PER_IMAGE: u64 = 576 * 4096 * 2;
const TICK_S: f64 = 0.005;

#[derive(Clone, Copy, PartialEq)]
enum Split {
    /// Prefill worker → decode worker, packed KV of the longest prompt's size.
    Stage,
    /// Encoder → LLM worker, embeddings of exactly the request's images.
    Modality,
}

struct Buf(u64);

impl Landed for Buf {
    fn bytes(&self) -> u64 {
        self.0
    }
}

fn scheduler(kv_blocks: usize, max_batch: usize, hand_off: bool) -> Scheduler {
    Scheduler::new(SchedulerConfig {
        max_batch,
        max_context: 4096,
        prefill_tokens: 8192,
        encode_batch: 8,
        kv_blocks,
        hand_off,
    })
}

/// Arrivals at `rate` per second (Poisson): 1–4 images, prompts of 15–25 text tokens.
fn trace(seed: u64, n: u64, rate: f64, split: Split) -> Vec<(f64, SeqSpec)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut t = 0.0;
    (0..n)
        .map(|id| {
            t += -(1.0 - rng.random::<f64>()).ln() / rate;
            let images = rng.random_range(1..=4);
            let text = rng.random_range(15..=25);
            let spec = SeqSpec {
                id,
                // Stage-level: the prefill worker encodes too. Modality: the encoder does.
                images: if split == Split::Stage { 0 } else { images },
                prompt_tokens: images * 576 + text,
                output_tokens: rng.random_range(32..=96),
            };
            (t, spec)
        })
        .collect()
}

struct Outcome {
    /// Peak bytes of landing buffers allocated on the downstream GPU.
    landing_peak: u64,
    window: u64,
    finished: usize,
}

/// The replay's link as the two workers see it: the window, the landing pool on the downstream
/// GPU, and each request's landing buffer until the downstream has read it.
struct Link {
    window: Window,
    pool: Pool<Buf>,
    landed: BTreeMap<u64, Buf>,
}

impl Link {
    /// Hands request `id`'s `bytes` over if the window has room.
    fn hand_over(&mut self, id: u64, bytes: u64, exact: bool) -> bool {
        if !self.window.try_reserve(bytes) {
            return false;
        }
        let buf = self
            .pool
            .get(bytes, exact, |n| Ok::<_, ()>(Buf(n)))
            .unwrap();
        self.landed.insert(id, buf);
        true
    }

    /// The downstream has read request `id`'s buffer: back to the pool, room in the window.
    fn give_back(&mut self, id: u64) {
        let buf = self.landed.remove(&id).expect("landed before it was read");
        self.window.release(buf.0);
        self.pool.put(buf);
    }
}

/// A worker's step in flight: what it is and when it ends.
struct Busy {
    until: f64,
    step: Step,
}

/// Serves `trace` with the upstream and downstream workers in simulated time (steps of fixed
/// lengths: the downstream decodes slowly), handing requests over through `window` and landing
/// them in a pool limited to it.
fn serve(trace: &[(f64, SeqSpec)], split: Split, limit: Option<u64>) -> Outcome {
    let longest = trace.iter().map(|(_, s)| s.prompt_tokens).max().unwrap() as u64;
    let kv_capacity = longest * KV_PER_TOKEN;
    let largest = match split {
        Split::Stage => kv_capacity,
        Split::Modality => 4 * EMB_PER_IMAGE,
    };
    let limit = limit.unwrap_or(landing::window_bytes(largest));
    let mut link = Link {
        window: Window::new(limit),
        pool: Pool::new(limit),
        landed: BTreeMap::new(),
    };
    // The prefill worker holds a few prompts' KV; the encoder none.
    let mut up = scheduler(4 * 2400 / 16, 8, split == Split::Stage);
    let mut down = scheduler(16 * 2600 / 16, 16, false);
    let (mut up_busy, mut down_busy): (Option<Busy>, Option<Busy>) = (None, None);
    let mut held: VecDeque<SeqSpec> = VecDeque::new();
    let specs: BTreeMap<u64, SeqSpec> = trace.iter().map(|(_, s)| (s.id, *s)).collect();
    let (mut next, mut finished) = (0, 0);
    for tick in 0..2_000_000u64 {
        let now = tick as f64 * TICK_S;
        while next < trace.len() && trace[next].0 <= now {
            up.submit(trace[next].1).unwrap();
            next += 1;
        }
        // Upstream: finish its step, hand over what it can, start the next step.
        if up_busy.as_ref().is_some_and(|b| b.until <= now) {
            up_busy = None;
            up.step_done();
        }
        match split {
            Split::Stage => {
                while let Some(s) = up.prefilled_front() {
                    let spec = s.spec;
                    if !link.hand_over(spec.id, kv_capacity, false) {
                        break;
                    }
                    up.pop_prefilled();
                    down.submit_prefilled(spec).unwrap();
                }
                if up_busy.is_none() {
                    // An error: every block is held by prompts waiting for the window.
                    if let Ok(step) = up.next_step() {
                        let until = now + if step == Step::Idle { 0.0 } else { 0.030 };
                        up_busy = Some(Busy { until, step });
                    }
                }
            }
            Split::Modality => {
                if up_busy.is_none() {
                    held.extend(up.take_encoded().iter().map(|id| specs[id]));
                    // The encoder holds its output while the window is full, and encodes
                    // nothing more until it has handed all of it over.
                    while let Some(&spec) = held.front() {
                        let bytes = spec.images as u64 * EMB_PER_IMAGE;
                        if !link.hand_over(spec.id, bytes, true) {
                            break;
                        }
                        held.pop_front();
                        down.submit_encoded(spec).unwrap();
                    }
                    let next_batch = held.is_empty().then(|| up.take_encode_only()).flatten();
                    if let Some((encode, images)) = next_batch {
                        let step = Step::Encode {
                            encode,
                            images,
                            prefill: Vec::new(),
                        };
                        up_busy = Some(Busy {
                            until: now + 0.010,
                            step,
                        });
                    }
                }
            }
        }
        // Downstream: what its finished step read is given back, then the next step.
        if let Some(b) = down_busy.take_if(|b| b.until <= now) {
            let read = match &b.step {
                Step::Import { ids } | Step::Prefill { ids } => ids.clone(),
                _ => Vec::new(),
            };
            for id in read {
                link.give_back(id);
            }
            finished += down.step_done().len();
        }
        if down_busy.is_none() {
            let step = down.next_step().unwrap();
            let took = match step {
                Step::Idle => 0.0,
                Step::Import { .. } => 0.002,
                Step::Prefill { .. } => 0.040,
                _ => 0.025,
            };
            down_busy = Some(Busy {
                until: now + took,
                step,
            });
        }
        if finished == trace.len() {
            return Outcome {
                landing_peak: link.pool.peak(),
                window: limit,
                finished,
            };
        }
    }
    panic!(
        "not served in simulated time: {finished}/{} finished",
        trace.len()
    );
}

#[test]
fn the_landing_window_bounds_the_downstream_buffers_under_overload() {
    const GIB: f64 = (1u64 << 30) as f64;
    for split in [Split::Stage, Split::Modality] {
        for seed in 1..=4 {
            // 40 req/s against a downstream that serves a few: overloaded throughout.
            let t = trace(seed, 600, 40.0, split);
            let bounded = serve(&t, split, None);
            let unbounded = serve(&t, split, Some(u64::MAX));
            let name = if split == Split::Stage {
                "stage"
            } else {
                "modality"
            };
            println!(
                "{name} seed {seed}: landing peak {:.2} GiB within a {:.2} GiB window; {:.1} GiB without",
                bounded.landing_peak as f64 / GIB,
                bounded.window as f64 / GIB,
                unbounded.landing_peak as f64 / GIB
            );
            assert_eq!(bounded.finished, t.len(), "{name} seed {seed}");
            assert!(bounded.landing_peak <= bounded.window, "{name} seed {seed}");
            assert!(
                unbounded.landing_peak > 5 * bounded.window,
                "{name} seed {seed}: the trace does not overload ({} bytes)",
                unbounded.landing_peak
            );
        }
    }
}
