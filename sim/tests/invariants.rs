//! Randomised scenarios checked against the engine's invariants, end state included (every KV
//! pool empty, every instance idle, every byte sent received). The cases vary strategy, model
//! (vision and text-only), dtype, GPUs, fabric, engine limits tight enough to force preemption
//! and queueing, synthetic and trace workloads, long prompts without chunked prefill, and the
//! measured hardware profile.
//!
//! Each run draws a fresh base seed (case `i` is seed `base + i`) unless `HETSIM_SEED` sets it;
//! `HETSIM_CASES` sets how many (600 by default). A failure is shrunk to a small experiment
//! (fewer requests and instances, simpler workload) that still fails, and printed with the
//! command that replays it. `cargo test -p hetsim-sim --test invariants -- --ignored` runs
//! 10,000 cases.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hetsim_sim::engine::simulate;
use hetsim_sim::experiment::{Scenario, Strategy, parse_experiment};
use hetsim_sim::records::{DropReason, MemorySink, RequestRecord, RequestStatus};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// Where requests come from.
#[derive(Clone, Debug, PartialEq)]
enum Load {
    Synthetic {
        rate: f64,
        /// Gamma arrivals of this coefficient of variation; Poisson without.
        cv: Option<f64>,
        /// No images (a text workload; the only kind a text-only model takes).
        text: bool,
        /// Prompts of thousands of tokens, past small token budgets.
        long_prompts: bool,
    },
    /// A shipped trace, replayed `time_scale` times slower (`requests` rows of it).
    Trace { file: &'static str, time_scale: f64 },
}

/// One generated experiment, as parameters: `render` writes it, `shrink` simplifies it.
#[derive(Clone, Debug, PartialEq)]
struct Case {
    seed: u64,
    strategy: &'static str,
    model: &'static str,
    big: &'static str,
    enc_gpu: &'static str,
    dtype: &'static str,
    util: f64,
    fabric: &'static str,
    two_nodes: bool,
    tp: u32,
    /// Instances of each role slot of the strategy (encoder/prefill/decode, or one).
    counts: [u32; 2],
    load: Load,
    requests: u64,
    budget: u64,
    max_batch: u64,
    chunked: bool,
    kv_transfer: &'static str,
    routing: &'static str,
    stealing: bool,
    horizon: bool,
    network: &'static str,
    sharing: &'static str,
    schedule: &'static str,
    encoder_batch: u64,
    /// The 4×H200 calibration with llava-1.5-7b's measured phase table.
    profile: bool,
}

const TEXT_MODELS: [&str; 2] = ["vicuna-7b-v1.5", "llama-3.1-8b"];
const PROFILE: &str = "profiles/h200x4-2026-11-21-llava-1.5-7b.yaml";

fn pick<T: Copy>(rng: &mut Xoshiro256PlusPlus, from: &[T]) -> T {
    from[rng.random_range(0..from.len())]
}

fn generate(seed: u64) -> Case {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let r = &mut rng;
    let (model, big) = pick(
        r,
        &[
            ("llava-1.5-7b", "A100-SXM-80GB"),
            ("qwen2.5-vl-7b", "H100-SXM"),
            ("llava-1.5-7b", "RTX-4090"),
            ("llava-1.5-7b", "H200-SXM"),
            ("vicuna-7b-v1.5", "A100-SXM-80GB"),
            ("llama-3.1-8b", "H100-SXM"),
        ],
    );
    let text_only = TEXT_MODELS.contains(&model);
    let strategy = if text_only {
        pick(r, &["colocated", "stage"])
    } else {
        pick(r, &["colocated", "stage", "modality", "epd"])
    };
    // fp32 weights of a 7B model do not fit a 24 GiB card.
    let dtype = if big == "RTX-4090" {
        pick(r, &["bf16", "fp16", "fp8"])
    } else {
        pick(r, &["bf16", "fp16", "fp8", "fp32", "bf16"])
    };
    // On a 24 GiB card, a tight memory share leaves room for only a few thousand KV tokens;
    // fp32 weights of a 7B model take 30 GiB of an 80 GiB card.
    let util = if big == "RTX-4090" {
        r.random_range(0.66..0.75)
    } else if dtype == "fp32" {
        r.random_range(0.6..0.9)
    } else {
        r.random_range(0.3..0.9)
    };
    let enc_gpu = pick(r, &["RTX-4090", big]);
    let load = if r.random_bool(0.25) {
        Load::Trace {
            // The JSONL trace carries images; the Splitwise one is text.
            file: if text_only || r.random_bool(0.3) {
                "traces/splitwise_conv.csv"
            } else {
                "traces/sample.jsonl"
            },
            time_scale: r.random_range(0.2..5.0),
        }
    } else {
        let rate = r.random_range(1.0..40.0);
        Load::Synthetic {
            rate,
            cv: r.random_bool(0.5).then(|| r.random_range(0.5..4.0)),
            text: text_only || r.random_bool(0.1),
            long_prompts: r.random_bool(0.15),
        }
    };
    let chunked = r.random_bool(0.7);
    Case {
        seed,
        strategy,
        model,
        big,
        enc_gpu,
        dtype,
        util,
        // Every node has GeForce cards, which lack peer-to-peer: PCIe is staged through the host.
        fabric: pick(
            r,
            &[
                "pcie4-host-staged",
                "pcie3-host-staged",
                "pcie5-host-staged",
                "default",
            ],
        ),
        two_nodes: r.random_bool(0.3),
        tp: if big != "RTX-4090" && r.random_bool(0.25) {
            2
        } else {
            1
        },
        counts: [r.random_range(1..=2), r.random_range(1..=2)],
        load,
        requests: r.random_range(20..250),
        budget: pick(r, &[512, 2048, 8192]),
        max_batch: pick(r, &[4, 32, 256]),
        chunked,
        kv_transfer: pick(r, &["after_prefill", "layerwise"]),
        routing: pick(r, &["round_robin", "least_loaded"]),
        // Stealing encoders hold the LLM too: only where the model fits them, i.e. on the LLM's
        // GPU type.
        stealing: strategy == "modality" && enc_gpu == big && r.random_bool(0.5),
        horizon: r.random_bool(0.2),
        network: pick(r, &["100gbe", "ib-ndr", "25gbe"]),
        sharing: pick(r, &["fair", "fifo"]),
        schedule: pick(r, &["mixed", "prefill_first"]),
        encoder_batch: r.random_range(1..40),
        profile: model == "llava-1.5-7b" && dtype == "bf16" && r.random_bool(0.3),
    }
}

fn render(c: &Case) -> String {
    let fabric = if c.fabric == "default" {
        String::new()
    } else {
        format!(", fabric: {}", c.fabric)
    };
    let big = c.big;
    let mut nodes = format!(
        "      - {{name: n0, gpus: [{{gpu: {big}, count: 8}}, {{gpu: RTX-4090, count: 2}}]{fabric}}}\n"
    );
    if c.two_nodes {
        nodes.push_str(&format!(
            "      - {{name: n1, gpus: [{{gpu: {big}, count: 8}}]{fabric}}}\n"
        ));
    }
    let far = if c.two_nodes { "n1" } else { "n0" };
    let mut instances = String::new();
    let mut push = |role: &str, gpu: &str, tp: u32, n: u32, node: &str| {
        instances.push_str(&format!(
            "        - {{role: {role}, gpu: {gpu}, tp: {tp}, count: {n}, node: {node}}}\n"
        ));
    };
    let [a, b] = c.counts;
    match c.strategy {
        "colocated" => push("all", big, c.tp, a, "n0"),
        "stage" => {
            push("prefill", big, c.tp, a, "n0");
            push("decode", big, c.tp, b, far);
        }
        "modality" => {
            push("encoder", c.enc_gpu, 1, a, "n0");
            push("llm", big, c.tp, b, far);
        }
        _ => {
            push("encoder", c.enc_gpu, 1, 1, "n0");
            push("prefill", big, c.tp, 1, "n0");
            push("decode", big, c.tp, b, far);
        }
    }
    let workload = match &c.load {
        Load::Synthetic {
            rate,
            cv,
            text,
            long_prompts,
        } => {
            let arrival = match cv {
                None => format!("{{process: poisson, rate: {rate:.3}}}"),
                Some(cv) => format!("{{process: gamma, rate: {rate:.3}, cv: {cv:.2}}}"),
            };
            let images = if *text {
                "{count: 0}".to_string()
            } else {
                "{count: {dist: choice, values: [0, 1, 2, 3], weights: [1, 4, 2, 1]}, width: {dist: uniform, min: 200, max: 1600}, height: {dist: uniform, min: 200, max: 1200}}".to_string()
            };
            let prompts = if *long_prompts {
                "{dist: uniform, min: 1000, max: 6000}"
            } else {
                "{dist: lognormal, median: 60, sigma: 1.2, min: 1, max: 3000}"
            };
            format!(
                "      requests: {}\n      arrival: {arrival}\n      images: {images}\n      prompt_tokens: {prompts}\n      output_tokens: {{dist: uniform, min: 1, max: 600}}\n",
                c.requests
            )
        }
        Load::Trace { file, time_scale } => format!(
            "      requests: {}\n      trace: {{path: {file}, time_scale: {time_scale:.3}}}\n",
            c.requests
        ),
    };
    let profile = if c.profile {
        format!("profile: {PROFILE}\n")
    } else {
        String::new()
    };
    let horizon = if c.horizon {
        "    run: {horizon_s: 5}\n"
    } else {
        ""
    };
    format!(
        "name: random{seed}\nseed: {seed}\n{profile}scenarios:\n  - name: s\n    model: {model}\n    dtype: {dtype}\n    cluster:\n      network: {net}\n      link_sharing: {sharing}\n      nodes:\n{nodes}    deployment:\n      strategy: {strategy}\n      routing: {routing}\n      kv_transfer: {kv}\n      work_stealing: {stealing}\n      instances:\n{instances}    engine: {{token_budget: {budget}, max_batch: {max_batch}, memory_utilization: {util:.3}, chunked_prefill: {chunked}, encoder_batch_images: {eb}, schedule: {schedule}}}\n    workload:\n{workload}{horizon}",
        seed = c.seed,
        model = c.model,
        dtype = c.dtype,
        net = c.network,
        sharing = c.sharing,
        strategy = c.strategy,
        routing = c.routing,
        kv = c.kv_transfer,
        stealing = c.stealing,
        budget = c.budget,
        max_batch = c.max_batch,
        util = c.util,
        chunked = c.chunked,
        eb = c.encoder_batch,
        schedule = c.schedule,
    )
}

/// Why a case failed: the generator made an experiment validation refuses (a bug of this test
/// or of validation), or the engine broke an invariant (or panicked).
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Rejected(String),
    Violated(String),
}

