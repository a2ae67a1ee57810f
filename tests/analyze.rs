//! End-to-end: `hetsim analyze` over parquet written by `hetsim run`, its CSV numbers checked
//! against the raw rows (read here with arrow, not polars, so the two sides do not share code).
#![cfg(feature = "analysis")]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn hetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the hetsim binary runs")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hetsim-analyze-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `hetsim run experiment --out dir [--seed s]`.
fn simulate(experiment: &str, name: &str, seed: Option<&str>) -> PathBuf {
    let dir = temp(name);
    let mut args = vec!["run", experiment, "--out", dir.to_str().unwrap()];
    if let Some(s) = seed {
        args.extend(["--seed", s]);
    }
    ok(&hetsim(&args));
    dir
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn strings(b: &RecordBatch, col: &str) -> Vec<String> {
    let a = b.column_by_name(col).unwrap();
    let a = a.as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len()).map(|i| a.value(i).to_string()).collect()
}

fn u64s(b: &RecordBatch, col: &str) -> Vec<u64> {
    let a = b.column_by_name(col).unwrap();
    a.as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap()
        .values()
        .to_vec()
}

fn f64s(b: &RecordBatch, col: &str) -> Vec<Option<f64>> {
    let a = b.column_by_name(col).unwrap();
    let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i)))
        .collect()
}

