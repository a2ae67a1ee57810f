//! End-to-end: the `hetsim` binary on the shipped experiments, results read back from parquet.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, Float64Array, RecordBatch, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn hetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the hetsim binary runs")
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
    let a = b
        .column_by_name(col)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    (0..a.len()).map(|i| a.value(i).to_string()).collect()
}

fn u64s(b: &RecordBatch, col: &str) -> Vec<u64> {
    b.column_by_name(col)
        .unwrap()
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap()
        .values()
        .to_vec()
}

fn f64s(b: &RecordBatch, col: &str) -> Vec<Option<f64>> {
    let a = b
        .column_by_name(col)
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i)))
        .collect()
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hetsim-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn pcie_experiment_ships_the_bytes_the_formulas_say() {
    let out = out_dir("pcie");
    let o = hetsim(&[
        "run",
        "experiments/pcie.yaml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("ranked by SLO-meeting output tokens per dollar"),
        "{stdout}"
    );

    let mut strategies = BTreeMap::new();
    let mut rows = 0;
    for b in read(&out.join("requests.parquet")) {
        let (strategy, status, source) = (
            strings(&b, "strategy"),
            strings(&b, "status"),
            strings(&b, "source"),
        );
        let (n_images, visual, prompt) = (
            u64s(&b, "n_images"),
            u64s(&b, "visual_tokens"),
            u64s(&b, "prompt_tokens"),
        );
        let (emb, kv) = (u64s(&b, "emb_bytes"), u64s(&b, "kv_bytes"));
        let (ttft, tpot, e2e) = (f64s(&b, "ttft_s"), f64s(&b, "tpot_s"), f64s(&b, "e2e_s"));
        for i in 0..b.num_rows() {
            rows += 1;
            assert_eq!(source[i], "sim");
            assert_eq!(status[i], "finished");
            assert_eq!((n_images[i], visual[i]), (1, 576));
            assert!((15..=25).contains(&prompt[i]));
            let s = visual[i] + prompt[i];
            match strategy[i].as_str() {
                "modality" => assert_eq!((emb[i], kv[i]), (576 * 4096 * 2, 0)),
                "stage" => assert_eq!((emb[i], kv[i]), (0, 2 * 32 * 4096 * s * 2)),
                "epd" => assert_eq!((emb[i], kv[i]), (4_718_592, 2 * 32 * 4096 * s * 2)),
                "colocated" => assert_eq!((emb[i], kv[i]), (0, 0)),
                other => panic!("strategy {other}"),
            }
            let (t, p, e) = (ttft[i].unwrap(), tpot[i].unwrap(), e2e[i].unwrap());
            assert!(
                t > 0.0 && p > 0.0 && (e - (t + 127.0 * p)).abs() < 1e-6,
                "e2e = ttft + 127 · tpot"
            );
            *strategies.entry(strategy[i].clone()).or_insert(0) += 1;
        }
    }
    // 4 scenarios × 4 rates × 600 requests.
    assert_eq!(rows, 9600);
    assert_eq!(strategies.len(), 4);

    let summary = read(&out.join("summary.parquet"));
    let b = &summary[0];
    assert_eq!(b.num_rows(), 16);
    let names = strings(b, "scenario");
    let tpd = f64s(b, "tokens_per_dollar");
    let cost = f64s(b, "cost_usd");
    let out_tokens = u64s(b, "output_tokens");
    for i in 0..b.num_rows() {
        assert!(
            (tpd[i].unwrap() - out_tokens[i] as f64 / cost[i].unwrap()).abs() / tpd[i].unwrap()
                < 1e-9
        );
        assert_eq!(out_tokens[i], 600 * 128, "{}", names[i]);
    }
    // The printed table ranks by tokens per dollar: the best scenario is on the first row.
    let best = (0..b.num_rows())
        .max_by(|x, y| tpd[*x].partial_cmp(&tpd[*y]).unwrap())
        .unwrap();
    let first_row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(
        first_row.contains(&names[best]),
        "{first_row} vs {}",
        names[best]
    );

    // Every transfer: bytes sent = bytes received, and the rows add up to the summary.
    let sent: u64 = read(&out.join("transfers.parquet"))
        .iter()
        .map(|b| u64s(b, "bytes").iter().sum::<u64>())
        .sum();
    let received: u64 = u64s(b, "bytes_received").iter().sum();
    assert_eq!(sent, received);
    assert_eq!(u64s(b, "bytes_sent").iter().sum::<u64>(), received);
    for table in ["instances", "links"] {
        assert!(
            read(&out.join(format!("{table}.parquet")))[0].num_rows() > 0,
            "{table}"
        );
    }
    // Nothing left at a temporary name.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn every_shipped_experiment_runs() {
    for f in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let o = hetsim(&["run", p.to_str().unwrap()]);
            assert!(
                o.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

#[test]
fn same_seed_same_files() {
    let (a, b) = (out_dir("seed-a"), out_dir("seed-b"));
    for d in [&a, &b] {
        let o = hetsim(&[
            "run",
            "experiments/nvlink.yaml",
            "--seed",
            "42",
            "--out",
            d.to_str().unwrap(),
        ]);
        assert!(o.status.success());
    }
    for t in ["requests", "transfers", "summary", "instances", "links"] {
        let f = format!("{t}.parquet");
        assert_eq!(
            std::fs::read(a.join(&f)).unwrap(),
            std::fs::read(b.join(&f)).unwrap(),
            "{f}"
        );
    }
    let c = out_dir("seed-c");
    assert!(
        hetsim(&[
            "run",
            "experiments/nvlink.yaml",
            "--seed",
            "43",
            "--out",
            c.to_str().unwrap()
        ])
        .status
        .success()
    );
    assert_ne!(
        std::fs::read(a.join("requests.parquet")).unwrap(),
        std::fs::read(c.join("requests.parquet")).unwrap()
    );
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn catalog_and_schema_print() {
    let o = hetsim(&["catalog"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for name in [
        "llava-1.5-7b",
        "qwen2.5-vl-72b",
        "RTX-4090",
        "A100-SXM-80GB",
        "H200-SXM",
        "nvlink4",
        "pcie5-host-staged",
        "ib-ndr",
    ] {
        assert!(text.contains(name), "{name}");
    }
    let gpus = text
        .lines()
        .skip_while(|l| !l.starts_with("GPUs"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .count();
    assert!(gpus >= 12, "{gpus} GPUs");
    // Every price comes with its source key and the date the source gives.
    let h200 = text
        .lines()
        .find(|l| l.trim_start().starts_with("H200-SXM"))
        .unwrap();
    assert!(
        h200.contains("[HFHW-h200], n.d.") && h200.contains("4.54   [SPHERON-BW], 2026-03-17"),
        "{h200}"
    );
    let o = hetsim(&["schema"]);
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema.md"))
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        committed,
        "docs/schema.md is stale: hetsim schema > docs/schema.md"
    );
}

#[test]
fn models_by_config_path_and_text_only_models_run() {
    let dir = std::env::temp_dir().join(format!("hetsim-e2e-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf-configs/qwen2.5-vl-7b-instruct.json");
    let yaml = format!(
        "defaults:\n  cluster:\n    nodes: [{{name: box, gpus: [{{gpu: H100-SXM, count: 2}}]}}]\n  deployment:\n    strategy: modality\n    instances: [{{role: encoder, gpu: H100-SXM}}, {{role: llm, gpu: H100-SXM}}]\n  workload:\n    requests: 50\n    arrival: {{process: poisson, rate: 4}}\n    images: {{count: 2, width: {{dist: uniform, min: 300, max: 1500}}, height: 600}}\nscenarios:\n  - name: qwen-by-path\n    model: {}\n  - name: llama-text\n    model: llama-3.1-8b\n    deployment:\n      strategy: colocated\n      instances: [{{role: all, gpu: H100-SXM, count: 2}}]\n    workload:\n      requests: 50\n      arrival: {{process: poisson, rate: 4}}\n      images: {{count: 0}}\n",
        cfg.display()
    );
    let exp = dir.join("models.yaml");
    std::fs::write(&exp, yaml).unwrap();
    let out = dir.join("out");
    let o = hetsim(&["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = &read(&out.join("requests.parquet"))[0];
    let (scenario, visual, emb) = (
        strings(b, "scenario"),
        u64s(b, "visual_tokens"),
        u64s(b, "emb_bytes"),
    );
    for i in 0..b.num_rows() {
        match scenario[i].as_str() {
            // Qwen2.5-VL: dynamic resolution, 3584-wide embeddings.
            "qwen-by-path" => assert_eq!(emb[i], visual[i] * 3584 * 2),
            _ => assert_eq!((visual[i], emb[i]), (0, 0)),
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn text_only_models_replay_text_traces_whichever_way_images_are_switched_off() {
    let dir = out_dir("text-trace");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/splitwise_code.csv");
    // (name, model, inside `trace: {...}`, beside `trace:` in the workload)
    let scenarios = [
        ("as-is", "llama-3.1-8b", "", ""),
        (
            "attach-none",
            "llama-3.1-8b",
            ", attach_images: {count: 0}",
            "",
        ),
        (
            "images-none",
            "llama-3.1-8b",
            "",
            "      images: {count: 0}\n",
        ),
        (
            "llava-with-images",
            "llava-1.5-7b",
            "",
            "      images: {count: 1}\n",
        ),
    ];
    let mut yaml = String::from(
        "defaults:\n  cluster:\n    nodes: [{name: box, gpus: [{gpu: H100-SXM, count: 1}]}]\n  deployment:\n    strategy: colocated\n    instances: [{role: all, gpu: H100-SXM}]\nscenarios:\n",
    );
    for (name, model, in_trace, beside) in scenarios {
        yaml += &format!(
            "  - name: {name}\n    model: {model}\n    workload:\n      requests: 40\n      trace: {{path: {}{in_trace}}}\n{beside}",
            trace.display()
        );
    }
    let exp = dir.join("text.yaml");
    std::fs::write(&exp, &yaml).unwrap();
    let out = dir.join("out");
    let o = hetsim(&["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "{yaml}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut visual: BTreeMap<String, u64> = BTreeMap::new();
    for b in read(&out.join("requests.parquet")) {
        for (s, v) in strings(&b, "scenario")
            .into_iter()
            .zip(u64s(&b, "visual_tokens"))
        {
            *visual.entry(s).or_default() += v;
        }
    }
    assert_eq!(visual["as-is"], 0);
    assert_eq!(visual["attach-none"], 0);
    assert_eq!(visual["images-none"], 0);
    // `images` beside a trace attaches to the rows that carry none: 576 tokens per 640×480 image.
    assert_eq!(visual["llava-with-images"], 40 * 576);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn layerwise_kv_leaves_with_the_first_layer_and_moves_at_the_link_rate() {
    let dir = out_dir("layerwise");
    std::fs::create_dir_all(&dir).unwrap();
    // One request a second: no two transfers share the link, so each moves at its rate.
    let stage = |name: &str, mode: &str| {
        format!(
            "  - name: {name}\n    deployment:\n      strategy: stage\n      kv_transfer: {mode}\n      instances: [{{role: prefill, gpu: A100-SXM-80GB}}, {{role: decode, gpu: A100-SXM-80GB}}]\n"
        )
    };
    let yaml = format!(
        "defaults:\n  model: llava-1.5-7b\n  workload:\n    requests: 20\n    arrival: {{process: poisson, rate: 1}}\n  cluster:\n    nodes: [{{name: hgx, gpus: [{{gpu: A100-SXM-80GB, count: 2}}], fabric: nvlink3}}]\n  pricing: {{gpu_price_usd: {{A100-SXM-80GB: 16000}}}}\nscenarios:\n{}{}",
        stage("layerwise", "layerwise"),
        stage("after-prefill", "after_prefill")
    );
    let exp = dir.join("kv.yaml");
    std::fs::write(&exp, yaml).unwrap();
    let out = dir.join("out");
    let o = hetsim(&["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // NVLink 3: 300 GB/s × 0.86 achieved, 3 µs per transfer (sim/src/catalog/link.rs); LLaVA-7B
    // has 32 layers.
    let (link_bps, latency_s, layers) = (300e9 * 0.86, 3e-6, 32.0);
    let mut checked = 0;
    for b in read(&out.join("requests.parquet")) {
        let scenario = strings(&b, "scenario");
        let col = |c: &str| f64s(&b, c);
        let (enc_end, pre_start, pre_end) = (
            col("encode_end_s"),
            col("prefill_start_s"),
            col("prefill_end_s"),
        );
        let (kv_start, kv_end, kv_bytes) = (
            col("kv_transfer_start_s"),
            col("kv_transfer_end_s"),
            u64s(&b, "kv_bytes"),
        );
        for i in 0..b.num_rows() {
            let (p0, p1) = (pre_start[i].unwrap(), pre_end[i].unwrap());
            let (k0, k1, bytes) = (kv_start[i].unwrap(), kv_end[i].unwrap(), kv_bytes[i] as f64);
            assert!(enc_end[i].unwrap() <= p0 && bytes > 1e8, "row {i}");
            if scenario[i] == "layerwise" {
                // The first bytes leave when the prefill's first layer has written its KV.
                assert!(
                    (k0 - (p0 + (p1 - p0) / layers)).abs() < 1e-8,
                    "row {i}: KV started at {k0}, prefill {p0}..{p1}"
                );
                // While the prefill runs the stream trails it by one layer; the last layer's
                // share (plus what the latency held back) crosses at the link's rate after it.
                let tail_bytes = bytes * (1.0 / layers + latency_s / (p1 - p0));
                let rate = tail_bytes / (k1 - p1);
                assert!(
                    (rate / link_bps - 1.0).abs() < 0.01,
                    "row {i}: {tail_bytes} B after the prefill took {} s: {rate} B/s",
                    k1 - p1
                );
            } else {
                assert!(k0 >= p1, "row {i}");
                let rate = bytes / (k1 - k0 - latency_s);
                assert!(
                    (rate / link_bps - 1.0).abs() < 0.01,
                    "row {i}: {bytes} B in {} s",
                    k1 - k0
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_ranks_by_slo_meeting_tokens_per_dollar_and_counts_the_gpus_instances_use() {
    let dir = out_dir("ranking");
    std::fs::create_dir_all(&dir).unwrap();
    // `cheap-but-late` pays less per GPU (more tokens per dollar) but meets no SLO; `meets` uses
    // one of its node's two GPUs.
    let yaml = "defaults:\n  model: llava-1.5-7b\n  workload:\n    requests: 30\n    arrival: {process: poisson, rate: 2}\n  deployment:\n    strategy: colocated\n    instances: [{role: all, gpu: H100-SXM}]\nscenarios:\n  - name: cheap-but-late\n    cluster:\n      nodes: [{name: box, gpus: [{gpu: H100-SXM, count: 1}]}]\n    slo: {ttft_s: 0.001, tpot_s: 0.001}\n    pricing: {gpu_price_usd: {H100-SXM: 10000}}\n  - name: meets\n    cluster:\n      nodes: [{name: box, gpus: [{gpu: H100-SXM, count: 2}]}]\n    pricing: {gpu_price_usd: {H100-SXM: 30000}}\n";
    let exp = dir.join("rank.yaml");
    std::fs::write(&exp, yaml).unwrap();
    let out = dir.join("out");
    let o = hetsim(&["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let rank = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{table}"))
            .to_string()
    };
    let (late, meets) = (rank("cheap-but-late"), rank("meets"));
    assert!(meets.trim_start().starts_with("1 "), "{table}");
    assert!(late.trim_start().starts_with("2 "), "{table}");
    // goodput is requests/s within the SLO, the SLO column the share: none for the late one.
    let header: Vec<&str> = table
        .lines()
        .find(|l| l.trim_start().starts_with("# "))
        .unwrap()
        .split("  ")
        .filter(|c| !c.trim().is_empty())
        .map(str::trim)
        .collect();
    assert!(
        header.contains(&"goodput") && header.contains(&"SLO") && header.contains(&"SLO tokens/$"),
        "{header:?}"
    );
    assert!(late.contains(" 0.00 ") && late.contains(" 0% "), "{late}");
    assert!(meets.contains("1×H100-SXM (+1 idle)"), "{meets}");
    let b = &read(&out.join("summary.parquet"))[0];
    let (names, used, cluster) = (
        strings(b, "scenario"),
        u64s(b, "gpu_count"),
        u64s(b, "cluster_gpu_count"),
    );
    let i = names.iter().position(|n| n == "meets").unwrap();
    assert_eq!(
        (used[i], cluster[i], strings(b, "gpus")[i].as_str()),
        (1, 2, "1×H100-SXM")
    );
    let good = f64s(b, "good_tokens_per_dollar");
    let all = f64s(b, "tokens_per_dollar");
    let late_i = 1 - i;
    assert_eq!(good[late_i], Some(0.0));
    assert!(
        all[late_i] > all[i],
        "the late run delivers more tokens per dollar"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mfu_mbu_and_occupancy_are_the_steps_work_over_the_busy_time() {
    use hetsim_sim::catalog::{Dtype, builtin_model, gpu_by_name};
    use hetsim_sim::perf::{BatchShape, Efficiency, PhaseModel, Roofline};
    let dir = out_dir("mfu");
    std::fs::create_dir_all(&dir).unwrap();
    // One text request, 2000 prompt tokens, one output token: a single prefill step.
    let yaml = "scenarios:\n  - name: one-prefill\n    model: llama-3.1-8b\n    cluster:\n      nodes: [{name: box, gpus: [{gpu: H100-SXM, count: 1}]}]\n    deployment:\n      strategy: colocated\n      instances: [{role: all, gpu: H100-SXM}]\n    workload:\n      requests: 1\n      arrival: {process: poisson, rate: 1}\n      images: {count: 0}\n      prompt_tokens: 2000\n      output_tokens: 1\n";
    let exp = dir.join("mfu.yaml");
    std::fs::write(&exp, yaml).unwrap();
    let out = dir.join("out");
    let o = hetsim(&["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let h100 = gpu_by_name("H100-SXM").unwrap();
    let roof = Roofline::new(
        &builtin_model("llama-3.1-8b").unwrap(),
        Dtype::Bf16,
        h100,
        Efficiency::default(),
        1,
        None,
    );
    let mut batch = BatchShape::default();
    batch.add_prefill_chunk(0, 2000, true);
    let work = roof.forward_work(&batch);
    let b = &read(&out.join("instances.parquet"))[0];
    let col = |c: &str| f64s(b, c)[0].unwrap();
    let busy = col("busy_s");
    // The step is the forward pass, on the engine's nanosecond clock.
    assert!(
        (busy - work.seconds).abs() < 2e-9,
        "{busy} vs {}",
        work.seconds
    );
    assert!((col("mfu") - work.flops / (989e12 * busy)).abs() < 1e-12);
    assert!((col("mbu") - work.bytes / (3350e9 * busy)).abs() < 1e-12);
    assert!((col("batch_occupancy") - 1.0 / 256.0).abs() < 1e-12);
    // By hand: ≈ 2 · 8.0e9 parameters · 2000 tokens = 3.2e13 FLOPs at 0.75 · 989 TFLOP/s is
    // 43 ms; overheads (300 µs a step, 4 µs a kernel) and attention keep MFU a little under 0.75.
    assert!(col("mfu") > 0.6 && col("mfu") < 0.75, "{}", col("mfu"));
    let s = &read(&out.join("summary.parquet"))[0];
    assert!((f64s(s, "mfu")[0].unwrap() - col("mfu")).abs() < 1e-12);
    assert!((f64s(s, "mbu")[0].unwrap() - col("mbu")).abs() < 1e-12);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `bench_serve.json` speaks vLLM `bench serve`'s keys, and its numbers are the request rows'
/// under vLLM's definitions: a request's token gaps sum to (finish − first token), so the mean
/// ITL is the mean TPOT weighted by (output tokens − 1), exactly.
#[test]
fn bench_serve_json_has_vllms_metrics_and_they_agree_with_the_request_rows() {
    let dir = out_dir("bench-serve");
    let o = hetsim(&[
        "run",
        "experiments/nvlink.yaml",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.join("bench_serve.json")).unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let summary = read(&dir.join("summary.parquet"));
    let scenarios: Vec<String> = summary
        .iter()
        .flat_map(|b| strings(b, "scenario"))
        .collect();
    assert_eq!(all.len(), scenarios.len());
    let requests = read(&dir.join("requests.parquet"));
    for (b, name) in all.iter().zip(&scenarios) {
        assert_eq!(b["scenario"], name.as_str());
        assert_eq!(b["source"], "sim");
        for k in [
            "duration",
            "completed",
            "failed",
            "total_input_tokens",
            "total_output_tokens",
            "request_throughput",
            "request_goodput",
            "output_throughput",
            "total_token_throughput",
        ] {
            assert!(b[k].is_number(), "{name}: {k}");
        }
        for m in ["ttft", "tpot", "itl", "e2el"] {
            for s in ["mean", "median", "std", "p90", "p99"] {
                assert!(
                    b[format!("{s}_{m}_ms")].as_f64().unwrap() > 0.0,
                    "{name}: {s}_{m}_ms"
                );
            }
        }
        let (mut weighted, mut gaps, mut input, mut output) = (0.0, 0.0, 0u64, 0u64);
        for r in &requests {
            let (sc, st) = (strings(r, "scenario"), strings(r, "status"));
            let (tpot, out, prompt) = (
                f64s(r, "tpot_s"),
                u64s(r, "output_tokens"),
                u64s(r, "prompt_tokens"),
            );
            for i in 0..r.num_rows() {
                if &sc[i] != name || st[i] != "finished" {
                    continue;
                }
                input += prompt[i];
                output += out[i];
                if let Some(t) = tpot[i] {
                    weighted += t * (out[i] - 1) as f64;
                    gaps += (out[i] - 1) as f64;
                }
            }
        }
        let itl = b["mean_itl_ms"].as_f64().unwrap();
        assert!(
            (itl - 1e3 * weighted / gaps).abs() < 1e-6 * itl,
            "{name}: {itl}"
        );
        assert_eq!(b["total_input_tokens"].as_u64().unwrap(), input);
        assert_eq!(b["total_output_tokens"].as_u64().unwrap(), output);
        let d = b["duration"].as_f64().unwrap();
        let total = b["total_token_throughput"].as_f64().unwrap();
        assert!((total - (input + output) as f64 / d).abs() < 1e-9 * total);
        // numpy's median lies between the nearest-rank p50s around it (the summary's is one).
        assert!(b["median_ttft_ms"].as_f64().unwrap() <= b["p99_ttft_ms"].as_f64().unwrap());
    }
}
