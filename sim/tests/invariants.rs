//! Randomised scenarios from seeds, checked against the engine's invariants. A failure prints the
//! seed and the experiment; `HETSIM_SEED=<n> cargo test -p hetsim-sim --test invariants` replays
//! that one, `HETSIM_CASES=<n>` runs more.

use std::path::Path;

use hetsim_sim::catalog::Dtype;
use hetsim_sim::engine::simulate;
use hetsim_sim::experiment::{Strategy, parse_experiment};
use hetsim_sim::records::{DropReason, MemorySink, RequestStatus};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A random but valid experiment: strategy, GPUs, fabric, engine limits tight enough to force
/// preemption and queueing, workload with varied images and lengths.
fn random_experiment(seed: u64) -> String {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let strategy = ["colocated", "stage", "modality", "epd"][rng.random_range(0..4)];
    let (model, big) = [
        ("llava-1.5-7b", "A100-SXM-80GB"),
        ("qwen2.5-vl-7b", "H100-SXM"),
        ("llava-1.5-7b", "RTX-4090"),
    ][rng.random_range(0..3)];
    // On a 24 GiB card, a tight memory share leaves room for only a few thousand KV tokens.
    let util = if big == "RTX-4090" {
        rng.random_range(0.66..0.75)
    } else {
        rng.random_range(0.3..0.9)
    };
    // Every node has GeForce cards, which lack peer-to-peer: PCIe is staged through the host.
    let fabric = [
        "pcie4-host-staged",
        "pcie3-host-staged",
        "pcie5-host-staged",
        "default",
    ][rng.random_range(0..4)];
    let two_nodes = rng.random_bool(0.3);
    let tp = if big != "RTX-4090" && rng.random_bool(0.25) {
        2
    } else {
        1
    };
    let per_node = 8;
    let nodes = if two_nodes {
        format!(
            "      - {{name: n0, gpus: [{{gpu: {big}, count: {per_node}}}, {{gpu: RTX-4090, count: 2}}]{}}}\n      - {{name: n1, gpus: [{{gpu: {big}, count: {per_node}}}]{}}}\n",
            fab(fabric, big),
            fab(fabric, big)
        )
    } else {
        format!(
            "      - {{name: n0, gpus: [{{gpu: {big}, count: {per_node}}}, {{gpu: RTX-4090, count: 2}}]{}}}\n",
            fab(fabric, big)
        )
    };
    let mut instances = String::new();
    let count = |rng: &mut Xoshiro256PlusPlus| rng.random_range(1..=2);
    let llm_gpu = big;
    let enc_gpu = ["RTX-4090", big][rng.random_range(0..2)];
    let mut push = |role: &str, gpu: &str, tp: u32, n: u32, node: Option<&str>| {
        let node = node.map_or(String::new(), |n| format!(", node: {n}"));
        instances.push_str(&format!(
            "        - {{role: {role}, gpu: {gpu}, tp: {tp}, count: {n}{node}}}\n"
        ));
    };
    match strategy {
        "colocated" => push("all", llm_gpu, tp, count(&mut rng), None),
        "stage" => {
            push("prefill", llm_gpu, tp, count(&mut rng), Some("n0"));
            push(
                "decode",
                llm_gpu,
                tp,
                count(&mut rng),
                Some(if two_nodes { "n1" } else { "n0" }),
            );
        }
        "modality" => {
            push("encoder", enc_gpu, 1, count(&mut rng), Some("n0"));
            push(
                "llm",
                llm_gpu,
                tp,
                count(&mut rng),
                Some(if two_nodes { "n1" } else { "n0" }),
            );
        }
        _ => {
            push("encoder", enc_gpu, 1, 1, Some("n0"));
            push("prefill", llm_gpu, tp, 1, Some("n0"));
            push(
                "decode",
                llm_gpu,
                tp,
                count(&mut rng),
                Some(if two_nodes { "n1" } else { "n0" }),
            );
        }
    }
    let rate = rng.random_range(1.0..40.0);
    let arrival = if rng.random_bool(0.5) {
        format!("{{process: poisson, rate: {rate:.3}}}")
    } else {
        format!(
            "{{process: gamma, rate: {rate:.3}, cv: {:.2}}}",
            rng.random_range(0.5..4.0)
        )
    };
    let budget = [512, 2048, 8192][rng.random_range(0..3)];
    let max_batch = [4, 32, 256][rng.random_range(0..3)];
    let chunked = rng.random_bool(0.8);
    let kv_transfer = ["after_prefill", "layerwise"][rng.random_range(0..2)];
    let routing = ["round_robin", "least_loaded"][rng.random_range(0..2)];
    // Stealing encoders hold the LLM too: only where the model fits them, i.e. on the LLM's GPU type.
    let stealing = strategy == "modality" && enc_gpu == llm_gpu && rng.random_bool(0.5);
    let horizon = if rng.random_bool(0.2) {
        "run: {horizon_s: 5}\n"
    } else {
        ""
    };
    format!(
        "name: random{seed}\nseed: {seed}\nscenarios:\n  - name: s\n    model: {model}\n    cluster:\n      network: {net}\n      link_sharing: {sharing}\n      nodes:\n{nodes}    deployment:\n      strategy: {strategy}\n      routing: {routing}\n      kv_transfer: {kv_transfer}\n      work_stealing: {stealing}\n      instances:\n{instances}    engine: {{token_budget: {budget}, max_batch: {max_batch}, memory_utilization: {util:.3}, chunked_prefill: {chunked}, encoder_batch_images: {eb}, schedule: {schedule}}}\n    workload:\n      requests: {n}\n      arrival: {arrival}\n      images: {{count: {{dist: choice, values: [0, 1, 2, 3], weights: [1, 4, 2, 1]}}, width: {{dist: uniform, min: 200, max: 1600}}, height: {{dist: uniform, min: 200, max: 1200}}}}\n      prompt_tokens: {{dist: lognormal, median: 60, sigma: 1.2, min: 1, max: 3000}}\n      output_tokens: {{dist: uniform, min: 1, max: 600}}\n    {horizon}",
        net = ["100gbe", "ib-ndr", "25gbe"][rng.random_range(0..3)],
        sharing = ["fair", "fifo"][rng.random_range(0..2)],
        schedule = ["mixed", "prefill_first"][rng.random_range(0..2)],
        eb = rng.random_range(1..40),
        n = rng.random_range(20..250),
    )
}