/// `Err(what)` unless `cond` (a NaN compared is false, so it fails too).
macro_rules! ensure {
    ($cond:expr, $($what:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($what)*));
        }
    };
}

/// Relative paths (trace, profile) resolve from the repository root.
fn experiment_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("random.yaml")
}

fn run(c: &Case) -> Result<(), Failure> {
    let yaml = render(c);
    let exp = parse_experiment(&yaml, &experiment_path(), None)
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    for s in &exp.scenarios {
        let simulated = catch_unwind(AssertUnwindSafe(|| {
            let mut sink = MemorySink::default();
            simulate(s, &mut sink, &mut |_| {}).map(|run| (run, sink))
        }));
        let (run, sink) = match simulated {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(Failure::Violated(format!("simulate failed: {e}"))),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(Failure::Violated(format!("the engine panicked: {what}")));
            }
        };
        end_state(s, &run.invariants, &sink).map_err(Failure::Violated)?;
        for r in sink
            .requests
            .iter()
            .filter(|r| r.status == RequestStatus::Finished)
        {
            request(s, r).map_err(Failure::Violated)?;
        }
    }
    Ok(())
}

/// What must hold when the run is over.
fn end_state(
    s: &Scenario,
    inv: &hetsim_sim::engine::Invariants,
    sink: &MemorySink,
) -> Result<(), String> {
    ensure!(inv.stalled == 0, "requests stalled: {inv:?}");
    ensure!(inv.finished + inv.dropped == inv.arrived, "{inv:?}");
    ensure!(sink.requests.len() as u64 == inv.arrived, "{inv:?}");
    ensure!(inv.peak_kv_fraction <= 1.0, "{inv:?}");
    // Every request gone, finished or dropped (at the horizon too), gave its KV back.
    ensure!(inv.kv_blocks_left == 0, "KV blocks leaked: {inv:?}");
    // A flow's completion comes when its rate says it has moved all its bytes.
    ensure!(
        inv.max_flow_remaining_bytes < 0.5,
        "a flow completed early: {inv:?}"
    );
    // Nothing arrives that was not sent, and a transfer row is written once all its flows
    // arrived: at the horizon, a transfer whose flows arrived in part has none yet.
    let shipped: u64 = sink.transfers.iter().map(|t| t.bytes).sum();
    ensure!(
        shipped <= inv.bytes_received && inv.bytes_received <= inv.bytes_sent,
        "transfer rows {shipped}: {inv:?}"
    );
    if s.run.horizon_s.is_none() {
        // A trace may hold fewer rows than `requests` asks for.
        let asked = s.workload.requests.unwrap_or(u64::MAX);
        let all_arrived = if s.workload.trace.is_some() {
            inv.arrived <= asked
        } else {
            inv.arrived == asked
        };
        ensure!(all_arrived, "{asked} requests asked: {inv:?}");
        ensure!(inv.busy_instances_left == 0, "work left behind: {inv:?}");
        // Received bytes are what the flows moved, so this fails if a flow ends early or
        // never ends.
        ensure!(
            inv.bytes_sent == inv.bytes_received && shipped == inv.bytes_received,
            "bytes lost (transfer rows {shipped}): {inv:?}"
        );
        let bad = sink.requests.iter().find(|r| {
            !matches!(
                r.status,
                RequestStatus::Finished
                    | RequestStatus::Dropped(
                        DropReason::KvCapacity | DropReason::PromptOverTokenBudget
                    )
            )
        });
        ensure!(bad.is_none(), "unexpected status: {bad:?}");
    }
    Ok(())
}

