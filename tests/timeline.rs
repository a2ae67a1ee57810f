//! End-to-end: `hetsim run --trace` timelines, read back with the format checker and held to the
//! result tables of the same run.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use arrow_array::{Array, RecordBatch, StringArray, UInt64Array};
use hetsim_sim::timeline::{TraceShape, check};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn hetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the hetsim binary runs")
}

fn ok(o: Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Rows of a result table as (scenario, column) pairs.
fn column(dir: &Path, table: &str, col: &str) -> Vec<(String, u64)> {
    let f = File::open(dir.join(format!("{table}.parquet"))).unwrap();
    let mut rows = Vec::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
    {
        let b: RecordBatch = b.unwrap();
        let s = b
            .column_by_name("scenario")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let v = b
            .column_by_name(col)
            .unwrap()
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap()
            .clone();
        rows.extend((0..b.num_rows()).map(|i| (s.value(i).to_string(), v.value(i))));
    }
    rows
}

fn traces(dir: &Path) -> BTreeMap<String, (String, TraceShape)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("trace-") {
            let text = std::fs::read_to_string(&p).unwrap();
            let shape = check(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.insert(shape.scenario.clone(), (text, shape));
        }
    }
    out
}

fn slices(shape: &TraceShape, process_prefix: &str, thread: &str) -> u64 {
    shape
        .slices
        .iter()
        .filter(|((p, t), _)| p.starts_with(process_prefix) && t == thread)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn every_scenario_of_pcie_has_a_timeline_that_matches_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pcie");
    let out_s = out.to_str().unwrap();
    ok(hetsim(&[
        "run",
        "experiments/pcie.yaml",
        "--out",
        out_s,
        "--trace",
    ]));
    let traces = traces(&out);
    assert_eq!(traces.len(), 16, "one timeline per scenario");
    // Listed in the manifest, so a result directory carries them whole.
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert_eq!(manifest.matches(".sim.json").count(), 16);

    let mut transfers: BTreeMap<String, u64> = BTreeMap::new();
    for (s, _) in column(&out, "transfers", "bytes") {
        *transfers.entry(s).or_default() += 1;
    }
    let mut encoded: BTreeMap<String, u64> = BTreeMap::new();
    for (s, n) in column(&out, "requests", "n_images") {
        *encoded.entry(s).or_default() += n;
    }
    for (scenario, (_, shape)) in &traces {
        let routes: u64 = shape.transfers.values().sum();
        assert_eq!(
            routes,
            transfers.get(scenario).copied().unwrap_or(0),
            "{scenario}"
        );
        assert!(
            slices(shape, "i", "decode") > 0,
            "{scenario}: {:?}",
            shape.slices
        );
        assert!(slices(shape, "i", "prefill") > 0, "{scenario}");
        assert!(slices(shape, "i", "encode") > 0, "{scenario}");
        assert!(shape.flows > 0, "{scenario}");
        let kind = if scenario.starts_with("a-colocated") {
            None
        } else if scenario.starts_with("b-stage") {
            Some("kv")
        } else {
            Some("embedding")
        };
        let text = &traces[scenario].0;
        match kind {
            None => assert!(shape.transfers.is_empty(), "{scenario}"),
            Some(k) => assert!(text.contains(&format!("\"kind\":\"{k}\"")), "{scenario}"),
        }
        // Each instance's counters are sampled at every step's end.
        assert!(
            shape.counters.keys().any(|(_, c)| c == "KV blocks"),
            "{scenario}"
        );
        assert!(encoded[scenario] > 0);
    }
    // The encoder pool's GPUs show only encode slices: the EPD split keeps LLM work off them.
    let epd = &traces["d-epd-2x4090+2xA100[rate=4]"].1;
    assert_eq!(slices(epd, "i0 encoder", "prefill"), 0);
    assert!(slices(epd, "i0 encoder", "encode") > 0);
    assert!(
        epd.transfers.contains_key("i2→i3 pcie4-host-staged"),
        "{:?}",
        epd.transfers
    );
}

#[test]
fn a_window_and_a_sample_bound_the_timeline_and_the_same_seed_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "run",
            "experiments/nvlink.yaml",
            "--out",
            out.to_str().unwrap(),
            "--trace",
        ];
        args.extend_from_slice(extra);
        ok(hetsim(&args));
        traces(&out)
    };
    let all = run("all", &[]);
    let again = run("again", &[]);
    let part = run("part", &["--trace-window", "10:20", "--trace-sample", "4"]);
    for (scenario, (text, shape)) in &all {
        assert_eq!(text, &again[scenario].0, "{scenario}: deterministic");
        let (ptext, pshape) = &part[scenario];
        assert!(
            ptext.len() < text.len(),
            "{scenario}: {} of {}",
            ptext.len(),
            text.len()
        );
        assert!(pshape.flows * 4 <= shape.flows + 4, "{scenario}");
        let doc: serde_json::Value = serde_json::from_str(ptext).unwrap();
        for e in doc["traceEvents"].as_array().unwrap() {
            let Some(ts) = e["ts"].as_f64() else { continue };
            let end = ts + e["dur"].as_f64().unwrap_or(0.0);
            match e["ph"].as_str().unwrap() {
                // A slice overlaps the window; counters sit at a step's end inside it.
                "X" | "C" => assert!(end >= 10e6 && ts <= 20e6, "{scenario}: {e}"),
                "b" => assert_eq!(e["args"]["request"].as_u64().unwrap() % 4, 0, "{e}"),
                _ => {}
            }
        }
    }
}

#[test]
fn trace_options_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let o = hetsim(&["run", "experiments/pcie.yaml", "--trace"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out"));
    for (flag, value) in [("--trace-window", "20:10"), ("--trace-sample", "0")] {
        let o = hetsim(&[
            "run",
            "experiments/pcie.yaml",
            "--out",
            out.to_str().unwrap(),
            "--trace",
            flag,
            value,
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(flag));
        assert!(!out.exists());
    }
}

/// The simulated and the real replay's timelines of one validate run (H200, 2026-12-03) have the
/// same tracks: the same processes, threads and counters, and the same requests' flows.
#[test]
fn a_validate_runs_simulated_and_measured_timelines_line_up_by_track() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("exec/results/2026-12-03-h200-timelines/validate-h200");
    let mut pairs = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".sim.json.gz") else {
            continue;
        };
        // The records keep their traces gzipped.
        let read = |f: &str| {
            let out = std::process::Command::new("gzip")
                .arg("-dc")
                .arg(dir.join(f))
                .output()
                .expect("gzip runs");
            assert!(out.status.success(), "gzip -dc {f}");
            let text = String::from_utf8(out.stdout).unwrap();
            check(&text).unwrap_or_else(|e| panic!("{f}: {e}"))
        };
        let (sim, exec) = (read(&name), read(&format!("{stem}.exec.json.gz")));
        assert_eq!(sim.scenario, exec.scenario);
        assert_eq!(sim.processes, exec.processes, "{stem}");
        let tracks = |s: &TraceShape| s.slices.keys().cloned().collect::<Vec<_>>();
        assert_eq!(tracks(&sim), tracks(&exec), "{stem}");
        let counters = |s: &TraceShape| s.counters.keys().cloned().collect::<Vec<_>>();
        assert_eq!(counters(&sim), counters(&exec), "{stem}");
        assert_eq!(
            sim.flows, exec.flows,
            "{stem}: every request's flow on both"
        );
        pairs += 1;
    }
    assert_eq!(pairs, 4);
}
