//! Bad input: a clear message naming the place, exit code 2, no panic, and no output left behind.
//! A failure to write results is not bad input: exit code 1, naming the path.

use std::path::PathBuf;
use std::process::Command;

/// Writes `yaml` (and any extra files) to a fresh directory, runs `hetsim run` with `--out`, and
/// returns (exit code, stderr, whether the output directory holds any file).
fn run_yaml(name: &str, yaml: &str, extra: &[(&str, &str)]) -> (i32, String, bool) {
    let dir = std::env::temp_dir().join(format!("hetsim-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, text) in extra {
        std::fs::write(dir.join(f), text).unwrap();
    }
    let exp = dir.join("exp.yaml");
    std::fs::write(&exp, yaml).unwrap();
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let wrote = out.exists() && std::fs::read_dir(&out).unwrap().next().is_some();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    (o.status.code().unwrap_or(-1), stderr, wrote)
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
        &["arrival.rate", "positive"],
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
        &["cannot open trace", "nope.jsonl"],
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