/// What must hold for every finished request.
fn request(s: &Scenario, r: &RequestRecord) -> Result<(), String> {
    // Time never runs backwards along a request's life.
    let stages = [
        Some(r.arrival_s),
        r.encode_start_s,
        r.encode_end_s,
        r.emb_transfer_start_s,
        r.emb_transfer_end_s,
        r.prefill_end_s,
        r.kv_transfer_end_s,
        r.finish_s,
    ];
    let mut last = 0.0;
    for t in stages.into_iter().flatten() {
        ensure!(t >= last - 1e-12, "times out of order: {r:?}");
        last = t;
    }
    ensure!(
        r.prefill_start_s.unwrap() <= r.prefill_end_s.unwrap(),
        "{r:?}"
    );
    let llm = &s.model.llm;
    let ctx_tokens = r.visual_tokens + r.prompt_tokens;
    let kv = match s.strategy {
        Strategy::Stage | Strategy::Epd if r.output_tokens > 1 => llm.kv_bytes(ctx_tokens, s.dtype),
        _ => 0,
    };
    ensure!(r.kv_bytes == kv, "KV bytes, expected {kv}: {r:?}");
    let emb = match s.strategy {
        // A stealing encoder that keeps a request ships nothing.
        Strategy::Modality
            if r.encoder_instance.is_some() && r.encoder_instance == r.prefill_instance =>
        {
            0
        }
        Strategy::Modality | Strategy::Epd => s.model.emb_bytes(r.visual_tokens, s.dtype),
        _ => 0,
    };
    ensure!(r.emb_bytes == emb, "embedding bytes, expected {emb}: {r:?}");
    ensure!(
        r.ttft_s.unwrap() > 0.0 && r.e2e_s.unwrap() >= r.ttft_s.unwrap(),
        "{r:?}"
    );
    Ok(())
}