/// A CSV file as rows of header → field (RFC 4180 quoting, as `hetsim analyze` writes it).
fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut records: Vec<Vec<String>> = Vec::new();
    let (mut field, mut record, mut quoted) = (String::new(), Vec::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => record.push(std::mem::take(&mut field)),
            ('\n', false) => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (c, _) => field.push(c),
        }
    }
    let header = records.remove(0);
    records
        .into_iter()
        .map(|r| {
            assert_eq!(
                r.len(),
                header.len(),
                "{}: ragged row {r:?}",
                path.display()
            );
            header.iter().cloned().zip(r).collect()
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, key: &str) -> Option<f64> {
    let v = row
        .get(key)
        .unwrap_or_else(|| panic!("no column {key} in {row:?}"));
    (!v.is_empty()).then(|| v.parse().unwrap_or_else(|e| panic!("{key} = {v}: {e}")))
}

/// Nearest-rank quantile: the smallest value with at least q·n values at or below it.
fn nearest_rank(mut v: Vec<f64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
}

/// Per scenario: latencies of finished requests, from the raw request rows.
fn latencies(dirs: &[&Path]) -> BTreeMap<String, [Vec<f64>; 3]> {
    let mut out: BTreeMap<String, [Vec<f64>; 3]> = BTreeMap::new();
    for d in dirs {
        for b in read(&d.join("requests.parquet")) {
            let (sc, st) = (strings(&b, "scenario"), strings(&b, "status"));
            let cols = [f64s(&b, "ttft_s"), f64s(&b, "tpot_s"), f64s(&b, "e2e_s")];
            for i in 0..b.num_rows() {
                if st[i] != "finished" {
                    continue;
                }
                let e = out.entry(sc[i].clone()).or_default();
                for k in 0..3 {
                    if let Some(v) = cols[k][i] {
                        e[k].push(v);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn comparison_numbers_equal_direct_computations_from_the_rows() {
    let res = simulate("experiments/pcie.yaml", "pcie", None);
    let out = temp("pcie-out");
    let stdout = ok(&hetsim(&[
        "analyze",
        res.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("Scenario comparison"), "{stdout}");
    assert!(
        stdout.contains("c-modality-2x4090+2xA100[rate=4]"),
        "{stdout}"
    );
    assert!(stdout.contains("Transfer bytes by strategy"), "{stdout}");

    let rows = csv(&out.join("comparison.csv"));
    assert_eq!(rows.len(), 16);
    let lat = latencies(&[&res]);
    let summary = &read(&res.join("summary.parquet"))[0];
    let names = strings(summary, "scenario");
    let (cost, tokens) = (f64s(summary, "cost_usd"), u64s(summary, "output_tokens"));
    let (finished, duration) = (u64s(summary, "finished"), f64s(summary, "duration_s"));
    let hist_p99 = f64s(summary, "ttft_p99_s");

    // Embedding + KV bytes and request count per scenario, from the request rows.
    let mut moved: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for b in read(&res.join("requests.parquet")) {
        let (sc, emb, kv) = (
            strings(&b, "scenario"),
            u64s(&b, "emb_bytes"),
            u64s(&b, "kv_bytes"),
        );
        for i in 0..b.num_rows() {
            let e = moved.entry(sc[i].clone()).or_default();
            e.0 += emb[i] + kv[i];
            e.1 += 1;
        }
    }

    // Bytes per (scenario, link) from the transfer rows.
    let mut link_bytes: BTreeMap<(String, String), u64> = BTreeMap::new();
    for b in read(&res.join("transfers.parquet")) {
        let (sc, link, bytes) = (
            strings(&b, "scenario"),
            strings(&b, "link"),
            u64s(&b, "bytes"),
        );
        for i in 0..b.num_rows() {
            *link_bytes
                .entry((sc[i].clone(), link[i].clone()))
                .or_default() += bytes[i];
        }
    }
    assert!(!link_bytes.is_empty());

    for row in &rows {
        let name = &row["scenario"];
        assert_eq!(row["source"], "sim");
        assert_eq!(row["runs"], "1");
        let i = names.iter().position(|n| n == name).unwrap();
        // Percentiles: exactly the nearest-rank quantile of the raw rows …
        let [ttft, tpot, e2e] = &lat[name];
        for (key, values, q) in [
            ("ttft_p50_s", ttft, 0.5),
            ("ttft_p99_s", ttft, 0.99),
            ("tpot_p90_s", tpot, 0.9),
            ("tpot_p99_s", tpot, 0.99),
            ("e2e_p50_s", e2e, 0.5),
            ("e2e_p99_s", e2e, 0.99),
        ] {
            assert_eq!(
                num(row, key),
                nearest_rank(values.clone(), q),
                "{name} {key}"
            );
        }
        // … and within the simulator's histogram resolution (0.05 %) of its own summary.
        assert!(
            close(num(row, "ttft_p99_s").unwrap(), hist_p99[i].unwrap(), 6e-4),
            "{name}: {:?} vs {:?}",
            num(row, "ttft_p99_s"),
            hist_p99[i]
        );
        // Tokens/$ = output tokens / cost; throughput = finished / duration.
        let tpd = tokens[i] as f64 / cost[i].unwrap();
        assert!(
            close(num(row, "tokens_per_dollar").unwrap(), tpd, 1e-12),
            "{name}"
        );
        let thr = finished[i] as f64 / duration[i].unwrap();
        assert!(
            close(num(row, "throughput_rps").unwrap(), thr, 1e-12),
            "{name}"
        );
        // Goodput and SLO attainment agree with the run's own summary.
        for key in ["goodput_rps", "slo_attainment"] {
            let want = f64s(summary, key)[i].unwrap();
            assert!(close(num(row, key).unwrap(), want, 1e-9), "{name} {key}");
        }
        // Bytes per request = (embedding + KV bytes of the request rows) / requests.
        let (bytes, n) = moved[name];
        assert!(
            close(
                num(row, "bytes_per_request").unwrap(),
                bytes as f64 / n as f64,
                1e-12
            ),
            "{name}"
        );
        // Bytes per link = sum of that scenario's transfer rows on the link.
        for (key, v) in row.iter().filter(|(k, _)| k.starts_with("bytes_")) {
            if key == "bytes_per_request" {
                continue;
            }
            let link = key.trim_start_matches("bytes_");
            let want = link_bytes
                .get(&(name.clone(), link.to_string()))
                .copied()
                .unwrap_or(0);
            assert_eq!(v.parse::<u64>().unwrap(), want, "{name} {key}");
        }
    }

    // Transfers by strategy: sums of transfer rows of that strategy's scenarios.
    let strategy: BTreeMap<String, String> = names
        .iter()
        .cloned()
        .zip(strings(summary, "strategy"))
        .collect();
    let mut by_strategy: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for b in read(&res.join("transfers.parquet")) {
        let (sc, kind, link) = (
            strings(&b, "scenario"),
            strings(&b, "kind"),
            strings(&b, "link"),
        );
        let bytes = u64s(&b, "bytes");
        for i in 0..b.num_rows() {
            let e = by_strategy
                .entry((strategy[&sc[i]].clone(), kind[i].clone(), link[i].clone()))
                .or_default();
            e.0 += 1;
            e.1 += bytes[i];
        }
    }
    let transfers = csv(&out.join("transfers.csv"));
    for (key, (n, bytes)) in &by_strategy {
        let row = transfers
            .iter()
            .find(|r| (&r["strategy"], &r["kind"], &r["link"]) == (&key.0, &key.1, &key.2))
            .unwrap_or_else(|| panic!("no transfers row for {key:?}"));
        assert_eq!(row["transfers"].parse::<u64>().unwrap(), *n, "{key:?}");
        assert_eq!(row["bytes"].parse::<u64>().unwrap(), *bytes, "{key:?}");
    }
    // Colocated ships nothing and says so.
    assert!(
        transfers
            .iter()
            .any(|r| r["strategy"] == "colocated" && r["kind"] == "none")
    );
    // The embedding is ~70× smaller than the KV cache per request (the paper's R).
    let per_req = |kind: &str, strat: &str| {
        transfers
            .iter()
            .find(|r| r["strategy"] == strat && r["kind"] == kind)
            .map(|r| num(r, "bytes_per_transfer").unwrap())
            .unwrap()
    };
    let r = per_req("kv", "stage") / per_req("embedding", "modality");
    assert!((60.0..90.0).contains(&r), "R = {r}");

    // Cost: per GPU type rows add up to the scenario's cost; instance rows are sums of
    // instances.parquet.
    let cost_rows = csv(&out.join("cost.csv"));
    let mut inst: BTreeMap<(String, String), f64> = BTreeMap::new();
    for b in read(&res.join("instances.parquet")) {
        let (sc, gpu, c) = (
            strings(&b, "scenario"),
            strings(&b, "gpu"),
            f64s(&b, "cost_usd"),
        );
        for i in 0..b.num_rows() {
            *inst.entry((sc[i].clone(), gpu[i].clone())).or_default() += c[i].unwrap();
        }
    }
    for (i, name) in names.iter().enumerate() {
        let mine: Vec<_> = cost_rows
            .iter()
            .filter(|r| &r["scenario"] == name)
            .collect();
        let total: f64 = mine.iter().map(|r| num(r, "cost_usd").unwrap()).sum();
        assert!(close(total, cost[i].unwrap(), 1e-9), "{name}");
        for r in mine {
            if let Some(c) = inst.get(&(name.clone(), r["gpu"].clone())) {
                assert!(close(num(r, "cost_usd").unwrap(), *c, 1e-12), "{name}");
            } else {
                assert_eq!(r["gpu"], "unused GPUs");
            }
        }
    }

    // Curves: 4 deployments × 4 rates; SLO attainment falls as the rate rises for modality.
    let curves = csv(&out.join("curves.csv"));
    assert_eq!(curves.len(), 16);
    let slo: Vec<f64> = curves
        .iter()
        .filter(|r| r["curve"] == "c-modality-2x4090+2xA100")
        .map(|r| num(r, "slo_attainment").unwrap())
        .collect();
    assert_eq!(slo.len(), 4);
    assert!(slo[0] > slo[3], "{slo:?}");

    // Figures: SVG with axis labels, PNG 3.5 in wide at 300 dpi.
    for stem in [
        "latency_throughput_ttft",
        "latency_throughput_tpot",
        "slo_attainment",
        "tokens_per_dollar",
        "link_utilization",
        "transfer_bytes",
        "cost_breakdown",
    ] {
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}");
        assert!(svg.contains("<text"), "{stem}: no text in the SVG");
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert_eq!(width, 1050, "{stem}");
    }
    let svg = std::fs::read_to_string(out.join("latency_throughput_ttft.svg")).unwrap();
    assert!(svg.contains("Throughput (req/s)") && svg.contains("TTFT p99 (s)"));
    // The experiment's SLO (ttft_s 1.0, tpot_s 0.1) is drawn and named.
    assert!(svg.contains("TTFT SLO (1 s)"), "no SLO line");
    let svg = std::fs::read_to_string(out.join("latency_throughput_tpot.svg")).unwrap();
    assert!(svg.contains("TPOT SLO (100 ms)"), "no SLO line");
    // No staging directory left behind.
    assert!(
        std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );
    std::fs::remove_dir_all(res).unwrap();
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn repeated_runs_are_pooled() {
    let a = simulate("experiments/trace-replay.yaml", "rep-a", Some("1"));
    let b = simulate("experiments/trace-replay.yaml", "rep-b", Some("2"));
    let out = temp("rep-out");
    ok(&hetsim(&[
        "analyze",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let rows = csv(&out.join("comparison.csv"));
    let lat = latencies(&[&a, &b]);
    let mut finished: BTreeMap<String, u64> = BTreeMap::new();
    for d in [&a, &b] {
        let s = &read(&d.join("summary.parquet"))[0];
        for (n, f) in strings(s, "scenario").into_iter().zip(u64s(s, "finished")) {
            *finished.entry(n).or_default() += f;
        }
    }
    assert_eq!(rows.len(), finished.len());
    for row in &rows {
        let name = &row["scenario"];
        assert_eq!(row["runs"], "2", "{name}");
        assert_eq!(row["finished"].parse::<u64>().unwrap(), finished[name]);
        // Pooled percentile: over the requests of both runs.
        assert_eq!(
            num(row, "ttft_p99_s"),
            nearest_rank(lat[name][0].clone(), 0.99),
            "{name}"
        );
    }
    // Giving one directory twice would double-count: refused.
    let o = hetsim(&["analyze", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("given twice"));
    for d in [a, b, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// Rewrites every table of `from` into `to` with `source = exec`, multiplying the latency columns
/// of requests by `factor`: a stand-in for the GPU harness's files.
fn fake_exec(from: &Path, to: &Path, factor: f64) {
    std::fs::create_dir_all(to).unwrap();
    let scaled = [
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "prefill_start_s",
        "prefill_end_s",
    ];
    for table in ["summary", "requests", "transfers", "instances", "links"] {
        let batches = read(&from.join(format!("{table}.parquet")));
        let schema = batches[0].schema();
        let f = File::create(to.join(format!("{table}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(f, schema.clone(), None).unwrap();
        for b in &batches {
            let cols: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(field, c)| -> ArrayRef {
                    let name = field.name().as_str();
                    if name == "source" {
                        Arc::new(StringArray::from(vec!["exec"; b.num_rows()]))
                    } else if table == "requests" && scaled.contains(&name) {
                        let a = c.as_any().downcast_ref::<Float64Array>().unwrap();
                        // Prefill start and end scale together so prefill time scales too.
                        Arc::new(
                            a.iter()
                                .map(|v| v.map(|x| x * factor))
                                .collect::<Float64Array>(),
                        )
                    } else {
                        c.clone()
                    }
                })
                .collect();
            w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
                .unwrap();
        }
        w.close().unwrap();
    }
    // The same files, so the same manifest: it marks the set complete.
    for f in ["bench_serve.json", "manifest.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn exec_rows_are_compared_with_sim_rows() {
    let sim = simulate("experiments/trace-replay.yaml", "val-sim", None);
    let exec = temp("val-exec");
    // Measured latencies 10 % above predicted: every latency error is exactly −1/11.
    fake_exec(&sim, &exec, 1.1);
    let out = temp("val-out");
    let stdout = ok(&hetsim(&[
        "analyze",
        sim.to_str().unwrap(),
        exec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("Predicted against measured"), "{stdout}");
    let want = (1.0 - 1.1) / 1.1 * 100.0;
    let rows = csv(&out.join("validation.csv"));
    let summary = &read(&sim.join("summary.parquet"))[0];
    let n = summary.num_rows();
    assert_eq!(rows.len(), n * 11);
    for r in &rows {
        let err = num(r, "error_pct");
        match r["metric"].as_str() {
            "ttft_p50_s" | "ttft_p99_s" | "tpot_p50_s" | "tpot_p99_s" | "e2e_p50_s"
            | "e2e_p99_s" => {
                assert!(close(err.unwrap(), want, 1e-9), "{r:?}");
                // Measured = predicted × 1.1, from the raw sim rows.
                assert!(close(
                    num(r, "measured").unwrap(),
                    num(r, "predicted").unwrap() * 1.1,
                    1e-12
                ));
            }
            // Counts and bytes were copied unchanged.
            "throughput_rps" | "bytes_per_request" | "tokens_per_dollar" => {
                assert_eq!(err, Some(0.0), "{r:?}")
            }
            _ => {}
        }
    }
    let req = csv(&out.join("validation_requests.csv"));
    let requests = u64s(summary, "finished");
    for r in req.iter().filter(|r| r["metric"] == "TTFT") {
        assert!(
            close(num(r, "error_median_pct").unwrap(), want, 1e-9),
            "{r:?}"
        );
        assert!(
            close(num(r, "abs_error_p90_pct").unwrap(), -want, 1e-9),
            "{r:?}"
        );
        assert!(requests.contains(&r["matched"].parse().unwrap()), "{r:?}");
    }
    // Encode times were not scaled: zero error.
    for r in req.iter().filter(|r| r["metric"] == "encode") {
        assert_eq!(num(r, "error_of_means_pct"), Some(0.0), "{r:?}");
    }
    assert!(out.join("predicted_vs_measured.png").is_file());
    assert!(out.join("predicted_vs_measured.svg").is_file());
    // Trace replays have no rate sweep: their latency is drawn as CDFs and over the replay.
    for stem in [
        "latency_cdf_ttft",
        "latency_cdf_tpot",
        "latency_over_time_ttft",
        "latency_over_time_tpot",
    ] {
        assert!(out.join(format!("{stem}.png")).is_file(), "{stem}");
    }
    let svg = std::fs::read_to_string(out.join("latency_cdf_ttft.svg")).unwrap();
    assert!(svg.contains("sample-jsonl (exec)") && svg.contains("Requests at or below (%)"));
    // Comparison lists both sources.
    let cmp = csv(&out.join("comparison.csv"));
    assert_eq!(cmp.iter().filter(|r| r["source"] == "exec").count(), n);
    // Exec rows alone: nothing to compare, and it says so.
    let alone = temp("val-alone");
    let stdout = ok(&hetsim(&[
        "analyze",
        exec.to_str().unwrap(),
        "--out",
        alone.to_str().unwrap(),
    ]));
    assert!(stdout.contains("nothing to compare"), "{stdout}");
    assert!(!alone.join("validation.csv").exists());
    // Into the directory that held validation tables: they go, not linger from the older run.
    ok(&hetsim(&[
        "analyze",
        sim.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(out.join("comparison.csv").is_file());
    assert!(
        !out.join("validation.csv").exists() && !out.join("predicted_vs_measured.png").exists()
    );
    std::fs::remove_dir_all(alone).unwrap();
    for d in [sim, exec, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// Rewrites `table` of `dir` with no rows (the schema kept), as `hetsim validate` writes none.
fn empty_table(dir: &Path, table: &str) {
    let path = dir.join(format!("{table}.parquet"));
    let schema = read(&path)[0].schema();
    let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
    w.flush().unwrap();
    w.close().unwrap();
}

#[test]
fn figures_without_data_are_left_out_and_the_report_says_so() {
    // Validation output: summary, requests and transfers, but no instance or link rows.
    let res = simulate("experiments/validate-nvlink.yaml", "no-data", None);
    empty_table(&res, "instances");
    empty_table(&res, "links");
    let out = temp("no-data-out");
    let stdout = ok(&hetsim(&[
        "analyze",
        res.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("figures left out: link_utilization (no run moved data over a link), cost_breakdown (no instance has a cost of its own)"),
        "{stdout}"
    );
    for stem in ["link_utilization", "cost_breakdown"] {
        assert!(!out.join(format!("{stem}.png")).exists(), "{stem}");
        assert!(!out.join(format!("{stem}.svg")).exists(), "{stem}");
    }
    assert!(out.join("slo_attainment.png").is_file());
    for d in [res, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn experiments_reusing_scenario_names_stay_apart() {
    // pcie.yaml and nvlink.yaml name their scenarios alike on different GPUs and links.
    let pcie = simulate("experiments/pcie.yaml", "names-pcie", None);
    let nvlink = simulate("experiments/nvlink.yaml", "names-nvlink", None);
    let out = temp("names-out");
    let stdout = ok(&hetsim(&[
        "analyze",
        pcie.to_str().unwrap(),
        nvlink.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("kept apart"), "{stdout}");
    let rows = csv(&out.join("comparison.csv"));
    assert_eq!(rows.len(), 32);
    let prefix = |d: &Path| format!("{}/", d.file_name().unwrap().to_string_lossy());
    for (dir, gpu) in [(&pcie, "A100-PCIe-80GB"), (&nvlink, "A100-SXM-80GB")] {
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| r["scenario"].starts_with(&prefix(dir)))
            .collect();
        assert_eq!(mine.len(), 16);
        assert!(
            mine.iter()
                .all(|r| r["gpus"].contains(gpu) && r["runs"] == "1")
        );
    }
    for d in [pcie, nvlink, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn experiments_differing_only_in_fabric_stay_apart() {
    // validate-nvlink.yaml and validate-pcie.yaml: same scenarios, GPUs and rates; only the link
    // the embeddings and KV cross differs. Colocated scenarios ship nothing: those do pool.
    let nv = simulate("experiments/validate-nvlink.yaml", "fabric-nv", None);
    let pc = simulate("experiments/validate-pcie.yaml", "fabric-pc", None);
    let out = temp("fabric-out");
    let stdout = ok(&hetsim(&[
        "analyze",
        nv.to_str().unwrap(),
        pc.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("kept apart"), "{stdout}");
    let rows = csv(&out.join("comparison.csv"));
    let runs = |name: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r["scenario"].ends_with(name))
            .map(|r| r["runs"].clone())
            .collect()
    };
    assert_eq!(runs("colocated-1gpu[rate=2]"), ["2"]);
    assert_eq!(runs("stage[rate=8]"), ["1", "1"]);
    // Every request ships its whole KV once, whichever link: bytes per request are not halved
    // by pooling the two links' scenarios.
    let transfers = csv(&out.join("transfers.csv"));
    let kv: Vec<_> = transfers.iter().filter(|r| r["kind"] == "kv").collect();
    assert_eq!(kv.len(), 2, "{kv:?}");
    for r in kv {
        assert!(
            close(
                num(r, "bytes_per_request").unwrap(),
                num(r, "bytes_per_transfer").unwrap(),
                1e-9
            ),
            "{r:?}"
        );
    }
    for d in [nv, pc, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// Runs `hetsim analyze` on `dirs` with a fresh --out; checks exit code 2, the message, no
/// panic, and that nothing was written.
fn rejected(dirs: &[&Path], must_say: &str) {
    let out = temp("bad-out");
    let mut args: Vec<&str> = vec!["analyze"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--out", out.to_str().unwrap()]);
    let o = hetsim(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{must_say}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(must_say), "`{must_say}` not in: {err}");
    assert!(!out.exists(), "output written despite bad input");
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let good = simulate("experiments/trace-replay.yaml", "bad-good", None);
    rejected(&[&temp("does-not-exist")], "no such directory");

    let empty = temp("bad-empty");
    std::fs::create_dir_all(&empty).unwrap();
    rejected(
        &[&empty],
        "manifest.json: missing: not a complete hetsim result directory",
    );

    // A table with another table's schema.
    let wrong = temp("bad-schema");
    std::fs::create_dir_all(&wrong).unwrap();
    for t in [
        "summary",
        "requests",
        "transfers",
        "instances",
        "links",
        "manifest",
        "bench_serve",
    ] {
        let file = if matches!(t, "manifest" | "bench_serve") {
            format!("{t}.json")
        } else {
            format!("{t}.parquet")
        };
        std::fs::copy(good.join(&file), wrong.join(&file)).unwrap();
    }
    std::fs::copy(good.join("transfers.parquet"), wrong.join("links.parquet")).unwrap();
    rejected(&[&good, &wrong], "column `port` is missing");

    // Not parquet at all.
    std::fs::write(wrong.join("links.parquet"), "scenario,port\n").unwrap();
    rejected(&[&wrong], "not a readable parquet file");

    // A plain file instead of a directory.
    rejected(&[&good.join("summary.parquet")], "not a directory");
    for d in [good, empty, wrong] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