fn fab(fabric: &str, _gpu: &str) -> String {
    if fabric == "default" {
        String::new()
    } else {
        format!(", fabric: {fabric}")
    }
}

fn check(seed: u64) {
    let yaml = random_experiment(seed);
    let exp = match parse_experiment(&yaml, Path::new("random.yaml"), None) {
        Ok(e) => e,
        Err(e) => panic!("seed {seed}: generated experiment rejected: {e}\n{yaml}"),
    };
    for s in &exp.scenarios {
        let mut sink = MemorySink::default();
        let run = simulate(s, &mut sink, &mut |_| {})
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{yaml}"));
        let inv = &run.invariants;
        let ctx = format!("seed {seed}\n{yaml}\n{inv:?}");
        assert_eq!(inv.stalled, 0, "requests stalled: {ctx}");
        assert_eq!(inv.finished + inv.dropped, inv.arrived, "{ctx}");
        assert_eq!(sink.requests.len() as u64, inv.arrived, "{ctx}");
        assert!(inv.peak_kv_fraction <= 1.0, "{ctx}");
        // Every request gone, finished or dropped (at the horizon too), gave its KV back.
        assert_eq!(inv.kv_blocks_left, 0, "KV blocks leaked: {ctx}");
        // A flow's completion comes when its rate says it has moved all its bytes.
        assert!(
            inv.max_flow_remaining_bytes < 0.5,
            "a flow completed early: {ctx}"
        );
        if s.run.horizon_s.is_none() {
            assert_eq!(inv.arrived, s.workload.requests.unwrap(), "{ctx}");
            assert_eq!(inv.busy_instances_left, 0, "work left behind: {ctx}");
            // Received bytes are what the flows moved, so this fails if a flow ends early or
            // never ends.
            assert_eq!(inv.bytes_sent, inv.bytes_received, "bytes lost: {ctx}");
            assert!(
                sink.requests.iter().all(|r| matches!(
                    r.status,
                    RequestStatus::Finished
                        | RequestStatus::Dropped(
                            DropReason::KvCapacity | DropReason::PromptOverTokenBudget
                        )
                )),
                "{ctx}"
            );
        }
        let shipped: u64 = sink.transfers.iter().map(|t| t.bytes).sum();
        assert_eq!(shipped, inv.bytes_received, "{ctx}");
        let llm = &s.model.llm;
        for r in sink
            .requests
            .iter()
            .filter(|r| r.status == RequestStatus::Finished)
        {
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
                assert!(
                    t >= last - 1e-12,
                    "request {} times out of order: {r:?}\n{ctx}",
                    r.request_id
                );
                last = t;
            }
            assert!(
                r.prefill_start_s.unwrap() <= r.prefill_end_s.unwrap(),
                "{r:?}"
            );
            let ctx_tokens = r.visual_tokens + r.prompt_tokens;
            match s.strategy {
                Strategy::Stage | Strategy::Epd if r.output_tokens > 1 => {
                    assert_eq!(r.kv_bytes, llm.kv_bytes(ctx_tokens, Dtype::Bf16), "{r:?}")
                }
                _ => assert_eq!(r.kv_bytes, 0, "{r:?}"),
            }
            match s.strategy {
                // A stealing encoder that keeps a request ships nothing.
                Strategy::Modality
                    if r.encoder_instance.is_some() && r.encoder_instance == r.prefill_instance =>
                {
                    assert_eq!(r.emb_bytes, 0, "{r:?}")
                }
                Strategy::Modality | Strategy::Epd => assert_eq!(
                    r.emb_bytes,
                    s.model.emb_bytes(r.visual_tokens, Dtype::Bf16),
                    "{r:?}"
                ),
                _ => assert_eq!(r.emb_bytes, 0, "{r:?}"),
            }
            assert!(
                r.ttft_s.unwrap() > 0.0 && r.e2e_s.unwrap() >= r.ttft_s.unwrap(),
                "{r:?}"
            );
        }
    }
}

#[test]
fn random_scenarios_keep_every_invariant() {
    if let Ok(seed) = std::env::var("HETSIM_SEED") {
        check(seed.parse().expect("HETSIM_SEED is a number"));
        return;
    }
    let cases: u64 = std::env::var("HETSIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for seed in 0..cases {
        check(seed);
    }
}

#[test]
fn same_seed_same_rows() {
    for seed in [3, 11, 29] {
        let yaml = random_experiment(seed);
        let run = || {
            let exp = parse_experiment(&yaml, Path::new("r.yaml"), None).unwrap();
            let mut sink = MemorySink::default();
            let res = simulate(&exp.scenarios[0], &mut sink, &mut |_| {}).unwrap();
            (sink.requests, sink.transfers, res.summary)
        };
        assert_eq!(run(), run(), "seed {seed}");
    }
}