/// Simpler variants of `c`, each one step smaller.
fn simpler(c: &Case) -> Vec<Case> {
    let mut v = Vec::new();
    let mut try_ = |f: &dyn Fn(&mut Case)| {
        let mut d = c.clone();
        f(&mut d);
        if d != *c {
            v.push(d);
        }
    };
    try_(&|d| d.requests = (d.requests / 2).max(1));
    try_(&|d| d.requests = d.requests.saturating_sub(1).max(1));
    try_(&|d| d.horizon = false);
    try_(&|d| d.counts = [1, 1]);
    try_(&|d| d.two_nodes = false);
    try_(&|d| d.tp = 1);
    try_(&|d| d.profile = false);
    try_(&|d| d.stealing = false);
    try_(&|d| d.kv_transfer = "after_prefill");
    try_(&|d| d.dtype = "bf16");
    try_(&|d| d.fabric = "default");
    try_(&|d| d.strategy = "colocated");
    try_(&|d| {
        if let Load::Synthetic { cv, .. } = &mut d.load {
            *cv = None;
        }
    });
    try_(&|d| {
        if let Load::Synthetic { long_prompts, .. } = &mut d.load {
            *long_prompts = false;
        }
    });
    v
}

/// Shrinks a failing case: takes simpler variants that fail the same way until none does.
fn shrink(mut c: Case, mut failure: Failure) -> (Case, Failure) {
    let same_kind = |a: &Failure, b: &Failure| {
        matches!(
            (a, b),
            (Failure::Rejected(_), Failure::Rejected(_))
                | (Failure::Violated(_), Failure::Violated(_))
        )
    };
    'smaller: loop {
        for d in simpler(&c) {
            if let Err(f) = run(&d)
                && same_kind(&f, &failure)
            {
                (c, failure) = (d, f);
                continue 'smaller;
            }
        }
        return (c, failure);
    }
}

