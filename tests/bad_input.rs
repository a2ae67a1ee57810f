//! Bad input: a clear message naming the place, exit code 2, no panic, and no output left behind.
//! A failure to write results is not bad input: exit code 1, naming the path.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every refusal comes this fast: bad input is found before any long work starts.
const REFUSAL_TIME: Duration = Duration::from_secs(30);

/// Runs `hetsim args` in `dir` and returns (exit code, stderr); fails the test if it runs past
/// `REFUSAL_TIME` (killing it) or prints more than a few KiB of error.
fn hetsim_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > REFUSAL_TIME {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("hetsim {args:?} ran past {REFUSAL_TIME:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = reader.join().unwrap().unwrap_or_default();
    assert!(
        err.len() < 4096,
        "hetsim {args:?}: {} bytes of error",
        err.len()
    );
    (status.code().unwrap_or(-1), err)
}

/// A fresh directory for one case, removed by the caller.
fn case_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hetsim-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `yaml` (and any extra files) to a fresh directory, runs `hetsim run` with `--out`, and
/// returns (exit code, stderr, whether the output directory holds any file).
fn run_yaml(name: &str, yaml: &str, extra: &[(&str, &str)]) -> (i32, String, bool) {
    let dir = case_dir(name);
    for (f, text) in extra {
        let path = dir.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(dir.join("exp.yaml"), yaml).unwrap();
    let (code, stderr) = hetsim_in(&dir, &["run", "exp.yaml", "--out", "out"]);
    let out = dir.join("out");
    let wrote = out.exists() && std::fs::read_dir(&out).unwrap().next().is_some();
    std::fs::remove_dir_all(&dir).unwrap();
    (code, stderr, wrote)
}

fn base(gpu: &str, rate: &str, model: &str) -> String {
    format!(
        "scenarios:\n  - name: s\n    model: {model}\n    cluster:\n      nodes:\n        - {{name: box, gpus: [{{gpu: {gpu}, count: 2}}]}}\n    deployment:\n      strategy: colocated\n      instances:\n        - {{role: all, gpu: {gpu}, count: 2}}\n    workload:\n      requests: 10\n      arrival: {{process: poisson, rate: {rate}}}\n"
    )
}

fn assert_rejected(name: &str, yaml: &str, extra: &[(&str, &str)], must_say: &[&str]) {
    let (code, err, wrote) = run_yaml(name, yaml, extra);
    assert_eq!(code, 2, "{name}: exit code {code}, stderr: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert!(!wrote, "{name}: output written");
    for s in must_say {
        assert!(err.contains(s), "{name}: `{s}` not in: {err}");
    }
}

#[test]
fn unknown_names_suggest_the_nearest() {
    assert_rejected(
        "gpu",
        &base("A100-SXM-80G", "2", "llava-1.5-7b"),
        &[],
        &[
            "exp.yaml:6:",
            "gpus[0].gpu",
            "unknown GPU `A100-SXM-80G`",
            "did you mean `A100-SXM-80GB`",
        ],
    );
    assert_rejected(
        "model",
        &base("A100-SXM-80GB", "2", "llava-1.5-7"),
        &[],
        &["exp.yaml:3:", "model", "did you mean `llava-1.5-7b`"],
    );
    let y = base("A100-SXM-80GB", "2", "llava-1.5-7b")
        .replace("{name: box,", "{name: box, fabric: nvlnk3,");
    assert_rejected(
        "link",
        &y,
        &[],
        &["fabric", "unknown link `nvlnk3`", "did you mean `nvlink3`"],
    );
}

#[test]
fn rates_must_be_positive() {
    assert_rejected(
        "zero",
        &base("A100-SXM-80GB", "0", "llava-1.5-7b"),
        &[],
        &["arrival.rate", "allowed [1e-6, 1000000] requests/s"],
    );
    assert_rejected(
        "negative",
        &base("A100-SXM-80GB", "-3", "llava-1.5-7b"),
        &[],
        &["arrival.rate"],
    );
    let y = base("A100-SXM-80GB", "2", "llava-1.5-7b") + "matrix:\n  rate: [1, 0]\n";
    assert_rejected("matrix", &y, &[], &["matrix.rate", "0"]);
}

#[test]
fn a_model_too_big_says_by_how_much() {
    assert_rejected(
        "fit",
        &base("RTX-4090", "2", "qwen2.5-vl-72b"),
        &[],
        &["does not fit in RTX-4090", "short by", "GiB"],
    );
}

#[test]
fn malformed_yaml_gives_line_and_column() {
    let y = "scenarios:\n  - name: s\n    model: [llava\n";
    let (code, err, _) = run_yaml("yaml", y, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 3") || err.contains(":3:"), "{err}");
    assert_rejected(
        "unknown-field",
        &base("A100-SXM-80GB", "2", "llava-1.5-7b")
            .replace("    workload:", "    wrkload: 1\n    workload:"),
        &[],
        &["wrkload"],
    );
    assert_rejected(
        "strategy",
        &base("A100-SXM-80GB", "2", "llava-1.5-7b").replace("colocated", "colocate"),
        &[],
        &["colocate"],
    );
}

#[test]
fn trace_problems_name_the_file_and_row() {
    let trace_yaml = |path: &str| {
        base("A100-SXM-80GB", "2", "llava-1.5-7b").replace(
            "      requests: 10\n      arrival: {process: poisson, rate: 2}\n",
            &format!("      trace: {{path: {path}}}\n"),
        )
    };
    assert_rejected(
        "missing",
        &trace_yaml("nope.jsonl"),
        &[],
        &["cannot read trace", "nope.jsonl"],
    );
    let rows = "{\"arrival_s\": 0, \"prompt_tokens\": 5, \"output_tokens\": 3}\n{\"arrival_s\": 1, \"prompt_tokens\": -5, \"output_tokens\": 3}\n";
    assert_rejected(
        "row",
        &trace_yaml("t.jsonl"),
        &[("t.jsonl", rows)],
        &["t.jsonl row 2"],
    );
    let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,2\n0.5,10\n";
    assert_rejected(
        "csv",
        &trace_yaml("t.csv"),
        &[("t.csv", csv)],
        &["t.csv row 3", "2 columns, expected 3"],
    );
}

#[test]
fn text_only_models_refuse_images_and_say_where_they_come_from() {
    let llama_trace = |trace: &str, beside: &str| {
        base("A100-SXM-80GB", "2", "llama-3.1-8b").replace(
            "      requests: 10\n      arrival: {process: poisson, rate: 2}\n",
            &format!("      trace: {{{trace}}}\n{beside}"),
        )
    };
    let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,2\n0.5,10,3\n";
    assert_rejected(
        "attach",
        &llama_trace("path: t.csv", "      images: {count: 1}\n"),
        &[("t.csv", csv)],
        &[
            "`llama-3.1-8b` is text-only",
            "`workload.images`",
            "images: {count: 0}",
        ],
    );
    assert_rejected(
        "both",
        &llama_trace(
            "path: t.csv, attach_images: {count: 0}",
            "      images: {count: 0}\n",
        ),
        &[("t.csv", csv)],
        &["`images` or as `trace.attach_images`, not both"],
    );
    let rows = "{\"arrival_s\": 0, \"prompt_tokens\": 5, \"output_tokens\": 3}\n\n{\"arrival_s\": 1, \"prompt_tokens\": 5, \"output_tokens\": 3, \"images\": [[640, 480]]}\n";
    assert_rejected(
        "row-images",
        &llama_trace("path: t.jsonl", "      images: {count: 0}\n"),
        &[("t.jsonl", rows)],
        &["t.jsonl row 3 carries images"],
    );
}

#[test]
fn roles_must_match_the_strategy() {
    let y = base("A100-SXM-80GB", "2", "llava-1.5-7b").replace("{role: all,", "{role: decode,");
    assert_rejected(
        "role",
        &y,
        &[],
        &["role `decode` does not belong to strategy `colocated`"],
    );
    let y = base("A100-SXM-80GB", "2", "llava-1.5-7b")
        .replace("count: 2}\n    workload", "count: 3}\n    workload");
    assert_rejected("placement", &y, &[], &["no 1 free A100-SXM-80GB"]);
}

#[test]
fn clap_rejects_unknown_commands_with_code_2() {
    let o = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let missing: PathBuf = ["definitely", "not", "here.yaml"].iter().collect();
    let o = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(["run", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read experiment"));
}

#[test]
fn validate_names_a_missing_profile_before_touching_a_gpu() {
    let o = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "validate",
            "experiments/validate-nvlink.yaml",
            "--profile",
            "no-such-profile.yaml",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--profile: cannot read profile no-such-profile.yaml"),
        "{err}"
    );
}

/// `--out` where no directory can be made (under a regular file): the input was fine, so exit 1
/// (not 2), and the message names the path and says writing failed.
#[test]
fn an_unwritable_out_is_an_output_error_not_bad_input() {
    let dir = std::env::temp_dir().join(format!("hetsim-unwritable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exp = dir.join("exp.yaml");
    std::fs::write(&exp, base("A100-SXM-80GB", "2", "llava-1.5-7b")).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = file.join("out");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_hetsim"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot write results"), "{err}");
    assert!(err.contains("a-file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let table = file.join("cuts.csv");
    let (code, err) = run(&[
        "transfer",
        "llava-1.5-7b",
        "--format",
        "csv",
        "--out",
        table.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot write results") && err.contains("a-file"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- the findings of issue 16, one case each (rebuilt from their descriptions) ----

/// `base` with `from` replaced by `to` (which must occur).
fn edit(yaml: &str, from: &str, to: &str) -> String {
    assert!(yaml.contains(from), "`{from}` not in {yaml}");
    yaml.replacen(from, to, 1)
}

fn llava() -> String {
    base("A100-SXM-80GB", "2", "llava-1.5-7b")
}

const ARRIVAL: &str = "arrival: {process: poisson, rate: 2}";

#[test]
fn numbers_that_used_to_panic_are_refused_by_range() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "rate-tiny",
            ARRIVAL,
            "arrival: {process: poisson, rate: 1e-300}",
            &["arrival.rate", "1e-300", "requests/s"],
        ),
        (
            "cv-huge",
            ARRIVAL,
            "arrival: {process: gamma, rate: 2, cv: 1e200}",
            &["arrival.cv", "1e200"],
        ),
        (
            "cv-tiny",
            ARRIVAL,
            "arrival: {process: gamma, rate: 2, cv: 1e-200}",
            &["arrival.cv"],
        ),
        (
            "cv-silly",
            ARRIVAL,
            "arrival: {process: gamma, rate: 2, cv: 1e9}",
            &["arrival.cv", "allowed [0.01, 100]"],
        ),
        (
            "weights-inf",
            ARRIVAL,
            "arrival: {process: poisson, rate: 2}\n      prompt_tokens: {dist: choice, values: [10, 20], weights: [1e308, 1e308]}",
            &["workload.prompt_tokens.weights[0]", "1e308"],
        ),
    ];
    for (name, from, to, says) in cases {
        assert_rejected(name, &edit(&llava(), from, to), &[], says);
    }
    for (field, v) in [
        ("step_overhead_us", "1e15"),
        ("kernel_overhead_us", "1e300"),
    ] {
        let y = edit(
            &llava(),
            "    workload:",
            &format!("    engine: {{efficiency: {{{field}: {v}}}}}\n    workload:"),
        );
        assert_rejected(
            field,
            &y,
            &[],
            &[&format!("engine: `efficiency.{field}` = {v}"), "µs"],
        );
    }
}

fn trace_yaml(trace: &str) -> String {
    edit(
        &llava(),
        &format!("      requests: 10\n      {ARRIVAL}\n"),
        &format!("      trace: {{{trace}}}\n"),
    )
}

#[test]
fn trace_clocks_stay_in_range() {
    let rows = "{\"arrival_s\": 0, \"prompt_tokens\": 5, \"output_tokens\": 3}\n";
    assert_rejected(
        "time-scale",
        &trace_yaml("path: t.jsonl, time_scale: 1e300"),
        &[("t.jsonl", rows)],
        &["workload.trace.time_scale", "1e300"],
    );
    for v in ["1e11", "1e300"] {
        let jsonl =
            format!("{rows}{{\"arrival_s\": {v}, \"prompt_tokens\": 5, \"output_tokens\": 3}}\n");
        assert_rejected(
            "jsonl-arrival",
            &trace_yaml("path: t.jsonl"),
            &[("t.jsonl", &jsonl)],
            &["t.jsonl row 2", "`arrival_s`", v],
        );
        let csv = format!("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,2\n{v},10,2\n");
        assert_rejected(
            "splitwise-arrival",
            &trace_yaml("path: t.csv"),
            &[("t.csv", &csv)],
            &["t.csv row 3", "`arrived_at`"],
        );
    }
    // In range alone, out of range once scaled.
    let jsonl =
        format!("{rows}{{\"arrival_s\": 1e8, \"prompt_tokens\": 5, \"output_tokens\": 3}}\n");
    assert_rejected(
        "scaled",
        &trace_yaml("path: t.jsonl, time_scale: 100"),
        &[("t.jsonl", &jsonl)],
        &["t.jsonl row 2", "time_scale 100"],
    );
}

#[test]
fn azure_timestamps_are_real_dates() {
    for (stamp, says) in [
        ("2023-02-31 10:00:00", "day 31: 2023-02 has 28 days"),
        (
            "99999999999999-01-01 00:00:00",
            "year 99999999999999 is not in 1970–2200",
        ),
        ("2023-11-16 -1:00:00", "hour -1 is not in 0–23"),
        ("2023-11-16 10:-5:00", "minute -5 is not in 0–59"),
    ] {
        let csv = format!(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,10,2\n{stamp},10,2\n"
        );
        assert_rejected(
            "azure",
            &trace_yaml("path: az.csv"),
            &[("az.csv", &csv)],
            &["az.csv row 3", "`TIMESTAMP`", says],
        );
    }
}

/// A decoder config with `over` replacing the named fields.
fn hf_config(over: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("model_type", "\"llama\""),
        ("num_hidden_layers", "4"),
        ("hidden_size", "256"),
        ("num_attention_heads", "8"),
        ("num_key_value_heads", "8"),
        ("intermediate_size", "512"),
        ("vocab_size", "1000"),
    ];
    for (k, v) in over {
        match fields.iter_mut().find(|(f, _)| f == k) {
            Some(f) => f.1 = v,
            None => fields.push((k, v)),
        }
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!("{{{}}}", body.join(", "))
}

#[test]
fn hf_configs_with_impossible_shapes_name_the_file_and_key() {
    let text_model = |model: &str| edit(&trace_yaml("path: t.csv"), "llava-1.5-7b", model);
    let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,2\n";
    /// (case, fields replaced, what the error says)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "heads-not-dividing",
            &[("num_attention_heads", "7"), ("num_key_value_heads", "7")],
            "`num_attention_heads` = 7 must divide `hidden_size` = 256",
        ),
        (
            "heads-over-hidden",
            &[
                ("num_attention_heads", "512"),
                ("num_key_value_heads", "512"),
            ],
            "must divide `hidden_size` = 256",
        ),
        (
            "kv-not-dividing",
            &[("num_key_value_heads", "3")],
            "`num_key_value_heads` = 3 must divide",
        ),
        (
            "kv-over-heads",
            &[("num_key_value_heads", "16")],
            "`num_key_value_heads` = 16 must divide",
        ),
        (
            "wrapping-product",
            &[
                ("vocab_size", "18446744073709551615"),
                ("hidden_size", "4294967296"),
            ],
            "must be a positive integer up to",
        ),
        (
            "1e20-params",
            &[("num_hidden_layers", "100000000000")],
            "`num_hidden_layers` = 100000000000",
        ),
        (
            "layers-zero",
            &[("num_hidden_layers", "0")],
            "`num_hidden_layers` = 0",
        ),
    ];
    for (name, over, says) in cases {
        assert_rejected(
            name,
            &text_model("m/config.json"),
            &[("m/config.json", &hf_config(over)), ("t.csv", csv)],
            &["m/config.json", says],
        );
    }
}

#[test]
fn a_relative_hf_config_is_found_beside_the_experiment() {
    let dir = case_dir("relative-hf");
    std::fs::create_dir_all(dir.join("exp/m")).unwrap();
    std::fs::write(dir.join("exp/m/config.json"), hf_config(&[])).unwrap();
    std::fs::write(
        dir.join("exp/t.csv"),
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,2\n",
    )
    .unwrap();
    let y = edit(&trace_yaml("path: t.csv"), "llava-1.5-7b", "m/config.json");
    std::fs::write(dir.join("exp/e.yaml"), y).unwrap();
    let (code, err) = hetsim_in(&dir, &["run", "exp/e.yaml"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tp_must_split_the_heads() {
    // Qwen2.5-VL-7B has 28 heads; LLaVA-1.5-7B 32.
    for (model, gpus, tp, says) in [
        (
            "qwen2.5-vl-7b",
            8,
            8,
            "tp = 8 does not divide the 28 attention heads",
        ),
        (
            "llava-1.5-7b",
            64,
            64,
            "tp = 64 does not divide the 32 attention heads",
        ),
    ] {
        let y = base("H100-SXM", "2", model)
            .replace("count: 2}]}", &format!("count: {gpus}}}]}}"))
            .replace(
                "{role: all, gpu: H100-SXM, count: 2}",
                &format!("{{role: all, gpu: H100-SXM, tp: {tp}, count: 1}}"),
            );
        assert_rejected("tp", &y, &[], &["exp.yaml:", "instances[0].tp", says]);
    }
}

#[test]
fn engine_and_pricing_knobs_are_range_checked() {
    let y = edit(
        &llava(),
        "    workload:",
        "    engine: {block_tokens: 35184372088832}\n    workload:",
    );
    assert_rejected(
        "block-tokens",
        &y,
        &[],
        &["`block_tokens` = 35184372088832", "allowed [1, 65536]"],
    );
    for v in ["-0.5", "1e308"] {
        let y = edit(
            &llava(),
            "    workload:",
            &format!("    pricing: {{nvlink_premium: {v}}}\n    workload:"),
        );
        assert_rejected(
            "premium",
            &y,
            &[],
            &["pricing.nvlink_premium", "of the GPU price"],
        );
    }
}

/// A profile of one H200 with `phase` as llava-1.5-7b's phase table and `gpu`/`link` overrides.
fn profile(gpu: &str, link: &str, phase: &str) -> String {
    format!(
        "machine: test\ndate: 2026-12-03\ncommand: test\ngpus:\n  - {{catalog_gpu: H200-SXM, reported_name: H200, gemm_tflops: 790, gemm_efficiency: 0.8, hbm_gbs: 4300, memory_efficiency: 0.9, {gpu}}}\nlinks:\n  - {{catalog_link: nvlink4, {link}}}\nphases:\n  - model: llava-1.5-7b\n    catalog_gpu: H200-SXM\n{phase}"
    )
}

const GPU_OK: &str = "launch_overhead_us: 2.5";
const LINK_OK: &str = "bandwidth_gbs: 386, latency_us: 8";
const PHASES_OK: &str = "    dtype: bf16\n    encode: [{images: 1, seconds: 0.002}]\n    prefill: [{sequences: 1, tokens: 704, seconds: 0.02}]\n    decode: [{batch: 1, context: 700, seconds: 0.007}]\n";

fn h200_with_profile() -> String {
    "profile: p.yaml\n".to_string() + &base("H200-SXM", "2", "llava-1.5-7b")
}

#[test]
fn profiles_are_range_checked_and_never_silently_ignored() {
    let cases = [
        (
            "launch",
            profile("launch_overhead_us: 1e300", LINK_OK, PHASES_OK),
            "gpus[0].launch_overhead_us",
        ),
        (
            "bandwidth",
            profile(GPU_OK, "bandwidth_gbs: 1e-300, latency_us: 8", PHASES_OK),
            "links[0].bandwidth_gbs",
        ),
        (
            "latency",
            profile(GPU_OK, "bandwidth_gbs: 386, latency_us: 1e300", PHASES_OK),
            "links[0].latency_us",
        ),
        (
            "seconds",
            profile(GPU_OK, LINK_OK, &PHASES_OK.replace("0.007", "1e300")),
            "phases[0]: `decode[0].seconds` = 1e300",
        ),
        (
            "empty-encode",
            profile(
                GPU_OK,
                LINK_OK,
                &PHASES_OK.replace("[{images: 1, seconds: 0.002}]", "[]"),
            ),
            "phases[0]: `encode` is empty",
        ),
        (
            "other-dtype",
            profile(GPU_OK, LINK_OK, &PHASES_OK.replace("bf16", "fp8")),
            "at dtype fp8, and the scenario runs bf16",
        ),
    ];
    for (name, p, says) in &cases {
        assert_rejected(
            name,
            &h200_with_profile(),
            &[("p.yaml", p)],
            &["p.yaml", says],
        );
    }
    // Upper case names the same dtype: accepted (and used, `profile::tests`).
    let p = profile(GPU_OK, LINK_OK, &PHASES_OK.replace("bf16", "BF16"));
    let (code, err, _) = run_yaml("upper-dtype", &h200_with_profile(), &[("p.yaml", &p)]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_tiny_horizon_reports_every_request_dropped() {
    let dir = case_dir("horizon");
    let y = edit(
        &llava(),
        "    workload:",
        "    run: {horizon_s: 1e-12}\n    workload:",
    );
    let path = dir.join("exp.yaml");
    let exp = hetsim_sim::experiment::parse_experiment(&y, &path, None).unwrap();
    let r = hetsim_sim::run::run_experiment(&exp, None, None, &mut hetsim_sim::run::NoProgress)
        .unwrap();
    let s = &r.runs[0].summary;
    assert_eq!((s.requests, s.finished, s.dropped), (10, 0, 10));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_name_their_file_and_field() {
    // Qwen2.5-VL refuses images wider than 200:1: found when the experiment is read.
    let y = edit(
        &base("H200-SXM", "2", "qwen2.5-vl-7b"),
        ARRIVAL,
        &format!("{ARRIVAL}\n      images: {{width: 6400, height: 20}}"),
    );
    assert_rejected(
        "qwen-aspect",
        &y,
        &[],
        &["exp.yaml", "workload.images", "aspect ratio over 200"],
    );
    let rows = "{\"arrival_s\": 0, \"prompt_tokens\": 5, \"output_tokens\": 3, \"images\": [[6400, 20]]}\n";
    let y = edit(
        &trace_yaml("path: t.jsonl"),
        "llava-1.5-7b",
        "qwen2.5-vl-7b",
    )
    .replace("A100-SXM-80GB", "H200-SXM");
    assert_rejected(
        "qwen-aspect-row",
        &y,
        &[("t.jsonl", rows)],
        &["t.jsonl row 1", "aspect ratio over 200"],
    );
    // EPD needs a vision encoder.
    let y = base("A100-SXM-80GB", "2", "llama-3.1-8b")
        .replace("colocated", "epd")
        .replace("count: 2}]}", "count: 3}]}")
        .replace("        - {role: all, gpu: A100-SXM-80GB, count: 2}\n", "        - {role: encoder, gpu: A100-SXM-80GB}\n        - {role: prefill, gpu: A100-SXM-80GB}\n        - {role: decode, gpu: A100-SXM-80GB}\n")
        .replace(ARRIVAL, &format!("{ARRIVAL}\n      images: {{count: 0}}"));
    assert_rejected(
        "epd-text",
        &y,
        &[],
        &[
            "exp.yaml:",
            "deployment.strategy",
            "`epd` needs a vision encoder",
        ],
    );
    // An HF vision config's sizes, by key.
    let llava_cfg = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hf-configs/llava-1.5-7b-hf.json"
    ))
    .unwrap();
    for (key, from, to, says) in [
        (
            "patch_size",
            "\"patch_size\": 14",
            "\"patch_size\": 0",
            "vision_config: field `patch_size` = 0",
        ),
        (
            "num_hidden_layers",
            "\"num_hidden_layers\": 24",
            "\"num_hidden_layers\": 1",
            "vision_config: field `vision_feature_layer` = -2 selects no layer of a 1-layer encoder",
        ),
    ] {
        let cfg = edit(&llava_cfg, from, to);
        let y = edit(&llava(), "llava-1.5-7b", "m/config.json");
        assert_rejected(
            key,
            &y,
            &[("m/config.json", &cfg)],
            &["m/config.json", says],
        );
    }
}

#[test]
fn long_values_are_quoted_in_short() {
    // Under the 16 MiB cap on experiment files (a larger one is refused by size).
    let name = "x".repeat(8 << 20);
    let y = edit(&llava(), "model: llava-1.5-7b", &format!("model: {name}"));
    assert_rejected(
        "long-name",
        &y,
        &[],
        &["unknown model `xxxx", "bytes in all"],
    );
    // Parser errors quote the value (and the line) they stop at.
    let y = edit(
        &llava(),
        "strategy: colocated",
        &format!("strategy: {}", "x".repeat(100_000)),
    );
    assert_rejected(
        "long-variant",
        &y,
        &[],
        &["exp.yaml", "line 8 column 17", "unknown variant `xxxx"],
    );
    let binary: String = (0..200_000u32)
        .map(|i| char::from_u32(0x100 + i % 500).unwrap())
        .collect();
    let csv = format!("arrived_at,num_prefill_tokens,num_decode_tokens\n{binary},1,2\n");
    assert_rejected(
        "binary-trace",
        &trace_yaml("path: t.csv"),
        &[("t.csv", &csv)],
        &["t.csv row 2"],
    );
}

#[test]
fn special_files_are_refused_without_reading_them() {
    let dir = case_dir("special");
    let fifo = dir.join("fifo.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (code, err) = hetsim_in(&dir, &["run", "fifo.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("experiment fifo.yaml is not a regular file"),
        "{err}"
    );
    let (code, err) = hetsim_in(&dir, &["run", "/dev/zero"]);
    assert!(
        code == 2 && err.contains("/dev/zero is not a regular file"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    for (name, yaml, says) in [
        (
            "zero-model",
            edit(&llava(), "llava-1.5-7b", "/dev/zero"),
            "model config /dev/zero is not a regular file",
        ),
        (
            "zero-profile",
            "profile: /dev/zero\n".to_string() + &llava(),
            "profile /dev/zero is not a regular file",
        ),
        (
            "zero-trace",
            trace_yaml("path: /dev/zero, format: jsonl"),
            "trace /dev/zero is not a regular file",
        ),
    ] {
        assert_rejected(name, &yaml, &[], &[says]);
    }
}

#[test]
fn large_work_is_estimated_and_refused_unless_allowed() {
    let y = edit(&llava(), "requests: 10", "requests: 1000000000000")
        .replace("rate: 2}", "rate: 100000}");
    assert_rejected(
        "requests",
        &y,
        &[],
        &[
            "workload.requests over all scenarios",
            "1000000000000 requests, over the limit of 10000000",
            "--allow-large",
        ],
    );
    let axis: Vec<String> = (1..=1000).map(|r| r.to_string()).collect();
    let y = llava()
        + &format!(
            "matrix:\n  rate: [{}]\n  seed: [{}]\n",
            axis.join(", "),
            axis.join(", ")
        );
    assert_rejected(
        "matrix",
        &y,
        &[],
        &["scenarios × matrix", "1000000 scenarios"],
    );
    let nodes: String = (0..100)
        .map(|i| format!("        - {{name: n{i}, gpus: [{{gpu: A100-SXM-80GB, count: 1024}}]}}\n"))
        .collect();
    let y = edit(
        &llava(),
        "        - {name: box, gpus: [{gpu: A100-SXM-80GB, count: 2}]}\n",
        &nodes,
    );
    assert_rejected(
        "gpus",
        &y,
        &[],
        &["nodes[64].gpus[0].count", "at most 65536"],
    );
    let dir = case_dir("large");
    std::fs::write(dir.join("exp.yaml"), llava()).unwrap();
    let (code, err) = hetsim_in(
        &dir,
        &["cost", "exp.yaml", "--requests", &u64::MAX.to_string()],
    );
    assert!(code == 2 && err.contains("--requests × scenarios"), "{err}");
    let plan = "defaults:\n  model: llava-1.5-7b\n  workload:\n    requests: 100\n    arrival: {process: poisson, rate: 1}\nbudget: {capex_usd: 1000000}\nsearch:\n  gpus: [H100-SXM, A100-SXM-80GB, L40S, RTX-4090, A100-PCIe-80GB, H200-SXM]\n  max_gpus: 16\n";
    std::fs::write(dir.join("plan.yaml"), plan).unwrap();
    let (code, err) = hetsim_in(&dir, &["plan", "plan.yaml"]);
    assert!(
        code == 2
            && err.contains("plan.yaml: search")
            && err.contains("candidates, over the limit of 50000"),
        "{err}"
    );
    for args in [
        ["--layers", "100000000"],
        ["--layers", "18446744073709551615"],
        ["--visual-tokens", "18446744073709551615"],
        ["--depths", "18446744073709551615"],
    ] {
        let (code, err) = hetsim_in(&dir, &["transfer", "llava-1.5-7b", args[0], args[1]]);
        assert!(
            code == 2 && err.contains(&format!("`{}` = ", args[0])),
            "{args:?}: {err}"
        );
    }
    let links = vec!["pcie4"; 10_000].join(",");
    let (code, err) = hetsim_in(&dir, &["transfer", "llava-1.5-7b", "--links", &links]);
    assert!(code == 2 && err.contains("table cells"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The ranges refuse nothing the repository ships: every experiment, plan and profile loads.
#[test]
fn every_shipped_file_passes_the_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = |dir: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        v.sort();
        v
    };
    for p in files("experiments") {
        let r = hetsim_sim::experiment::load_experiment(&p, None);
        assert!(r.is_ok(), "{}: {}", p.display(), r.err().unwrap());
    }
    for p in files("experiments/plans") {
        let r = hetsim_sim::experiment::load_plan(&p, None);
        assert!(r.is_ok(), "{}: {}", p.display(), r.err().unwrap());
    }
    for p in files("profiles") {
        let r = hetsim_sim::profile::HardwareProfile::load(&p);
        assert!(r.is_ok(), "{}: {}", p.display(), r.err().unwrap());
    }
}

#[test]
fn plan_reference_counts_are_range_checked() {
    let dir = case_dir("plan-refs");
    let plan = "defaults:\n  model: llava-1.5-7b\n  workload:\n    requests: 100\n    arrival: {process: poisson, rate: 1}\nbudget: {capex_usd: 1000000}\nsearch:\n  gpus: [H100-SXM]\n  max_gpus: 2\nreferences:\n  - name: huge\n    strategy: stage\n    instances: [{role: prefill, gpu: H100-SXM, count: 4294967295}, {role: decode, gpu: H100-SXM, count: 4294967295}]\n";
    std::fs::write(dir.join("plan.yaml"), plan).unwrap();
    let (code, err) = hetsim_in(&dir, &["plan", "plan.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("plan.yaml: references `huge`: `instances[0].count` = 4294967295"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_against_file_is_refused_before_the_gpu_bench() {
    let dir = case_dir("against");
    std::fs::write(dir.join("torch.json"), "{\"model\": 7}").unwrap();
    for (file, says) in [
        ("missing.json", "--against missing.json: cannot read it"),
        ("torch.json", "--against torch.json: not a torch.json"),
    ] {
        let (code, err) = hetsim_in(
            &dir,
            &[
                "exec",
                "bench",
                "--model",
                "qwen2.5-vl-7b",
                "--against",
                file,
            ],
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `--split` profile holds three phase tables: `hetsim fit` names them and asks which, and
/// refuses a GPU it has no table for, naming what it holds.
#[test]
fn fit_on_a_split_profile_asks_which_table() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let split = repo.join("profiles/h100-2026-12-07-llava-1.5-7b-split40.yaml");
    let split = split.to_str().unwrap();
    let (code, err) = hetsim_in(repo, &["fit", split]);
    assert_eq!(code, 2, "{err}");
    for s in [
        "3 phase tables",
        "H100-SXM@40sm",
        "H100-SXM@92sm",
        "by its GPU",
    ] {
        assert!(err.contains(s), "`{s}` not in: {err}");
    }
    let (code, err) = hetsim_in(repo, &["fit", split, "--gpu", "H200-SXM"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no phase table for GPU `H200-SXM`") && err.contains("H100-SXM@40sm"),
        "{err}"
    );
    let (code, err) = hetsim_in(repo, &["fit", split, "--gpu", "H100-SXM@40sm"]);
    assert_eq!(code, 0, "{err}");
}
