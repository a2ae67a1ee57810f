//! SM partitions of one GPU (green contexts) as GPUs of their own: how an experiment splits a
//! GPU, what the split may not do, and that the partitions reach each other through the GPU's
//! memory.

use std::path::{Path, PathBuf};

use hetsim_sim::catalog::LinkKind;
use hetsim_sim::experiment::{load_experiment_with_profile, parse_experiment};

fn repo(f: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(f)
}

fn experiment(node: &str, instances: &str) -> String {
    format!(
        "name: p\nseed: 1\ndefaults:\n  model: llava-1.5-7b\n  cluster:\n    nodes: [{node}]\n  \
         deployment:\n    strategy: modality\n    instances: {instances}\n  workload:\n    \
         requests: 20\n    arrival: {{process: poisson, rate: 4}}\n    images: {{count: 1, width: 640, height: 480}}\n    \
         prompt_tokens: 20\n    output_tokens: 16\nscenarios: [{{name: s}}]\n"
    )
}

const SPLIT: &str = "[{role: encoder, gpu: H200-SXM@40sm}, {role: llm, gpu: H200-SXM@92sm}]";

fn error(node: &str, instances: &str) -> String {
    parse_experiment(&experiment(node, instances), Path::new("p.yaml"), None)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_split_gpu_is_two_gpus_that_copy_through_its_memory() {
    let text = experiment(
        "{name: box, gpus: [{gpu: H200-SXM, count: 1, partitions: [40, 92]}]}",
        SPLIT,
    );
    let exp = parse_experiment(&text, Path::new("p.yaml"), None).unwrap();
    let c = &exp.scenarios[0].cluster;
    let names: Vec<&str> = c.gpus.iter().map(|g| g.spec.name).collect();
    assert_eq!(names, ["H200-SXM@40sm", "H200-SXM@92sm"]);
    assert_eq!(c.nodes[0].fabric.kind, LinkKind::OnDevice);
    let route = c.route(0, 1, 4_718_592).unwrap();
    assert_eq!(route.link.name, "H200-SXM-on-device");
    // 30 µs to start, 122.6 GB/s: the copy engine as measured on the H200.
    assert!((route.startup_s - 30e-6).abs() < 1e-12);
    assert!((c.ports[route.ports[0]].bytes_per_s - 122.6e9).abs() < 1.0);
    // Its run moves every request's 4.7 MB of embeddings over it.
    let mut sink = hetsim_sim::records::NullSink;
    let r = hetsim_sim::engine::simulate(&exp.scenarios[0], &mut sink, &mut |_| {}).unwrap();
    assert_eq!(r.summary.finished, 20);
    assert_eq!(r.summary.emb_bytes, 20 * 4_718_592);
    // Without a profile's interference table, the run says the partitions' interference is
    // unmodelled; a whole GPU has nothing to say.
    let note = hetsim_sim::interference::notes(&exp).unwrap();
    assert!(
        note.contains(
            "unmodelled for #0 H200-SXM@40sm (encode), #1 H200-SXM@92sm (prefill, decode)"
        ),
        "{note}"
    );
    let whole = experiment(
        "{name: box, gpus: [{gpu: H200-SXM, count: 2}]}",
        "[{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM}]",
    );
    let whole = parse_experiment(&whole, Path::new("p.yaml"), None).unwrap();
    assert_eq!(hetsim_sim::interference::notes(&whole), None);
}

#[test]
fn splits_that_are_not_one_gpu_are_refused() {
    let with = |parts: &str| {
        format!("{{name: box, gpus: [{{gpu: H200-SXM, count: 1, partitions: {parts}}}]}}")
    };
    for (node, expect) in [
        (with("[40, 100]"), "partitions of 140 SMs in all: H200-SXM has 132"),
        (with("[132]"), "give the SM counts of at least two"),
        (with("[16, 116]"), "allowed 40 to 131"),
        (
            "{name: box, gpus: [{gpu: H200-SXM, count: 2, partitions: [40, 92]}]}".to_string(),
            "holds that one GPU (count: 1)",
        ),
        (
            "{name: box, gpus: [{gpu: H200-SXM, count: 1, partitions: [40, 92]}, {gpu: L4, count: 1}]}"
                .to_string(),
            "holds that one GPU (count: 1)",
        ),
        (
            "{name: box, fabric: nvlink4, gpus: [{gpu: H200-SXM, count: 1, partitions: [40, 92]}]}"
                .to_string(),
            "give no fabric for this node",
        ),
    ] {
        let e = error(&node, SPLIT);
        assert!(e.contains(expect), "{node}: {e}");
        assert!(e.contains("p.yaml:"), "{e}");
    }
    // A partition the node does not have is not a GPU an instance can take.
    let e = error(
        "{name: box, gpus: [{gpu: H200-SXM, count: 1, partitions: [40, 92]}]}",
        "[{role: encoder, gpu: H200-SXM@48sm}, {role: llm, gpu: H200-SXM@92sm}]",
    );
    assert!(e.contains("H200-SXM@48sm"), "{e}");
}

/// The shipped green-context experiment: with the whole H200's profile, the partitions have no
/// phase table of their own and are timed by the operator model fitted on the whole GPU; with
/// the profile `calibrate --split 40` wrote, each partition has its own.
#[test]
fn the_green_experiment_times_partitions_by_their_tables_or_the_fit() {
    let split = load_experiment_with_profile(
        &repo("experiments/validate-green.yaml"),
        None,
        Some(&repo("profiles/h200-2026-12-03-llava-1.5-7b-split40.yaml")),
    )
    .unwrap();
    for s in &split.scenarios {
        assert!(s.measured_phases.iter().all(Option::is_some), "{}", s.name);
    }
    let exp = load_experiment_with_profile(
        &repo("experiments/validate-green.yaml"),
        None,
        Some(&repo("profiles/h200-2026-12-03-llava-1.5-7b.yaml")),
    )
    .unwrap();
    for s in &exp.scenarios {
        let modality = s.cluster.instances.len() == 2;
        for (i, inst) in s.cluster.instances.iter().enumerate() {
            assert_eq!(
                s.measured_phases[i].is_some(),
                !modality,
                "{} {}",
                s.name,
                inst.gpu.name
            );
        }
    }
}