fn base_seed() -> u64 {
    match std::env::var("HETSIM_SEED") {
        Ok(s) => s.parse().expect("HETSIM_SEED is a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// Runs `cases` cases from the base seed in parallel; on a failure, shrinks the first one
/// found and panics with it and how to replay it.
fn check_cases(default_cases: u64) {
    let base = base_seed();
    let cases: u64 = std::env::var("HETSIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    // Printed always: cargo shows it with the failure, which is when it matters.
    println!("base seed {base}, {cases} cases");
    let failed = (0..cases).into_par_iter().find_map_any(|i| {
        let c = generate(base.wrapping_add(i));
        run(&c).err().map(|f| (c, f))
    });
    if let Some((c, f)) = failed {
        let seed = c.seed;
        let (small, why) = shrink(c, f);
        panic!(
            "case seed {seed} failed; replay: HETSIM_SEED={seed} HETSIM_CASES=1 cargo test -p \
             hetsim-sim --test invariants\nshrunk to:\n{}\n{why:?}",
            render(&small)
        );
    }
}

#[test]
fn random_scenarios_keep_every_invariant() {
    check_cases(600);
}

#[test]
#[ignore = "10,000 cases, a few minutes: run by hand before a release"]
fn ten_thousand_random_scenarios_keep_every_invariant() {
    check_cases(10_000);
}

#[test]
fn shrinking_keeps_a_failure_and_makes_it_smaller() {
    // A stand-in failure: an experiment validation refuses (a fraction of memory above 1).
    let mut c = generate(5);
    c.util = 1.5;
    let f = run(&c).unwrap_err();
    assert!(matches!(f, Failure::Rejected(_)), "{f:?}");
    let (small, f) = shrink(c.clone(), f);
    assert!(matches!(f, Failure::Rejected(_)), "{f:?}");
    assert_eq!(small.requests, 1, "{small:?}");
    assert_eq!(small.strategy, "colocated");
    assert!(small.util > 1.0);
}

#[test]
fn same_seed_same_rows() {
    for seed in [3, 11, 29] {
        let yaml = render(&generate(seed));
        let run = || {
            let exp = parse_experiment(&yaml, &experiment_path(), None).unwrap();
            let mut sink = MemorySink::default();
            let res = simulate(&exp.scenarios[0], &mut sink, &mut |_| {}).unwrap();
            (sink.requests, sink.transfers, res.summary)
        };
        assert_eq!(run(), run(), "seed {seed}");
    }
}
